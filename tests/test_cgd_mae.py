"""CGD-MAE's distillation: losses equal hand-computed references, gradients go where they should."""

import math

import pytest
import torch
import torch.nn.functional as F

from cgdmae.models import create_mae
from cgdmae.pretrain.data import denormalize
from cgdmae.pretrain.methods import with_defaults
from cgdmae.pretrain.methods.cgd_mae import similarity_loss, text_kl_loss
from cgdmae.training.engine import _method_state


def tiny_mae():
    torch.manual_seed(0)
    return create_mae(
        "tiny",
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=1,
        num_heads=2,
        decoder_dim=16,
        decoder_depth=1,
        decoder_heads=2,
    )


class LinearTeacher(torch.nn.Module):
    """A stand-in CLIP image encoder: mean colour → 8-d unit vector."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 8)

    def encode_image(self, images01):
        return F.normalize(self.proj(images01.mean((2, 3))), dim=-1)


def test_similarity_loss_by_hand():
    s = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    t = torch.tensor([[0.0, 2.0], [0.0, 1.0]])
    # unit vectors: s = (0.6, 0.8), (1, 0); t = (0, 1), (0, 1)
    expected = ((0.6**2 + 0.2**2) + (1 + 1)) / 2
    assert similarity_loss(s, t).item() == pytest.approx(expected)


def softmax(logits: list[float]) -> list[float]:
    exps = [math.exp(v) for v in logits]
    return [e / sum(exps) for e in exps]


def test_kl_loss_by_hand_with_the_teacher_as_target():
    text = torch.eye(3)
    s, t = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.6, 0.8, 0.0]])
    tau = 2.0
    p_s = softmax([tau * 1.0, 0.0, 0.0])  # ŝ = (1, 0, 0) after normalising
    p_t = softmax([tau * 0.6, tau * 0.8, 0.0])
    teacher_as_target = sum(pt * math.log(pt / ps) for ps, pt in zip(p_s, p_t, strict=True))
    student_as_target = sum(ps * math.log(ps / pt) for ps, pt in zip(p_s, p_t, strict=True))
    assert abs(teacher_as_target - student_as_target) > 0.05  # the example tells them apart
    assert text_kl_loss(s, t, text, tau).item() == pytest.approx(teacher_as_target, rel=1e-6)
    assert text_kl_loss(t, t, text, tau).item() == pytest.approx(0.0, abs=1e-7)


def test_losses_average_over_the_batch():
    gen = torch.Generator().manual_seed(0)
    s, t, text = (
        torch.randn(5, 8, generator=gen),
        torch.randn(5, 8, generator=gen),
        torch.randn(7, 8),
    )
    text = F.normalize(text, dim=-1)
    rows_kl = [text_kl_loss(s[i : i + 1], t[i : i + 1], text).item() for i in range(5)]
    rows_sim = [similarity_loss(s[i : i + 1], t[i : i + 1]).item() for i in range(5)]
    assert text_kl_loss(s, t, text).item() == pytest.approx(sum(rows_kl) / 5, rel=1e-5)
    assert similarity_loss(s, t).item() == pytest.approx(sum(rows_sim) / 5, rel=1e-6)


def make(lam=1.0, feature="decoder_pool", teacher=None):
    text = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    return with_defaults(
        "cgd_mae", tiny_mae(), text, teacher, lam=lam, w_sim=2.0, w_kl=0.1, student_feature=feature
    )


def test_total_loss_and_lambda_zero_is_mae():
    batch = {
        "image": torch.randn(4, 3, 16, 16),
        "teacher_embed": F.normalize(torch.randn(4, 8), dim=-1),
    }
    method = make(lam=0.5)
    torch.manual_seed(5)
    out = method(batch)
    assert out["loss"].item() == pytest.approx(
        (out["mae"] + 0.5 * (2.0 * out["sim"] + 0.1 * out["kl"])).item(), rel=1e-6
    )
    zero_method, mae_method = make(lam=0.0), with_defaults("mae", tiny_mae(), mask_ratio=0.75)
    torch.manual_seed(5)
    zero = zero_method(batch)
    torch.manual_seed(5)
    mae_loss = mae_method(batch)["loss"]
    assert torch.equal(zero["loss"], mae_loss)


@pytest.mark.parametrize("feature", ["decoder_pool", "encoder_cls", "encoder_mean"])
def test_gradients_reach_head_and_decoder_not_teacher(feature):
    method = make(feature=feature, teacher=LinearTeacher())  # the method freezes it
    batch = {"image": torch.randn(4, 3, 16, 16)}
    method(batch)["loss"].backward()
    assert method.proj.weight.grad is not None and method.proj.weight.grad.abs().sum() > 0
    if feature == "decoder_pool":
        assert method.pool.weight.grad.abs().sum() > 0
        assert method.model.decoder_blocks[0].mlp.fc1.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())
    assert method.train().training and not method.teacher.training
    state = _method_state(method)
    assert not any(k.startswith(("teacher.", "model.")) for k in state)
    assert "text_embeds" in state and "proj.weight" in state


def test_cached_equals_online_when_embeddings_agree():
    teacher = LinearTeacher().requires_grad_(False)
    images = torch.randn(4, 3, 16, 16)
    cached = teacher.encode_image(denormalize(images).clamp(0, 1))
    online_method, cached_method = make(teacher=teacher), make(teacher=None)
    torch.manual_seed(3)
    online = online_method({"image": images})
    torch.manual_seed(3)
    from_cache = cached_method({"image": images, "teacher_embed": cached})
    assert torch.allclose(online["loss"], from_cache["loss"], atol=1e-6)


def test_bad_feature_name_and_mismatched_teacher_dims():
    with pytest.raises(ValueError, match="student_feature"):
        make(feature="cls")
    batch = {"image": torch.randn(2, 3, 16, 16), "teacher_embed": torch.randn(2, 6)}
    with pytest.raises(ValueError, match="6 dims but the text embeddings 8"):
        make()(batch)


def test_kl_term_is_zero_when_the_student_is_the_teacher():
    """Through the method's forward: a cached target equal to the student's own vector (at any
    scale, both are normalised) gives identical anchor distributions, so L_kl = L_sim = 0."""
    method = make()
    images = torch.randn(4, 3, 16, 16)
    torch.manual_seed(7)
    with torch.no_grad():
        latent, _, ids_restore = method.model.forward_encoder(images, method.mask_ratio)
        _, dec_tokens = method.model.forward_decoder(latent, ids_restore)
        student = method.student_vector(latent, dec_tokens)
    torch.manual_seed(7)  # the same masks again
    out = method({"image": images, "teacher_embed": 3.0 * student})
    assert out["kl"].item() == pytest.approx(0.0, abs=1e-5)
    assert out["sim"].item() == pytest.approx(0.0, abs=1e-6)
    torch.manual_seed(7)
    other = method({"image": images, "teacher_embed": torch.randn(4, 8)})
    assert other["kl"].item() > 0.1  # the check above is not vacuous


def test_kl_alone_falls_when_optimised_directly():
    """The loss has the right sign, direction and gradient: a free student feature trained on
    L_kl alone at τ = 100 (90 anchors, as in the demo) ends far below where it started."""
    gen = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(90, 32, generator=gen), dim=-1)
    target = F.normalize(torch.randn(16, 32, generator=gen), dim=-1)
    student = torch.nn.Parameter(torch.randn(16, 32, generator=gen))
    opt = torch.optim.Adam([student], lr=0.01)
    initial = text_kl_loss(student, target, text).item()
    for _ in range(200):
        loss = text_kl_loss(student, target, text)
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = text_kl_loss(student, target, text).item()
    assert initial > 5.0
    assert final < 0.02 * initial  # 46.9 → 0.32 nats here


def test_kl_alone_falls_through_the_method_head():
    """In the method, with w_sim = 0 the distillation head (pool + proj) gets only L_kl's
    gradient (the pixel loss does not reach it): 200 Adam steps on it drive L_kl down."""
    text = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    method = with_defaults("cgd_mae", tiny_mae(), text, None, lam=1.0, w_sim=0.0, w_kl=1.0)
    batch = {
        "image": torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(2)),
        "teacher_embed": torch.randn(8, 8, generator=torch.Generator().manual_seed(3)),
    }
    opt = torch.optim.Adam([*method.pool.parameters(), *method.proj.parameters()], lr=0.01)
    kls = []
    for _ in range(200):
        torch.manual_seed(0)  # the same masks every step: a fixed problem
        out = method(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        kls.append(out["kl"].item())
    torch.manual_seed(0)
    final = method(batch)["kl"].item()
    assert kls[0] > 1.0
    assert final < 0.05 * kls[0]  # 42.6 → 0.003 nats here


def test_kl_study_curve_is_zero_at_the_teacher_and_sharper_at_tau_100():
    from cgdmae.bench.kl_study import at_cosine, kl_vs_cosine, uniform_kl

    gen = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(90, 32, generator=gen), dim=-1)
    target = F.normalize(torch.randn(64, 32, generator=gen), dim=-1)
    assert torch.allclose((at_cosine(target, 0.8, gen) * target).sum(-1), torch.tensor(0.8))
    at_100 = kl_vs_cosine(target, text, [1.0, 0.9, 0.5], 100.0)
    at_10 = kl_vs_cosine(target, text, [1.0, 0.9, 0.5], 10.0)
    assert at_100[0] == pytest.approx(0.0, abs=1e-4) and at_10[0] == pytest.approx(0.0, abs=1e-4)
    assert at_100[0] < at_100[1] < at_100[2]  # worse with the angle
    assert at_100[1] > 5 * at_10[1]  # and far worse at τ = 100 than at τ = 10
    assert 0 < uniform_kl(target, text, 10.0) < math.log(90)
