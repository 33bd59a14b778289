"""PersonMAE: cross-region views, shifted positions, the EMA target, losses, engine resume."""

import numpy as np
import pytest
import torch
from method_helpers import RESUME_CFG, Interrupt, without_timing, write_noise_images
from timm.models.vision_transformer import VisionTransformer

from cgdmae.models import create_mae
from cgdmae.models.pos_embed import _sincos_1d
from cgdmae.pretrain.methods import with_defaults
from cgdmae.pretrain.methods.encoders import ema_momentum, encode_tokens
from cgdmae.pretrain.methods.person_mae import shifted_pos_embed
from cgdmae.pretrain.views import CrossRegionDataset, cross_regions, draw_shift
from cgdmae.training.checkpoint import load_checkpoint
from cgdmae.training.engine import Preempted, TrainConfig, _method_state, build_optimizer, train

SIZE, PATCH = (32, 16), 8
GRID = (SIZE[0] // PATCH, SIZE[1] // PATCH)


def tiny_mae(seed: int = 0):
    torch.manual_seed(seed)
    return create_mae(
        "tiny", img_size=SIZE, patch_size=PATCH, embed_dim=32, depth=2, num_heads=2,
        decoder_dim=16, decoder_depth=2, decoder_heads=2, mask_strategy="block",
    )  # fmt: skip


def make_method(seed: int = 0, **kw):
    return with_defaults("person_mae", tiny_mae(seed), **kw)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return write_noise_images(tmp_path_factory.mktemp("pool"), shape=(48, 30))


def batch(n: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(n, 3, *SIZE, generator=g),
        "target": torch.randn(n, 3, *SIZE, generator=g),
        "shift": torch.tensor([[0.0, 0.0], [3.0, 1.0], [8.0, 4.0], [13.0, 6.0]])[:n],
    }


def test_forward_terms_and_feature_decoder_shapes():
    method = make_method()
    terms = method(batch())
    assert set(terms) == {"loss", "pixel", "feature"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in terms.values())
    assert terms["loss"].item() == pytest.approx(terms["pixel"].item() + terms["feature"].item())
    model = method.model
    latent, _, ids_restore = model.forward_encoder(batch()["image"], 0.75)
    ids_keep = torch.argsort(ids_restore, 1)[:, : latent.shape[1] - 1]
    pos = shifted_pos_embed(16, GRID, batch()["shift"] / PATCH)
    assert pos.shape == (4, GRID[0] * GRID[1], 16)
    pred = method.feature_decoder(latent, ids_keep, model.decoder_pos_embed, pos)
    assert pred.shape == (4, GRID[0] * GRID[1], 32)  # RegionB's patches, encoder width
    assert len(method.feature_decoder.blocks) == 2


def test_zero_shift_is_inner_prediction(paths):
    dataset = CrossRegionDataset(paths, img_size=SIZE, max_shift=0)
    for k in range(3):
        item = dataset[k]
        assert torch.equal(item["image"], item["target"])
        assert torch.equal(item["shift"], torch.zeros(2))
    model = tiny_mae()
    zero = shifted_pos_embed(16, GRID, torch.zeros(2, 2))
    torch.testing.assert_close(zero, model.decoder_pos_embed[:, 1:].expand(2, -1, -1))


def coordinate_image(height: int, width: int) -> torch.Tensor:
    """Channel 0 holds each pixel's row, channel 1 its column."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([rows, cols]).float()


@pytest.mark.parametrize("corner", [(5, 3), (8, 4), (0, 7)])
def test_region_b_lies_where_the_shifted_positions_say(corner):
    resized = coordinate_image(SIZE[0] + 9, SIZE[1] + 8)
    region_a, region_b = cross_regions(resized, SIZE, corner)
    assert torch.equal(region_a, resized[:, : SIZE[0], : SIZE[1]])
    table = shifted_pos_embed(16, GRID, torch.tensor([corner], dtype=torch.float32) / PATCH)[0]
    for i in range(GRID[0]):
        for j in range(GRID[1]):
            # the top-left pixel of RegionB's patch (i, j), in RegionA's pixel frame
            row, col = region_b[:, i * PATCH, j * PATCH].tolist()
            position = np.array([row, col]) / PATCH  # fractional patch coordinates
            expected = np.concatenate(
                [_sincos_1d(8, np.array([position[1]])), _sincos_1d(8, np.array([position[0]]))],
                axis=1,
            )[0]
            torch.testing.assert_close(table[i * GRID[1] + j], torch.from_numpy(expected).float())
    # a whole-patch shift: RegionB's patch (i, j) is RegionA's patch (i + 1, j + 1), same position
    shift = shifted_pos_embed(16, GRID, torch.tensor([[1.0, 1.0]]))[0].view(*GRID, 16)
    base = tiny_mae().decoder_pos_embed[0, 1:].view(*GRID, 16)
    torch.testing.assert_close(shift[:-1, :-1], base[1:, 1:])


def test_dataset_regions_overlap_exactly_and_shifts_stay_in_range(paths):
    dataset = CrossRegionDataset(paths, img_size=SIZE, max_shift=12, seed=3)
    rng = np.random.default_rng(0)
    for _ in range(200):
        (height, width), (top, left) = draw_shift(rng, 12, SIZE)
        p = height - SIZE[0]
        assert 0 <= p <= 12 and width - SIZE[1] == round(p * SIZE[1] / SIZE[0])
        assert 0 <= top <= p and 0 <= left <= width - SIZE[1]
    shifted = 0
    for k in range(len(paths)):
        item = dataset[k]
        top, left = (int(v) for v in item["shift"])
        a, b = item["image"], item["target"]
        assert a.shape == b.shape == (3, *SIZE)
        assert torch.equal(b[:, : SIZE[0] - top, : SIZE[1] - left], a[:, top:, left:])
        shifted += (top, left) != (0, 0)
    assert shifted > 0
    again = CrossRegionDataset(paths, img_size=SIZE, max_shift=12, seed=3)[2]
    assert all(torch.equal(again[k], dataset[2][k]) for k in ("image", "target", "shift"))


def test_ema_momentum_schedule_endpoints_and_update():
    method = make_method(ema_momentum=(0.999, 0.9999), ema_ramp=0.2)
    assert method.momentum_at(0, 100) == pytest.approx(0.999)
    assert method.momentum_at(10, 100) == pytest.approx(0.99945)
    assert method.momentum_at(20, 100) == pytest.approx(0.9999)
    assert method.momentum_at(100, 100) == pytest.approx(0.9999)
    assert ema_momentum(0.0, 0.996, 1.0, shape="cosine") == pytest.approx(0.996)
    assert ema_momentum(0.5, 0.996, 1.0, shape="cosine") == pytest.approx(0.998)
    assert ema_momentum(1.0, 0.996, 1.0, shape="cosine") == 1.0

    target = method.target_encoder
    assert not any(k.startswith(("decoder_", "mask_token")) for k in target.state_dict())
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with torch.no_grad():
        for p in method.model.parameters():
            if p.requires_grad:
                p.add_(1.0)
    method.on_step_end(0, 100)  # momentum 0.999: the target moves by 0.001
    moved = target.blocks[0].attn.qkv.weight - before["blocks.0.attn.qkv.weight"]
    torch.testing.assert_close(moved, torch.full_like(moved, 0.001), rtol=0, atol=1e-5)
    assert torch.equal(target.pos_embed, method.model.pos_embed)  # fixed table copied, not mixed


def test_target_encoder_is_checkpointed_but_never_optimised():
    method = make_method()
    method(batch())["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in method.target_encoder.parameters())
    assert method.feature_decoder.pred.weight.grad is not None
    assert method.model.mask_token.grad is not None  # the pixel decoder's query token
    state = _method_state(method)
    assert "target_encoder.blocks.0.attn.qkv.weight" in state
    assert "feature_decoder.query_token" in state
    optimizer = build_optimizer(
        method, TrainConfig(epochs=1, batch_size=2), 1e-3, torch.device("cpu")
    )
    optimised = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in optimised for p in method.target_encoder.parameters())


def test_loss_decreases_on_a_fixed_batch():
    method = make_method()
    optimizer = torch.optim.AdamW(
        [p for p in method.parameters() if p.requires_grad], lr=2e-3, betas=(0.9, 0.95)
    )
    fixed = batch()
    losses = []
    for step in range(25):
        torch.manual_seed(0)  # the same mask every step
        loss = method(fixed)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.on_step_end(step + 1, 25)
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0]


def test_engine_checkpoint_and_resume_are_bit_exact(paths, tmp_path):
    def dataset():
        return CrossRegionDataset(paths, img_size=SIZE, max_shift=8, seed=1)

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(make_method(), dataset(), TrainConfig(**RESUME_CFG), straight)
    with pytest.raises(Preempted):
        train(make_method(), Interrupt(dataset(), at=(1, 3)), TrainConfig(**RESUME_CFG), resumed)
    assert load_checkpoint(resumed / "checkpoint.pth")["step"] == 6
    train(make_method(seed=7), dataset(), TrainConfig(**RESUME_CFG), resumed)

    a, b = load_checkpoint(straight / "checkpoint.pth"), load_checkpoint(resumed / "checkpoint.pth")
    assert a["step"] == b["step"] == 8
    for part in ("model", "method"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert any(k.startswith("target_encoder.") for k in a["method"])
    assert without_timing(a["log_rows"]) == without_timing(b["log_rows"])
    ea = torch.load(straight / "encoder.pth", weights_only=True)["model"]
    eb = torch.load(resumed / "encoder.pth", weights_only=True)["model"]
    assert ea.keys() == eb.keys() and all(torch.equal(ea[k], eb[k]) for k in ea)
    # the exported (online) encoder loads into timm and computes what our encoder pass does
    vit = VisionTransformer(
        img_size=SIZE, patch_size=PATCH, embed_dim=32, depth=2, num_heads=2, num_classes=0
    )
    vit.load_state_dict(ea, strict=True)
    method = make_method()
    method.model.load_state_dict(a["model"])
    imgs = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(vit.forward_features(imgs), encode_tokens(method.model, imgs))
