"""Plain MAE, and ``scratch``: the untrained initialisation exported as a downstream baseline."""

from __future__ import annotations

from typing import Any

import torch

from cgdmae.models import MaskedAutoencoderViT
from cgdmae.pretrain.methods.base import PretrainMethod, register_method


@register_method("mae")
class MAEMethod(PretrainMethod):
    """Masked image modelling alone (CGD-MAE with lambda = 0)."""

    def __init__(self, model: MaskedAutoencoderViT, *, mask_ratio: float):
        super().__init__()
        self.model = model
        self.mask_ratio = mask_ratio

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        loss, _, _ = self.model(batch["image"], self.mask_ratio)
        return {"loss": loss, "mae": loss.detach()}


@register_method("scratch")
class ScratchMethod(MAEMethod):
    """No pre-training: the engine runs zero epochs and exports MAE's initialisation as is.

    ``forward`` stays MAE's so the untrained model's reconstruction loss can still be reported.
    """
