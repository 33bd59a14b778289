"""Encoder export: the keys timm's VisionTransformer and MAE's ``models_vit`` load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cgdmae.files import atomic_write

DECODER_PREFIXES = ("decoder_", "mask_token")


def encoder_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The MAE state dict without ``mask_token`` and ``decoder_*`` (``norm.*`` is kept)."""
    return {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if not k.startswith(DECODER_PREFIXES)
    }


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`cgdmae.files.atomic_write`: never a half-written file."""
    atomic_write(path, lambda f: torch.save(obj, f))


def save_encoder(model: nn.Module | dict[str, torch.Tensor], path: str | Path) -> None:
    """Write ``{'model': encoder}``: timm's filter and MAE's ``main_finetune.py`` unwrap 'model'.

    ``model`` is a MAE (its encoder is extracted) or an encoder state dict already extracted.
    """
    encoder = encoder_state_dict(model) if isinstance(model, nn.Module) else model
    atomic_save({"model": encoder}, path)
