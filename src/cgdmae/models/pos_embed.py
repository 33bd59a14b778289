"""Fixed 2-D sin-cos position embeddings, as in MAE's ``util/pos_embed.py`` (non-square too)."""

from __future__ import annotations

import numpy as np
import torch


def _sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = np.einsum("m,d->md", positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_pos_embed_2d(
    dim: int, grid_size: tuple[int, int], cls_token: bool = False
) -> torch.Tensor:
    """(1, [1+] h*w, dim) table; the first half of the channels encodes the column.

    MAE builds its grid with ``np.meshgrid(grid_w, grid_h)``, so what it calls the "h" half is
    the column coordinate; we keep that order so published checkpoints see the same table.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a dim divisible by 4, got {dim}")
    h, w = grid_size
    cols, rows = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    table = np.concatenate([_sincos_1d(dim // 2, cols), _sincos_1d(dim // 2, rows)], axis=1)
    if cls_token:
        table = np.concatenate([np.zeros((1, dim)), table], axis=0)
    return torch.from_numpy(table).float().unsqueeze(0)


def resize_pos_embed(
    pos_embed: torch.Tensor,
    old_grid: tuple[int, int],
    new_grid: tuple[int, int],
    num_prefix: int = 1,
) -> torch.Tensor:
    """Bicubic resize of a (1, prefix + h*w, D) table to another grid (fine-tuning resolution)."""
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, *old_grid, dim).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(
        grid.float(), size=tuple(new_grid), mode="bicubic", align_corners=False
    )
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)
