"""MAE-Lite: pre-softmax attention, the adapter, the frozen teacher, export, engine resume."""

import pytest
import torch
from method_helpers import RESUME_CFG, Interrupt, without_timing
from timm.models.vision_transformer import VisionTransformer

from cgdmae.models import create_mae, encoder_state_dict
from cgdmae.pretrain.methods import with_defaults
from cgdmae.pretrain.methods.mae_lite import (
    attention_logits,
    encode_with_attention,
    load_teacher_encoder,
)
from cgdmae.training.checkpoint import load_checkpoint
from cgdmae.training.engine import Preempted, TrainConfig, _method_state, build_optimizer, train

SIZE, PATCH = (32, 16), 8


def student(seed: int = 0, mask_strategy: str = "random"):
    """ViT-Ti-shaped: narrow, many heads, a 1-block decoder."""
    torch.manual_seed(seed)
    return create_mae(
        "tiny", img_size=SIZE, patch_size=PATCH, embed_dim=24, depth=2, num_heads=6,
        decoder_dim=12, decoder_depth=1, decoder_heads=3, mask_strategy=mask_strategy,
    )  # fmt: skip


def teacher_mae(seed: int = 100):
    """Wider and deeper, with another head count: the adapter maps 6 heads to 4."""
    torch.manual_seed(seed)
    return create_mae(
        "tiny", img_size=SIZE, patch_size=PATCH, embed_dim=32, depth=3, num_heads=4,
        decoder_dim=16, decoder_depth=1, decoder_heads=2,
    )  # fmt: skip


def make_method(seed: int = 0, **kw):
    teacher = load_teacher_encoder(teacher_mae(), teacher_mae().state_dict())
    return with_defaults("mae_lite", student(seed), teacher, **kw)


def images(n: int = 4, seed: int = 0):
    return torch.randn(n, 3, *SIZE, generator=torch.Generator().manual_seed(seed))


def test_attention_logits_are_what_the_fused_attention_softmaxes():
    block = student().blocks[0]
    x = torch.randn(2, 5, 24)
    logits = attention_logits(block, x)
    assert logits.shape == (2, 6, 5, 5)
    attn = block.attn
    qkv = attn.qkv(block.norm1(x)).reshape(2, 5, 3, 6, 4).permute(2, 0, 3, 1, 4)
    by_hand = (logits.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(2, 5, 24)
    torch.testing.assert_close(attn.proj(by_hand), attn(block.norm1(x)))


def test_adapter_shape_and_distillation_terms():
    method = make_method()
    assert method.adapter.weight.shape == (4, 6, 1, 1) and method.adapter.bias is None
    noise = method.masking_noise(images())
    _, mask, _, attn = encode_with_attention(method.model, images(), 0.75, noise)
    length = 1 + int(SIZE[0] * SIZE[1] / PATCH**2 * 0.25)
    assert attn.shape == (4, 6, length, length)
    assert method.adapter(attn).shape == (4, 4, length, length)
    _, teacher_mask, _, _ = encode_with_attention(method.teacher, images(), 0.75, noise)
    assert torch.equal(mask, teacher_mask)  # the teacher sees the student's visible patches
    terms = method({"image": images()})
    assert set(terms) == {"loss", "mae", "distill"}
    assert terms["loss"].item() == pytest.approx(terms["mae"].item() + terms["distill"].item())


@pytest.mark.parametrize("strategy", ["random", "block"])
def test_distillation_is_zero_when_the_teacher_is_the_student(strategy):
    model = student(mask_strategy=strategy)
    teacher = load_teacher_encoder(student(), model.state_dict())
    method = with_defaults("mae_lite", model, teacher)
    with torch.no_grad():
        method.adapter.weight.copy_(torch.eye(6).view(6, 6, 1, 1))
    terms = method({"image": images()})
    assert terms["distill"].item() == 0.0
    assert terms["loss"].item() == terms["mae"].item()


def test_teacher_is_frozen_and_left_out_of_checkpoint_and_optimizer():
    method = make_method()
    method.train()
    assert method.training and not method.teacher.training
    method({"image": images()})["loss"].backward()
    assert all(not p.requires_grad and p.grad is None for p in method.teacher.parameters())
    assert method.adapter.weight.grad is not None
    assert set(_method_state(method)) == {"adapter.weight"}
    optimizer = build_optimizer(
        method, TrainConfig(epochs=1, batch_size=2), 1e-3, torch.device("cpu")
    )
    optimised = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in optimised for p in method.teacher.parameters())
    assert id(method.adapter.weight) in optimised


