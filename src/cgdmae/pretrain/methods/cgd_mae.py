"""CGD-MAE: MAE plus global-context semantic distillation from a CLIP teacher.

The exact CGD-MAE head is not public; this follows VehicleMAE's design (see config/README.md):
the decoder tokens after ``decoder_norm`` (CLS dropped) are pooled by a learned Linear(L → 1)
and projected to the CLIP dimension; the student vector ŝ is pulled towards the CLIP image
embedding t̂ of the same augmented view (L_sim) and made to agree with it on a distribution
over CLIP text embeddings of attribute descriptions (L_kl).

    L = L_mae + λ · (w_sim · L_sim + w_kl · L_kl)
    L_sim = mean_b ‖t̂ − ŝ‖²                      (both L2-normalised)
    L_kl  = KL(softmax(τ ŝ Tᵀ) ‖ softmax(τ t̂ Tᵀ))  with τ = 100
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cgdmae.models import MaskedAutoencoderViT
from cgdmae.pretrain.data import denormalize
from cgdmae.pretrain.methods.base import PretrainMethod, register_method

STUDENT_FEATURES = ("decoder_pool", "encoder_cls", "encoder_mean")


def similarity_loss(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared distance between unit vectors."""
    return ((F.normalize(target, dim=-1) - F.normalize(student, dim=-1)) ** 2).sum(-1).mean()


def text_kl_loss(
    student: torch.Tensor, target: torch.Tensor, text: torch.Tensor, temperature: float = 100.0
) -> torch.Tensor:
    """KL(P_student ‖ P_teacher) over the text anchors, as the formula above reads, batch mean."""
    log_p_student = F.log_softmax(temperature * F.normalize(student, dim=-1) @ text.T, dim=-1)
    log_p_teacher = F.log_softmax(temperature * F.normalize(target, dim=-1) @ text.T, dim=-1)
    return (log_p_student.exp() * (log_p_student - log_p_teacher)).sum(-1).mean()


@register_method("cgd_mae")
class CGDMAEMethod(PretrainMethod):
    """MAE with CLIP distillation; ``teacher`` may be None when targets come cached in the batch."""

    frozen_prefixes = ("teacher.",)

    def __init__(
        self,
        model: MaskedAutoencoderViT,
        text_embeds: torch.Tensor,
        teacher: nn.Module | None = None,
        *,
        mask_ratio: float = 0.75,
        lam: float = 1.0,
        w_sim: float = 2.0,
        w_kl: float = 0.1,
        student_feature: str = "decoder_pool",
        temperature: float = 100.0,
    ):
        super().__init__()
        if student_feature not in STUDENT_FEATURES:
            raise ValueError(
                f"student_feature must be one of {STUDENT_FEATURES}, got {student_feature!r}"
            )
        self.model = model
        self.teacher = teacher.requires_grad_(False) if teacher is not None else None
        self.mask_ratio, self.lam, self.w_sim, self.w_kl = mask_ratio, lam, w_sim, w_kl
        self.student_feature, self.temperature = student_feature, temperature
        clip_dim = text_embeds.shape[1]
        num_patches = model.grid_size[0] * model.grid_size[1]
        width = model.decoder_embed_dim if student_feature == "decoder_pool" else model.embed_dim
        self.pool = nn.Linear(num_patches, 1) if student_feature == "decoder_pool" else None
        self.proj = nn.Linear(width, clip_dim) if width != clip_dim else nn.Identity()
        self.register_buffer("text_embeds", F.normalize(text_embeds.float(), dim=-1))

    def student_vector(self, latent: torch.Tensor, dec_tokens: torch.Tensor) -> torch.Tensor:
        if self.student_feature == "decoder_pool":
            pooled = self.pool(dec_tokens.transpose(1, 2)).squeeze(-1)  # [B, Dd]
        elif self.student_feature == "encoder_cls":
            pooled = latent[:, 0]
        else:
            pooled = latent[:, 1:].mean(1)
        return self.proj(pooled)

    def teacher_target(self, batch: dict[str, Any]) -> torch.Tensor:
        if "teacher_embed" in batch:
            return batch["teacher_embed"].float()
        if self.teacher is None:
            raise ValueError(
                "cgd_mae without a teacher needs cached 'teacher_embed' in every batch"
            )
        return self.teacher.encode_image(denormalize(batch["image"]).clamp(0, 1))

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
