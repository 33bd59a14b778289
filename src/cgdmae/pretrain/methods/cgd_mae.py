"""CGD-MAE: MAE plus global-context semantic distillation from a CLIP teacher.

The exact CGD-MAE head is not public; this follows VehicleMAE's design (see config/README.md):
the decoder tokens after ``decoder_norm`` (CLS dropped) are pooled by a learned Linear(L → 1)
and projected to the CLIP dimension; the student vector ŝ is pulled towards the CLIP image
embedding t̂ of the same augmented view (L_sim) and made to agree with it on a distribution
over CLIP text embeddings T of attribute descriptions (L_kl).

    L = L_mae + λ · (w_sim · L_sim + w_kl · L_kl)
    L_sim = mean_b ‖t̂ − ŝ‖²                       (both L2-normalised)
    L_kl  = mean_b Σ_k P_t,k · log(P_t,k / P_s,k),  P_s = softmax(τ ŝ Tᵀ), P_t = softmax(τ t̂ Tᵀ)

The KL direction: the formula is written KL(softmax(τ ŝ Tᵀ) ‖ softmax(τ t̂ Tᵀ)), which is the
argument order of PyTorch's ``kl_div(input=log P_s, target=P_t)``; VehicleMAE's code computes
exactly that, i.e. KL(P_t ‖ P_s) in the mathematical sense, with the teacher's distribution as
the target. We take that reading (and τ = 100, CLIP's logit scale) and leave out the extra
batch-entropy term VehicleMAE's code adds.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cgdmae.models import MaskedAutoencoderViT
from cgdmae.pretrain.data import denormalize
from cgdmae.pretrain.methods.base import MethodInputs, PretrainMethod, register_method

STUDENT_FEATURES = ("decoder_pool", "encoder_cls", "encoder_mean")


def similarity_loss(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared distance between unit vectors."""
    return ((F.normalize(target, dim=-1) - F.normalize(student, dim=-1)) ** 2).sum(-1).mean()


def text_kl_loss(
    student: torch.Tensor, target: torch.Tensor, text: torch.Tensor, temperature: float = 100.0
) -> torch.Tensor:
    """KL(P_teacher ‖ P_student) over the text anchors, batch mean (see the module docstring)."""
    log_p_student = F.log_softmax(temperature * F.normalize(student, dim=-1) @ text.T, dim=-1)
    log_p_teacher = F.log_softmax(temperature * F.normalize(target, dim=-1) @ text.T, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)