def test_teacher_loading_accepts_encoder_only_and_rejects_the_wrong_size():
    full = teacher_mae()
    from_encoder = load_teacher_encoder(teacher_mae(seed=5), encoder_state_dict(full))
    assert not any(k.startswith("decoder_") for k in from_encoder.state_dict())
    assert all(torch.equal(v, full.state_dict()[k]) for k, v in from_encoder.state_dict().items())
    with pytest.raises(ValueError, match="missing"):
        state = encoder_state_dict(full)
        del state["blocks.2.norm1.weight"]
        load_teacher_encoder(teacher_mae(), state)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_teacher_encoder(student(), encoder_state_dict(full))
    other_grid = create_mae(
        "tiny", img_size=(16, 16), patch_size=PATCH, embed_dim=32, depth=3, num_heads=4,
        decoder_dim=16, decoder_depth=1, decoder_heads=2,
    )  # fmt: skip
    with pytest.raises(ValueError, match="patch grid"):
        with_defaults(
            "mae_lite", student(), load_teacher_encoder(other_grid, other_grid.state_dict())
        )


def test_without_a_teacher_it_is_plain_mae():
    method, reference = with_defaults("mae_lite", student(), mask_ratio=0.75), student()
    assert method.adapter is None and _method_state(method) == {}
    torch.manual_seed(3)
    terms = method({"image": images()})
    torch.manual_seed(3)
    loss, _, _ = reference(images(), 0.75)
    assert set(terms) == {"loss", "mae"} and torch.equal(terms["loss"], loss)


class RandomImages(torch.utils.data.Dataset):
    """Fixed random images plus noise that depends on (epoch, index), like real augmentation."""

    def __init__(self, n: int = 8):
        self.data, self.epoch = images(n, seed=9), 0

    def __len__(self):
        return len(self.data)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, index):
        noise = torch.randn(
            3, *SIZE, generator=torch.Generator().manual_seed(100 * self.epoch + index)
        )
        return {"image": self.data[index] + 0.1 * noise, "index": index}


def test_engine_checkpoint_and_resume_are_bit_exact(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(make_method(), RandomImages(), TrainConfig(**RESUME_CFG), straight)
    with pytest.raises(Preempted):
        train(
            make_method(), Interrupt(RandomImages(), at=(1, 3)), TrainConfig(**RESUME_CFG), resumed
        )
    assert load_checkpoint(resumed / "checkpoint.pth")["step"] == 6
    train(make_method(seed=4), RandomImages(), TrainConfig(**RESUME_CFG), resumed)

    a, b = load_checkpoint(straight / "checkpoint.pth"), load_checkpoint(resumed / "checkpoint.pth")
    assert a["step"] == b["step"] == 8 and set(a["method"]) == {"adapter.weight"}
    for part in ("model", "method"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert without_timing(a["log_rows"]) == without_timing(b["log_rows"])
    assert "distill" in a["log_rows"][0]
    ea = torch.load(straight / "encoder.pth", weights_only=True)["model"]
    eb = torch.load(resumed / "encoder.pth", weights_only=True)["model"]
    assert ea.keys() == eb.keys() and all(torch.equal(ea[k], eb[k]) for k in ea)
    assert not any(k.startswith("teacher") for k in ea)
    vit = VisionTransformer(
        img_size=SIZE, patch_size=PATCH, embed_dim=24, depth=2, num_heads=6, num_classes=0
    )
    vit.load_state_dict(ea, strict=True)
