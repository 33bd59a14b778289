"""MAE reconstructions of a few pool images by a pre-trained run, for the figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torchvision.transforms import functional as TF

from cgdmae.data import load_rgb
from cgdmae.pretrain.data import denormalize, normalize
from cgdmae.pretrain.run import build_model
from cgdmae.training.checkpoint import load_checkpoint


@torch.no_grad()
def reconstruct(
    checkpoint: str | Path, spec: dict[str, Any], paths: list[Path], seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """(original, masked, prediction, prediction with visible patches) in [0, 1].

    With ``norm_pix_loss`` the decoder predicts per-patch normalised pixels; as in MAE's
    visualisation, each predicted patch is mapped back with the original patch's mean and
    standard deviation. ``checkpoint`` is loaded weights-only (it may come from a shared DVC
    remote); a file that needs more is refused with a :class:`CheckpointError` naming it.
    """
    model = build_model(spec)
    model.load_state_dict(load_checkpoint(checkpoint)["model"])  # weights-only: never runs code
    model.eval()
    size = list(spec["model"]["img_size"])
    images = torch.stack([normalize(TF.to_tensor(TF.resize(load_rgb(p), size))) for p in paths])
    noise = torch.rand(len(images), model.patch_embed.num_patches,
                       generator=torch.Generator().manual_seed(seed))  # fmt: skip
    _, pred, mask = model(images, mask_ratio=spec["mask_ratio"], noise=noise)
    target = model.patchify(images)
    if spec["model"]["norm_pix_loss"]:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        pred = pred * (var + 1e-6) ** 0.5 + mean
    visible = (1 - mask).unsqueeze(-1)
    masked = model.unpatchify(target * visible)
    pasted = model.unpatchify(target * visible + pred * (1 - visible))
    out = (images, masked, model.unpatchify(pred), pasted)
    return tuple(denormalize(x).clamp(0, 1) for x in out)
