"""Masking strategies: MAE's random masking and BEiT-style block-wise masking.

Both produce a per-sample ``noise`` whose argsort puts the visible patches first, so the model's
single gather-based masking path serves both, and every sample keeps exactly the same number of
visible patches (which batching needs).
"""

from __future__ import annotations

import math

import numpy as np
import torch

MASK_STRATEGIES = ("random", "block")
BEIT_GRID_PATCHES = 14 * 14


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Visible patches for a ratio, as MAE counts them: ``int(L * (1 - r))``."""
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    return int(num_patches * (1 - mask_ratio))


def block_mask(
    grid: tuple[int, int], num_masked: int, rng: np.random.Generator, min_block: int = 16
) -> np.ndarray:
    """A boolean (h, w) mask of exactly ``num_masked`` patches made of rectangular blocks.

    BEiT's recipe: blocks of at least ``min_block`` patches with aspect ratio in [0.3, 1/0.3]
    are placed until the target is reached; a last smaller block, then single random patches,
    make the count exact. ``min_block`` is meant for BEiT's 14x14 grid and shrinks in proportion
    on smaller grids.
    """
    h, w = grid
    total = h * w
    if not 0 <= num_masked <= total:
        raise ValueError(f"cannot mask {num_masked} of {total} patches")
    min_block = max(1, min(min_block, round(min_block * total / BEIT_GRID_PATCHES)))
    mask = np.zeros((h, w), dtype=bool)
    log_aspect = (math.log(0.3), math.log(1 / 0.3))
    remaining = num_masked
    for _ in range(10 * total):
        if remaining <= 0:
            break
        area = rng.uniform(min(min_block, remaining), remaining)
        aspect = math.exp(rng.uniform(*log_aspect))
        bh = int(round(math.sqrt(area * aspect)))
        bw = int(round(math.sqrt(area / aspect)))
        if not (1 <= bh <= h and 1 <= bw <= w):
            continue
        top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        block = mask[top : top + bh, left : left + bw]
        newly_masked = bh * bw - int(block.sum())
        if 0 < newly_masked <= remaining:
            block[:] = True
            remaining -= newly_masked
    flat = mask.reshape(-1)
    if remaining > 0:  # top up with random single patches
        flat[rng.choice(np.flatnonzero(~flat), remaining, replace=False)] = True
    return flat.reshape(h, w)


def block_mask_noise(
    batch: int,
    grid: tuple[int, int],
    mask_ratio: float,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Noise whose argsort lists each sample's unmasked patches first (block-wise masks)."""
    total = grid[0] * grid[1]
    num_masked = total - num_visible(total, mask_ratio)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    rng = np.random.default_rng(seed)
    noise = np.empty((batch, total), dtype=np.float32)
    for i in range(batch):
        masked = block_mask(grid, num_masked, rng).reshape(-1)
        noise[i] = masked + rng.random(total) * 0.5  # visible (0..0.5) sort before masked (1..1.5)
    return torch.from_numpy(noise).to(device)