@register_method("cgd_mae")
class CGDMAEMethod(PretrainMethod):
    """MAE with CLIP distillation.

    ``text_embeds`` [K, C]: CLIP text embeddings of the filled attribute templates (the KL
    anchors; their dimension C sets the projection's). ``teacher``: a frozen CLIP with
    ``encode_image(images01)``, or None when every batch carries cached ``teacher_embed``.
    ``student_feature``: ``decoder_pool`` (VehicleMAE), ``encoder_cls`` or ``encoder_mean``
    (mean of the visible encoder tokens). The teacher is kept out of checkpoints and of the
    optimizer by ``frozen_prefixes``; ``text_embeds`` is a buffer, saved so a resume is exact.
    """

    frozen_prefixes = ("teacher.",)

    @classmethod
    def from_spec(cls, model, spec: dict[str, Any], inputs: MethodInputs) -> CGDMAEMethod:
        """The KL anchors come from ``inputs.text_anchors`` (the teacher_text rule's file)
        when given; the teacher itself is loaded only for online targets."""
        from cgdmae.teacher.clip import attribute_prompts, load_teacher, load_text_anchors

        distill = spec["distill"]
        online = distill["targets"] == "online"
        if inputs.teacher_dir is None and (online or inputs.text_anchors is None):
            raise ValueError(
                "cgd_mae needs a teacher directory (online targets or no text anchors)"
            )
        # on the CPU: the engine moves the method to this rank's device (not every rank's GPU 0)
        needs_teacher = online or inputs.text_anchors is None
        teacher = load_teacher(inputs.teacher_dir, "cpu") if needs_teacher else None
        if inputs.text_anchors is not None:
            text = load_text_anchors(inputs.text_anchors, distill["templates"])
        else:
            text = teacher.encode_text(attribute_prompts(distill["templates"]))
        return cls(
            model,
            text,
            teacher if online else None,
            **cls.settings(spec),
        )

    @classmethod
    def settings(cls, spec: dict[str, Any]) -> dict[str, Any]:
        distill = spec["distill"]
        return {
            "mask_ratio": spec["mask_ratio"],
            "lam": distill["lambda"],
            "w_sim": distill["w_sim"],
            "w_kl": distill["w_kl"],
            "student_feature": distill["student_feature"],
        }

    def __init__(
        self,
        model: MaskedAutoencoderViT,
        text_embeds: torch.Tensor,
        teacher: nn.Module | None = None,
        *,
        mask_ratio: float,
        lam: float,
        w_sim: float,
        w_kl: float,
        student_feature: str,
        temperature: float = 100.0,
    ):
        super().__init__()
        if student_feature not in STUDENT_FEATURES:
            raise ValueError(
                f"student_feature must be one of {STUDENT_FEATURES}, got {student_feature!r}"
            )
        self.model = model
        self.teacher = teacher.requires_grad_(False).eval() if teacher is not None else None
        self.mask_ratio, self.lam, self.w_sim, self.w_kl = mask_ratio, lam, w_sim, w_kl
        self.student_feature, self.temperature = student_feature, temperature
        clip_dim = text_embeds.shape[1]
        num_patches = model.grid_size[0] * model.grid_size[1]
        width = model.decoder_embed_dim if student_feature == "decoder_pool" else model.embed_dim
        self.pool = nn.Linear(num_patches, 1) if student_feature == "decoder_pool" else None
        self.proj = nn.Linear(width, clip_dim) if width != clip_dim else nn.Identity()
        self.register_buffer("text_embeds", F.normalize(text_embeds.float(), dim=-1))

    def train(self, mode: bool = True) -> CGDMAEMethod:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # frozen: no dropout, no batch-norm statistics updates
        return self

    def student_vector(self, latent: torch.Tensor, dec_tokens: torch.Tensor) -> torch.Tensor:
        if self.student_feature == "decoder_pool":
            pooled = self.pool(dec_tokens.transpose(1, 2)).squeeze(-1)  # [B, Dd]
        elif self.student_feature == "encoder_cls":
            pooled = latent[:, 0]
        else:
            pooled = latent[:, 1:].mean(1)
        return self.proj(pooled)

    def teacher_target(self, batch: dict[str, Any]) -> torch.Tensor:
        """Cached ``teacher_embed`` when the batch has it, else the frozen teacher on the crop."""
        if "teacher_embed" in batch:
            target = batch["teacher_embed"].float()
        elif self.teacher is None:
            raise ValueError(
                "cgd_mae without a teacher needs cached 'teacher_embed' in every batch"
            )
        else:
            with torch.no_grad():
                target = self.teacher.encode_image(denormalize(batch["image"]).clamp(0, 1))
        if target.shape[-1] != self.text_embeds.shape[1]:
            raise ValueError(
                f"teacher embeddings have {target.shape[-1]} dims but the text embeddings "
                f"{self.text_embeds.shape[1]}: targets and text must come from the same teacher"
            )
        return target

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        imgs = batch["image"]
        latent, mask, ids_restore = self.model.forward_encoder(imgs, self.mask_ratio)
        pred, dec_tokens = self.model.forward_decoder(latent, ids_restore)
        mae = self.model.forward_loss(imgs, pred, mask)
        student = self.student_vector(latent, dec_tokens).float()
        target = self.teacher_target(batch)
        sim = similarity_loss(student, target)
        kl = text_kl_loss(student, target, self.text_embeds, self.temperature)
        loss = mae + self.lam * (self.w_sim * sim + self.w_kl * kl)
        return {"loss": loss, "mae": mae.detach(), "sim": sim.detach(), "kl": kl.detach()}
