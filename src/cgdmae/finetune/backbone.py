"""The fine-tuning backbone: a timm ViT initialised from a pre-training run's ``encoder.pth``.

``encoder.pth`` holds the encoder in timm's ``VisionTransformer`` layout (MAE's key names), at
the pre-training resolution. Fine-tuning usually runs at another one (MAE at 64 px, ReID at
256×256 or 256×128), so the absolute position embedding is resampled from the pre-training
patch grid to the fine-tuning grid with timm's ``resample_abs_pos_embed``; the grid has to be
given explicitly because a non-square one cannot be guessed from the token count.

With ``patch_stride`` (TransReID*'s overlapping patches: stride 12 for 16×16 patches) the patch
convolution keeps its kernel but steps by the stride, so the grid is ((H − p) // s + 1) ×
((W − p) // s + 1) and the position embedding is resampled to that grid instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from cgdmae.models.mae import ENCODER_SIZES


class EncoderMismatchError(ValueError):
    """``encoder.pth`` does not fit the model the run is configured with."""


def encoder_architecture(model_cfg: dict[str, Any]) -> dict[str, int]:
    """embed_dim, depth and num_heads of a run's ``pretrain.model`` block (size + overrides)."""
    dim, depth, heads = ENCODER_SIZES[model_cfg["size"]]
    return {
        "embed_dim": model_cfg.get("embed_dim") or dim,
        "depth": model_cfg.get("depth") or depth,
        "num_heads": model_cfg.get("num_heads") or heads,
    }


def strided_grid(img_size: tuple[int, int], patch: int, stride: int) -> tuple[int, int]:
    """The patch grid of a ``patch``×``patch`` convolution stepping by ``stride`` (no padding)."""
    return ((img_size[0] - patch) // stride + 1, (img_size[1] - patch) // stride + 1)


def set_patch_stride(vit: VisionTransformer, stride: int) -> None:
    """Make ``vit``'s patch embedding overlap (TransReID's ``PatchEmbed_overlap``).

    The projection keeps its kernel and steps by ``stride``; timm's ``PatchEmbed`` gets the new
    ``grid_size`` and ``num_patches`` and the ViT a (zero, to be loaded) position embedding of
    that many tokens, so timm's forward runs unchanged on the longer sequence.
    """
    embed = vit.patch_embed
    if embed.patch_size[0] != embed.patch_size[1]:
        raise ValueError(f"overlapping patches need square patches, not {embed.patch_size}")
    if not 0 < stride <= embed.patch_size[0]:
        raise ValueError(f"patch stride {stride} must be in 1..{embed.patch_size[0]}")
    grid = strided_grid(embed.img_size, embed.patch_size[0], stride)
    embed.proj.stride = (stride, stride)
    embed.grid_size = grid
    embed.num_patches = grid[0] * grid[1]
    tokens = embed.num_patches + (0 if vit.no_embed_class else vit.num_prefix_tokens)
    vit.pos_embed = nn.Parameter(vit.pos_embed.new_zeros(1, tokens, vit.embed_dim))


def load_vit(
    encoder_path: str | Path,
    model_cfg: dict[str, Any],
    img_size: tuple[int, int],
    drop_path_rate: float = 0.0,
    global_pool: str = "token",
    patch_stride: int | None = None,
) -> VisionTransformer:
    """A timm ViT (no head) at ``img_size`` with the encoder weights of ``encoder_path``.

    ``model_cfg`` is the pre-training run's ``model`` block: it fixes the architecture and the
    pre-training patch grid. A checkpoint of another width or depth fails with both named.
    ``global_pool="avg"`` is MAE's fine-tuning head input (``models_vit``): the mean of the patch
    tokens, then a new ``fc_norm``; the pre-trained final norm is dropped, as MAE drops it.
    ``patch_stride``: overlapping patches (see :func:`set_patch_stride`); None = the patch size.
    """
    arch = encoder_architecture(model_cfg)
    patch = model_cfg["patch_size"]
    pretrain_grid = [s // patch for s in model_cfg["img_size"]]
    vit = VisionTransformer(
        img_size=tuple(img_size),
        patch_size=patch,
        num_classes=0,
        global_pool=global_pool,
        drop_path_rate=drop_path_rate,
        **arch,
    )
    if patch_stride is not None and patch_stride != patch:
        set_patch_stride(vit, patch_stride)
    state = torch.load(encoder_path, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    if "pos_embed" not in state:
        raise EncoderMismatchError(f"{encoder_path}: no 'pos_embed' key; not an encoder.pth")
    width = state["pos_embed"].shape[-1]
    if width != arch["embed_dim"]:
        raise EncoderMismatchError(
            f"{encoder_path}: embedding dimension {width}, but the run's model is configured "
            f"with embed_dim {arch['embed_dim']} (pretrain.model.size={model_cfg['size']!r}, "
            f"embed_dim={model_cfg.get('embed_dim')}); was the encoder trained with this config?"
        )
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    if depth != arch["depth"]:
        raise EncoderMismatchError(
            f"{encoder_path}: {depth} transformer blocks, the configured model has "
            f"{arch['depth']} (pretrain.model.depth)"
        )
    state = dict(state)
    state["pos_embed"] = resample_abs_pos_embed(
        state["pos_embed"],
        new_size=list(vit.patch_embed.grid_size),
        old_size=pretrain_grid,
        num_prefix_tokens=1,
    )
    fresh = []
    if global_pool == "avg":
        state = {k: v for k, v in state.items() if not k.startswith("norm.")}
        fresh = ["fc_norm.weight", "fc_norm.bias"]
    missing, unexpected = vit.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in fresh]
    if missing or unexpected:
        raise EncoderMismatchError(
            f"{encoder_path}: keys missing {missing[:5]}, unexpected {unexpected[:5]} "
            "for a timm VisionTransformer"
        )
    return vit
