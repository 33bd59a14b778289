"""PersonViT: DINO self-distillation plus iBOT's patch-level MIM loss.

"PersonViT: Large-scale Self-supervised Vision Transformer for Person Re-Identification"
(Eq. 4–8): a student and an EMA teacher, both the MAE's ViT encoder followed by a DINO projection
head (shared by the CLS and patch tokens, iBOT's ``shared_head``).

- Views come from :class:`cgdmae.pretrain.views.MultiCropDataset`: two global views, which the
  teacher sees intact and the student sees block-masked (masked patch embeddings replaced by a
  learned token), and N smaller local views for the student only (position table interpolated).
- L_dino: cross-entropy between the teacher's centred, sharpened CLS distribution of one global
  view and the student's CLS distribution of every other view, averaged over the pairs.
- L_mim: for each global view, cross-entropy between the teacher's patch distributions (its own
  centre) and the student's at the same positions, over the masked patches only, averaged per
  image and then over the images and views (an image without a mask adds zero).
- L = λ1 · L_dino + λ2 · L_mim.

DINO/iBOT details kept: student temperature 0.1; teacher temperatures warmed up linearly;
centres updated with momentum 0.9 from the batch mean over all ranks; teacher momentum from
``ema_momentum`` to 1 along a half cosine; the weight-normalised last layer can be frozen for the
first part of training; stochastic depth in the student only (rate rising linearly over the
blocks to ``drop_path``, 0.1 in DINO/iBOT), the teacher having been copied before it is added.
The weight-decay schedule 0.04 → 0.4 is the engine's ``weight_decay_end``. Not kept: DINO's
learned position embedding (the MAE's is the fixed sin-cos table, so the export keeps one
layout).

The MAE's pixel decoder is not used: its weights stay in the checkpoint (so it keeps the MAE
layout) but are frozen, which also keeps DDP from waiting for their gradients. The exported
encoder is the teacher's, as PersonViT fine-tunes the teacher.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.layers import DropPath, calculate_drop_path_rates
from torch import nn

from cgdmae.models import MaskedAutoencoderViT, encoder_state_dict
from cgdmae.models.export import DECODER_PREFIXES
from cgdmae.pretrain.methods.base import MethodInputs, PretrainMethod, register_method
from cgdmae.pretrain.methods.encoders import (
    ema_momentum,
    ema_update,
    encode_tokens,
    encoder_copy,
)
from cgdmae.pretrain.views import MultiCropDataset


class DINOHead(nn.Module):
    """DINO's projection head: 3-layer MLP (GELU), L2-normalised bottleneck, weight-normed last
    layer without bias. With ``norm_last_layer`` its norm is fixed at 1 (DINO's stable choice),
    otherwise a learned per-output scale (weight norm's g)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int,
        bottleneck_dim: int,
        norm_last_layer: bool,
    ):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        self.last_scale = None if norm_last_layer else nn.Parameter(torch.ones(out_dim, 1))

    def forward(self, x: torch.Tensor, freeze_last: torch.Tensor | None = None) -> torch.Tensor:
        """``freeze_last`` (a 0-d bool tensor, so no host sync) zeroes the last layer's gradients
        while keeping it in the graph, which DDP needs."""
        x = F.normalize(self.mlp(x), dim=-1)
        weight = F.normalize(self.last_layer.weight, dim=1)
        if self.last_scale is not None:
            weight = weight * self.last_scale
        if freeze_last is not None:
            weight = torch.where(freeze_last, weight.detach(), weight)
        return F.linear(x, weight)


def teacher_probs(logits: torch.Tensor, center: torch.Tensor, temp: torch.Tensor) -> torch.Tensor:
    """Centring and sharpening: softmax((t − c) / τ_t)."""
    return F.softmax((logits - center) / temp, dim=-1)


def dino_loss(student: torch.Tensor, teacher: torch.Tensor, student_temp: float) -> torch.Tensor:
    """Mean over (teacher view q, student view v ≠ q) of the batch-mean cross-entropy.

    ``student`` [V_s, B, K] logits (global views first), ``teacher`` [V_t, B, K] probabilities.
    """
    log_p = F.log_softmax(student / student_temp, dim=-1)
    cross = -torch.einsum("qbk,vbk->qvb", teacher, log_p).mean(-1)  # [V_t, V_s]
    views_t, views_s = cross.shape
    pairs = ~torch.eye(views_t, views_s, dtype=torch.bool, device=cross.device)
    return cross[pairs].mean()


def mim_loss(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, student_temp: float
) -> torch.Tensor:
    """iBOT's patch loss: per image the mean cross-entropy over its masked patches, then the mean
    over images and views. ``student`` logits and ``teacher`` probabilities are [V, B, N, K],
    ``mask`` [V, B, N] (True = masked); unmasked positions do not enter at all."""
    ce = -(teacher * F.log_softmax(student / student_temp, dim=-1)).sum(-1)
    ce = torch.where(mask, ce, torch.zeros_like(ce))
    return (ce.sum(-1) / mask.sum(-1).clamp(min=1)).mean()


@torch.no_grad()
def update_center(center: torch.Tensor, logits: torch.Tensor, momentum: float) -> None:
    """center ← m · center + (1 − m) · mean of the teacher logits over the global batch."""
    batch_mean = logits.reshape(-1, logits.shape[-1]).float().mean(0)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(batch_mean)
        batch_mean /= dist.get_world_size()
    center.mul_(momentum).add_(batch_mean.view_as(center), alpha=1 - momentum)


def add_drop_path(model: MaskedAutoencoderViT, rate: float) -> None:
    """Stochastic depth on the encoder's residual branches, rising linearly from 0 in the first
    block to ``rate`` in the last (timm's and DINO's rule); the decoder's blocks are unused."""
    for block, block_rate in zip(
        model.blocks, calculate_drop_path_rates(rate, len(model.blocks)), strict=True
    ):
        if block_rate > 0:
            block.drop_path1, block.drop_path2 = DropPath(block_rate), DropPath(block_rate)


@register_method("person_vit")
class PersonViTMethod(PretrainMethod):
    """DINO + MIM (see the module docstring).

    Temperatures are (start, end) pairs warmed up linearly over the first ``temp_warmup`` of
    training; ``freeze_last_layer`` is also a fraction of training. ``progress`` (steps done /
    total) is a buffer, so the schedules resume exactly.
    """

    @classmethod
    def from_spec(cls, model, spec: dict[str, Any], inputs: MethodInputs) -> PersonViTMethod:
        return cls(model, **cls.settings(spec))

    @classmethod
    def settings(cls, spec: dict[str, Any]) -> dict[str, Any]:
        cfg = spec["person_vit"]
        keys = ("out_dim", "hidden_dim", "bottleneck_dim", "norm_last_layer", "temp_warmup")
        keys += ("ema_momentum", "lambda_dino", "lambda_mim", "freeze_last_layer", "drop_path")
        pairs = {"teacher_temp": tuple(cfg["teacher_temp"]), "patch_temp": tuple(cfg["patch_temp"])}
        return {key: cfg[key] for key in keys} | pairs

    @classmethod
    def views(cls, spec, paths, seed, targets=None, targets_file=None) -> MultiCropDataset:
        """DINO's multi-crop (global and local views) with iBOT-style block masks."""
        cfg = spec["person_vit"]
        return MultiCropDataset(
            paths,
            img_size=tuple(spec["model"]["img_size"]),
            patch_size=spec["model"]["patch_size"],
            local_size=tuple(cfg["local_size"]),
            local_views=cfg["local_views"],
            global_scale=tuple(cfg["global_scale"]),
            local_scale=tuple(cfg["local_scale"]),
            ratio=tuple(cfg["ratio"]),
            mask_ratio=tuple(cfg["mask_ratio"]),
            mask_prob=cfg["mask_prob"],
            photometric=cfg["photometric"],
            seed=seed,
        )

    def __init__(
        self,
        model: MaskedAutoencoderViT,
        *,
        out_dim: int,
        hidden_dim: int,
        bottleneck_dim: int,
        norm_last_layer: bool,
        teacher_temp: tuple[float, float],
        patch_temp: tuple[float, float],
        temp_warmup: float,
        ema_momentum: float,
        lambda_dino: float,
        lambda_mim: float,
        freeze_last_layer: float,
        drop_path: float,
        student_temp: float = 0.1,  # DINO's, not a config key
        center_momentum: float = 0.9,  # DINO's, not a config key
    ):
        super().__init__()
        self.model = model
        for name, param in model.named_parameters():
            if name.startswith(DECODER_PREFIXES):
                param.requires_grad_(False)
        self.head = DINOHead(model.embed_dim, out_dim, hidden_dim, bottleneck_dim, norm_last_layer)
        self.mim_token = nn.Parameter(torch.zeros(1, 1, model.embed_dim))
        nn.init.normal_(self.mim_token, std=0.02)
        self.teacher = nn.ModuleDict(
            {
                "encoder": encoder_copy(model),
                "head": copy.deepcopy(self.head).requires_grad_(False),
            }
        )
        add_drop_path(model, drop_path)  # after the copy: the teacher's blocks keep none
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.teacher_temp, self.patch_temp = tuple(teacher_temp), tuple(patch_temp)
        self.temp_warmup, self.freeze_last_layer = temp_warmup, freeze_last_layer
        self.ema_start, self.lambda_dino, self.lambda_mim = ema_momentum, lambda_dino, lambda_mim
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("center_patch", torch.zeros(1, 1, out_dim))
        self.register_buffer("progress", torch.zeros((), dtype=torch.float64))

    def temperature(self, start_end: tuple[float, float]) -> torch.Tensor:
        """The teacher temperature at the current progress, as a tensor (no host sync)."""
        start, end = start_end
        if self.temp_warmup <= 0:
            return torch.tensor(end, device=self.progress.device)
        t = (self.progress / self.temp_warmup).clamp(max=1.0).float()
        return start + (end - start) * t

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        views = batch["global_views"]
        batch_size, n_global = views.shape[:2]
        views = views.transpose(0, 1).flatten(0, 1)  # view-major: [V·B, 3, H, W]
        masks = batch["global_masks"].transpose(0, 1).flatten(0, 1).flatten(1)  # [V·B, N]
        grid = self.model.grid_size
        if masks.shape[1] != grid[0] * grid[1]:
            raise ValueError(
                f"global_masks cover {masks.shape[1]} patches, the model's {grid} grid has "
                f"{grid[0] * grid[1]}: the global views must be the model's img_size"
            )
        with torch.no_grad():
            teacher = self.teacher["head"](encode_tokens(self.teacher["encoder"], views)).float()
        frozen = self.progress < self.freeze_last_layer
        student = self.head(encode_tokens(self.model, views, masks, self.mim_token), frozen)
        student_cls = [student[:, 0]]
        local = batch.get("local_views")
        if local is not None and local.shape[1] > 0:
            local_tokens = encode_tokens(self.model, local.transpose(0, 1).flatten(0, 1))
            student_cls.append(self.head(local_tokens[:, 0], frozen))
        out_dim = teacher.shape[-1]
        student_cls = torch.cat(student_cls).float().view(-1, batch_size, out_dim)

        teacher_cls = teacher_probs(teacher[:, 0], self.center, self.temperature(self.teacher_temp))
        teacher_patch = teacher_probs(
            teacher[:, 1:], self.center_patch, self.temperature(self.patch_temp)
        )
        grid_shape = (n_global, batch_size, masks.shape[1])
        dino = dino_loss(student_cls, teacher_cls.view(n_global, batch_size, -1), self.student_temp)
        mim = mim_loss(
            student[:, 1:].float().view(*grid_shape, out_dim),
            teacher_patch.view(*grid_shape, out_dim),
            masks.view(grid_shape),
            self.student_temp,
        )
        update_center(self.center, teacher[:, 0], self.center_momentum)
        update_center(self.center_patch, teacher[:, 1:], self.center_momentum)
        loss = self.lambda_dino * dino + self.lambda_mim * mim
        return {"loss": loss, "dino": dino.detach(), "mim": mim.detach()}

    def on_step_end(self, step: int, total_steps: int) -> None:
        progress = step / max(total_steps, 1)
        self.progress.fill_(progress)
        momentum = ema_momentum(progress, self.ema_start, 1.0, shape="cosine")
        ema_update(self.teacher["encoder"], self.model, momentum)
        ema_update(self.teacher["head"], self.head, momentum)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The teacher's backbone, in the same timm / MAE layout as every other method."""
        return encoder_state_dict(self.teacher["encoder"])
