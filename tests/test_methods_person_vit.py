"""PersonViT: multi-crop views, DINO and MIM losses, centring, the EMA teacher, export, resume."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from method_helpers import RESUME_CFG, Interrupt, without_timing, write_noise_images
from timm.layers import DropPath
from timm.models.vision_transformer import VisionTransformer

from cgdmae.models import create_mae
from cgdmae.pretrain.data import sample_crop
from cgdmae.pretrain.methods import with_defaults
from cgdmae.pretrain.methods.encoders import encode_tokens
from cgdmae.pretrain.methods.person_vit import dino_loss, mim_loss, update_center
from cgdmae.pretrain.views import MultiCropDataset
from cgdmae.training.checkpoint import load_checkpoint
from cgdmae.training.engine import Preempted, TrainConfig, _method_state, train

SIZE, LOCAL, PATCH = (32, 16), (16, 8), 8
GRID = (SIZE[0] // PATCH, SIZE[1] // PATCH)
HEAD = dict(out_dim=64, hidden_dim=32, bottleneck_dim=16)


def make_method(seed: int = 0, **kw):
    torch.manual_seed(seed)
    model = create_mae(
        "tiny", img_size=SIZE, patch_size=PATCH, embed_dim=32, depth=2, num_heads=2,
        decoder_dim=16, decoder_depth=1, decoder_heads=2,
    )  # fmt: skip
    return with_defaults("person_vit", model, **{**HEAD, "drop_path": 0.0, **kw})


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return write_noise_images(tmp_path_factory.mktemp("pool"), shape=(60, 30))


def dataset(paths, **kw):
    kw = {"local_size": LOCAL, "local_views": 3, "mask_prob": 0.7, **kw}
    return MultiCropDataset(paths, img_size=SIZE, patch_size=PATCH, **kw)


def random_batch(n: int = 4, local_views: int = 3):
    g = torch.Generator().manual_seed(0)
    return {
        "global_views": torch.randn(n, 2, 3, *SIZE, generator=g),
        "local_views": torch.randn(n, local_views, 3, *LOCAL, generator=g),
        "global_masks": torch.rand(n, 2, *GRID, generator=g) < 0.4,
    }


def test_crop_scales_and_aspect_ratios_stay_in_range():
    rng = np.random.default_rng(0)
    for scale in ((0.4, 1.0), (0.1, 0.8)):
        for _ in range(300):
            crop = sample_crop(rng, 200, 400, scale, ratio=(3 / 8, 2 / 3))
            area = crop.height * crop.width / (200 * 400)
            assert scale[0] - 0.01 <= area <= scale[1] + 0.01
            assert 3 / 8 - 0.02 <= crop.width / crop.height <= 2 / 3 + 0.02
            assert crop.top + crop.height <= 400 and crop.left + crop.width <= 200
    # a wide image cannot hold a tall crop of that area: the fallback clips to the ratio range
    crop = sample_crop(rng, 400, 100, (0.9, 1.0), ratio=(3 / 8, 2 / 3))
    assert (crop.height, crop.width) == (100, 67) and crop.left == (400 - 67) // 2


def test_multi_crop_views_masks_and_determinism(paths):
    data = dataset(paths, seed=2)
    item = data[1]
    assert item["global_views"].shape == (2, 3, *SIZE)
    assert item["local_views"].shape == (3, 3, *LOCAL)
    assert item["global_masks"].shape == (2, *GRID) and item["global_masks"].dtype == torch.bool
    again = dataset(paths, seed=2)[1]
    assert all(torch.equal(again[k], item[k]) for k in ("global_views", "local_views"))
    data.set_epoch(1)
    assert not torch.equal(data[1]["global_views"], item["global_views"])
    total = GRID[0] * GRID[1]
    counts = {int(m.sum()) for k in range(len(paths)) for m in data[k]["global_masks"]}
    allowed = {0} | set(range(round(0.1 * total), round(0.5 * total) + 1))
    assert counts <= allowed and counts - {0}
    none = dataset(paths, local_views=0, photometric=False)[0]
    assert none["local_views"].shape == (0, 3, *LOCAL)
    with pytest.raises(ValueError, match=r"local size \(12, 8\) is not divisible by the patch 8"):
        dataset(paths, local_size=(12, 8))


def test_center_update_by_hand():
    center = torch.tensor([[1.0, 0.0, -1.0]])
    logits = torch.tensor([[3.0, 0.0, 1.0], [1.0, 2.0, 1.0]])
    update_center(center, logits, momentum=0.9)
    torch.testing.assert_close(center, torch.tensor([[0.9 + 0.2, 0.1, -0.9 + 0.1]]))
    patch_center = torch.zeros(1, 1, 2)
    update_center(patch_center, torch.tensor([[[2.0, 4.0], [0.0, 0.0]]]), momentum=0.5)
    torch.testing.assert_close(patch_center, torch.tensor([[[0.5, 1.0]]]))


def test_method_centres_move_towards_the_teacher_outputs():
    method = make_method()
    method(random_batch())
    assert method.center.abs().sum() > 0 and method.center_patch.abs().sum() > 0


def test_dino_loss_pairs_every_teacher_view_with_the_other_student_views():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(3, 2, 5, generator=g)
    teacher = F.softmax(torch.randn(2, 2, 5, generator=g), dim=-1)
    expected = []
    for q in range(2):
        for v in range(3):
            if v != q:
                ce = -(teacher[q] * F.log_softmax(student[v] / 0.1, -1)).sum(-1).mean()
                expected.append(ce)
    torch.testing.assert_close(dino_loss(student, teacher, 0.1), torch.stack(expected).mean())


def test_mim_loss_only_sees_masked_patches():
    g = torch.Generator().manual_seed(2)
    student = torch.randn(2, 3, 4, 6, generator=g)
    teacher = F.softmax(torch.randn(2, 3, 4, 6, generator=g), dim=-1)
    mask = torch.rand(2, 3, 4, generator=g) < 0.5
    mask[1, 2] = False  # an image without a mask adds zero
    loss = mim_loss(student, teacher, mask, 0.1)
    changed = student.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 6, generator=g) * 10
    assert torch.equal(mim_loss(changed, teacher, mask, 0.1), loss)
    changed[mask] += 1.0 * torch.arange(6.0)
    assert not torch.allclose(mim_loss(changed, teacher, mask, 0.1), loss)
    ce = -(teacher * F.log_softmax(student / 0.1, -1)).sum(-1)
    per_image = (ce * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    torch.testing.assert_close(loss, per_image.mean())


def test_teacher_gets_no_gradient_and_the_unused_decoder_is_frozen():
    method = make_method()
    terms = method(random_batch())
    assert set(terms) == {"loss", "dino", "mim"} and all(torch.isfinite(v) for v in terms.values())
    terms["loss"].backward()
    assert all(not p.requires_grad and p.grad is None for p in method.teacher.parameters())
    assert all(not p.requires_grad for p in method.model.decoder_blocks.parameters())
    assert method.mim_token.grad is not None and method.mim_token.grad.abs().sum() > 0
    assert method.head.last_layer.weight.grad.abs().sum() > 0
    assert method.model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    state = _method_state(method)  # the teacher and the centres are checkpointed method state
    assert {"center", "center_patch", "progress", "teacher.head.last_layer.weight"} <= set(state)


def test_temperature_warmup_momentum_and_last_layer_freeze():
    method = make_method(teacher_temp=(0.04, 0.07), temp_warmup=0.5, freeze_last_layer=0.25)
    assert method.temperature(method.teacher_temp).item() == pytest.approx(0.04)
    method.on_step_end(1, 4)
    assert method.temperature(method.teacher_temp).item() == pytest.approx(0.055)
    method.on_step_end(3, 4)
    assert method.temperature(method.teacher_temp).item() == pytest.approx(0.07)

    frozen = make_method(freeze_last_layer=0.25)
    frozen(random_batch())["loss"].backward()
    assert torch.count_nonzero(frozen.head.last_layer.weight.grad) == 0
    assert frozen.head.mlp[0].weight.grad.abs().sum() > 0

    method = make_method(ema_momentum=0.9)
    with torch.no_grad():
        for p in method.head.parameters():
            p.add_(1.0)
    method.on_step_end(0, 10)  # cosine schedule at 0: momentum 0.9
    moved = method.teacher["head"].mlp[0].weight - (method.head.mlp[0].weight - 1.0)
    torch.testing.assert_close(moved, torch.full_like(moved, 0.1), rtol=0, atol=1e-6)
    method.on_step_end(10, 10)  # momentum 1: the teacher stays
    before = method.teacher["head"].mlp[0].weight.clone()
    method.on_step_end(10, 10)
    assert torch.equal(before, method.teacher["head"].mlp[0].weight)
    assert math.isclose(float(method.progress), 1.0)


def test_drop_path_is_in_the_student_only_and_rises_over_the_blocks():
    method = make_method(drop_path=0.3)
    student = method.model.blocks
    rates = [[m.drop_prob for m in b.modules() if isinstance(m, DropPath)] for b in student]
    assert rates == [[], pytest.approx([0.3, 0.3])]  # 2 blocks: linspace(0, 0.3, 2)
    teacher = method.teacher["encoder"]
    assert not any(isinstance(m, DropPath) for m in teacher.modules())
    imgs = torch.randn(2, 3, *SIZE)
    method.train()
    with torch.no_grad():  # in training mode the teacher is deterministic, the student is not
        assert torch.equal(encode_tokens(teacher, imgs), encode_tokens(teacher, imgs))
        assert not torch.equal(encode_tokens(method.model, imgs), encode_tokens(method.model, imgs))
    assert not any(isinstance(m, DropPath) for m in make_method().modules())  # default: none


def test_export_is_the_teacher_backbone_and_loads_into_timm():
    method = make_method()
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    method(random_batch())["loss"].backward()
    optimizer.step()
    method.on_step_end(1, 10)
    exported = method.encoder_state_dict()
    teacher = method.teacher["encoder"].state_dict()
    assert exported.keys() == teacher.keys()
    assert all(torch.equal(exported[k], teacher[k]) for k in exported)
    assert not torch.equal(
        exported["blocks.0.attn.qkv.weight"], method.model.blocks[0].attn.qkv.weight
    )
    vit = VisionTransformer(
        img_size=SIZE, patch_size=PATCH, embed_dim=32, depth=2, num_heads=2, num_classes=0
    )
    vit.load_state_dict(exported, strict=True)
    imgs = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        expected = encode_tokens(method.teacher["encoder"], imgs)
        torch.testing.assert_close(vit.forward_features(imgs), expected)


def test_engine_checkpoint_and_resume_are_bit_exact(paths, tmp_path):
    kw = dict(freeze_last_layer=0.2, temp_warmup=0.5, drop_path=0.2)  # drop-path draws on resume
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(make_method(**kw), dataset(paths, seed=1), TrainConfig(**RESUME_CFG), straight)
    with pytest.raises(Preempted):
        train(
            make_method(**kw),
            Interrupt(dataset(paths, seed=1), at=(1, 3)),
            TrainConfig(**RESUME_CFG),
            resumed,
        )
    assert load_checkpoint(resumed / "checkpoint.pth")["step"] == 6
    train(make_method(seed=5, **kw), dataset(paths, seed=1), TrainConfig(**RESUME_CFG), resumed)

    a, b = load_checkpoint(straight / "checkpoint.pth"), load_checkpoint(resumed / "checkpoint.pth")
    assert a["step"] == b["step"] == 8
    for part in ("model", "method"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert without_timing(a["log_rows"]) == without_timing(b["log_rows"])
    ea = torch.load(straight / "encoder.pth", weights_only=True)["model"]
    eb = torch.load(resumed / "encoder.pth", weights_only=True)["model"]
    assert ea.keys() == eb.keys() and all(torch.equal(ea[k], eb[k]) for k in ea)
    teacher = {
        k[len("teacher.encoder.") :]: v
        for k, v in a["method"].items()
        if k.startswith("teacher.encoder.")
    }
    assert all(torch.equal(ea[k], teacher[k]) for k in ea)
