"""Second encoders of the methods that keep one: PersonMAE's EMA target, PersonViT's EMA
teacher, MAE-Lite's frozen teacher. A frozen copy of the encoder, its EMA update and schedule,
and the encoder's pass over the whole patch sequence."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from cgdmae.models import MaskedAutoencoderViT, resize_pos_embed
from cgdmae.models.export import DECODER_PREFIXES


def ema_momentum(
    progress: float, start: float, end: float, ramp: float = 1.0, shape: str = "linear"
) -> float:
    """Momentum after ``progress`` (0–1) of training: ``start`` to ``end`` over the first ``ramp``,
    linearly (PersonMAE) or along a half cosine (BYOL/DINO), then ``end``."""
    t = 1.0 if ramp <= 0 else min(max(progress / ramp, 0.0), 1.0)
    if shape == "cosine":
        t = (1 - math.cos(math.pi * t)) / 2
    elif shape != "linear":
        raise ValueError(f"momentum schedule shape must be linear or cosine, got {shape!r}")
    return start + (end - start) * t


def encoder_copy(model: MaskedAutoencoderViT) -> MaskedAutoencoderViT:
    """A frozen deep copy of the MAE without its decoder (an EMA target or a teacher).

    Its state dict is exactly the exported encoder layout, so it can be saved as ``encoder.pth``.
    """
    encoder = copy.deepcopy(model)
    named = [n for n, _ in encoder.named_children()] + [
        n for n, _ in encoder.named_parameters(recurse=False)
    ]
    for name in named:
        if name.startswith(DECODER_PREFIXES):
            delattr(encoder, name)
    return encoder.requires_grad_(False)


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """target ← momentum · target + (1 − momentum) · source, matched by parameter name.

    Parameters the source does not train (the fixed sin-cos positions) are copied, not averaged,
    so they stay bit-identical to the table instead of picking up rounding.
    """
    sources = dict(source.named_parameters())
    averaged, towards = [], []
    for name, param in target.named_parameters():
        src = sources[name].detach()
        if sources[name].requires_grad:
            averaged.append(param)
            towards.append(src)
        else:
            param.copy_(src)
    if averaged:
        torch._foreach_lerp_(averaged, towards, 1.0 - momentum)


def encode_tokens(
    encoder: MaskedAutoencoderViT,
    imgs: torch.Tensor,
    token_mask: torch.Tensor | None = None,
    mask_token: torch.Tensor | None = None,
) -> torch.Tensor:
    """The encoder on the whole patch sequence: normalised [B, 1 + h·w, D] tokens.

    Any input size divisible by the patch (the position table is resized bicubically, as DINO
    does for its local crops); ``token_mask`` [B, h·w] replaces those patch embeddings by
    ``mask_token`` before the positions are added (BEiT/iBOT masking). This is the computation
    timm's ``VisionTransformer.forward_features`` runs on the exported weights.
    """
    x = encoder.patch_embed.proj(imgs)
    grid = (x.shape[-2], x.shape[-1])
    x = encoder.patch_embed.norm(x.flatten(2).transpose(1, 2))
    if token_mask is not None:
        x = torch.where(token_mask.unsqueeze(-1), mask_token.to(x.dtype), x)
    pos = resize_pos_embed(encoder.pos_embed, encoder.grid_size, grid)
    cls = (encoder.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x + pos[:, 1:]], dim=1)
    for block in encoder.blocks:
        x = block(x)
    return encoder.norm(x)
