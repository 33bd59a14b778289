"""Views for the seed methods: PersonMAE's cross-region pairs and DINO/iBOT multi-crop.

Like :class:`~cgdmae.pretrain.data.PretrainDataset`, every random draw comes from a generator
seeded by (seed, epoch, index), so the views do not depend on worker count or on where a resumed
run restarts.

Cross-region generation (PersonMAE, Eq. 1–2): the crop of the image is resized to
[H + p, W + p_w] with p drawn from [0, m]; RegionA is the H×W window at the origin and RegionB
the H×W window at (s_h, s_w), s_h ∈ [0, p], s_w ∈ [0, p_w]. The paper writes p_w = p/2 for its
256×128 person crops; we use p_w = round(p · W / H), which is the same there and shifts square
vehicle crops equally in both directions.

Multi-crop (DINO, with PersonViT's ranges): two global views and N local ones, each a
RandomResizedCrop with its own scale range and an aspect-ratio (width / height) range, then
DINO's photometric augmentation. The global views also carry the block-wise MIM masks of the
student (iBOT's random MIM: each view is masked with probability ``mask_prob``, with a ratio drawn
from ``mask_ratio``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter, ImageOps

from cgdmae.data import load_rgb
from cgdmae.models import block_mask
from cgdmae.pretrain.data import (
    PretrainDataset,
    apply_crop,
    crop_image,
    normalize,
    sample_crop,
)

# PersonViT's multi-crop (Table 3, best row): scale ranges relative to the image, w/h 3/8–2/3
GLOBAL_SCALE = (0.4, 1.0)
LOCAL_SCALE = (0.1, 0.8)
PERSON_RATIO = (3 / 8, 2 / 3)


# ---- cross-region pairs (PersonMAE) -------------------------------------------------------------
def draw_shift(
    rng: np.random.Generator, max_shift: int, size: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((H + p, W + p_w), (s_h, s_w))``: the resize target and RegionB's corner, in pixels."""
    height, width = size
    p = int(rng.integers(0, max_shift + 1))
    p_w = int(round(p * width / height))
    corner = (int(rng.integers(0, p + 1)), int(rng.integers(0, p_w + 1)))
    return (height + p, width + p_w), corner


def cross_regions(
    resized: torch.Tensor, size: tuple[int, int], corner: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """RegionA (the window at the origin) and RegionB (the window at ``corner``) of one image."""
    height, width = size
    top, left = corner
    if top + height > resized.shape[-2] or left + width > resized.shape[-1]:
        raise ValueError(
            f"RegionB at {corner} of size {size} lies outside the {tuple(resized.shape[-2:])} image"
        )
    return resized[..., :height, :width], resized[..., top : top + height, left : left + width]


class CrossRegionDataset(PretrainDataset):
    """PersonMAE's inputs: ``image`` (RegionA), ``target`` (RegionB), ``shift`` (s_h, s_w) px.

    The "global pedestrian image" is MAE's RandomResizedCrop + flip of the source (the paper uses
    random cropping and flipping only); the cross-region pair is cut from it after the resize.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        img_size: tuple[int, int] = (64, 64),
        scale: tuple[float, float] = (0.2, 1.0),
        max_shift: int = 64,
        hflip: bool = True,
        seed: int = 0,
    ):
        super().__init__(paths, img_size=img_size, scale=scale, hflip=hflip, seed=seed)
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0 pixels, got {max_shift}")
        self.max_shift = max_shift

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, rng = self.rng_for(key)
        image = load_rgb(self.paths[index])
        crop = sample_crop(rng, image.width, image.height, self.scale, self.hflip)
        resize_to, corner = draw_shift(rng, self.max_shift, self.img_size)
        region_a, region_b = cross_regions(
            apply_crop(image, crop, resize_to), self.img_size, corner
        )
        return {
            "index": index,
            "image": normalize(region_a),
            "target": normalize(region_b),
            "shift": torch.tensor(corner, dtype=torch.float32),
        }


# ---- multi-crop (DINO / PersonViT) --------------------------------------------------------------
def color_augment(
    image: Image.Image, rng: np.random.Generator, blur_p: float, solarize_p: float
) -> Image.Image:
    """DINO's colour augmentation: jitter (p 0.8, random order), grey (p 0.2), blur, solarize."""
    if rng.random() < 0.8:
        jitters = [
            lambda im: TF.adjust_brightness(im, rng.uniform(0.6, 1.4)),
            lambda im: TF.adjust_contrast(im, rng.uniform(0.6, 1.4)),
            lambda im: TF.adjust_saturation(im, rng.uniform(0.8, 1.2)),
            lambda im: TF.adjust_hue(im, rng.uniform(-0.1, 0.1)),
        ]
        for k in rng.permutation(len(jitters)):
            image = jitters[k](image)
    if rng.random() < 0.2:
        image = TF.rgb_to_grayscale(image, num_output_channels=3)
    if rng.random() < blur_p:
        image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.1, 2.0)))
    if rng.random() < solarize_p:
        image = ImageOps.solarize(image, threshold=128)
    return image


class MultiCropDataset(PretrainDataset):
    """DINO views: ``global_views`` [2, 3, H, W], ``local_views`` [N, 3, h, w] and the student's
    MIM masks ``global_masks`` [2, H/T, W/T] (True = masked).

    DINO's blur/solarize split: the first global view is always blurred, the second rarely and
    sometimes solarized, local views blurred half the time. ``photometric=False`` keeps crops and
    flips only (for tests, or data where colour is the identity cue).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        img_size: tuple[int, int] = (256, 128),
        patch_size: int = 16,
        *,
        local_size: tuple[int, int] = (96, 64),
        local_views: int = 6,
        global_scale: tuple[float, float] = GLOBAL_SCALE,
        local_scale: tuple[float, float] = LOCAL_SCALE,
        ratio: tuple[float, float] = PERSON_RATIO,
        mask_ratio: tuple[float, float] = (0.1, 0.5),
        mask_prob: float = 0.5,
        photometric: bool = True,
        hflip: bool = True,
        seed: int = 0,
    ):
        super().__init__(paths, img_size=img_size, scale=global_scale, hflip=hflip, seed=seed)
        for name, size in (("global", self.img_size), ("local", tuple(local_size))):
            if any(s % patch_size for s in size):
                raise ValueError(f"{name} size {size} is not divisible by the patch {patch_size}")
        if not 0 <= mask_ratio[0] <= mask_ratio[1] < 1:
            raise ValueError(f"mask_ratio must be a range inside [0, 1), got {mask_ratio}")
        self.grid = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self.local_size, self.local_views = tuple(local_size), local_views
        self.local_scale, self.ratio = tuple(local_scale), tuple(ratio)
        self.mask_ratio, self.mask_prob = tuple(mask_ratio), mask_prob
        self.photometric = photometric

    def view(
        self,
        image: Image.Image,
        rng: np.random.Generator,
        size: tuple[int, int],
        scale: tuple[float, float],
        blur_p: float,
        solarize_p: float,
    ) -> torch.Tensor:
        crop = sample_crop(rng, image.width, image.height, scale, self.hflip, self.ratio)
        out = crop_image(image, crop, size)
        if self.photometric:
            out = color_augment(out, rng, blur_p, solarize_p)
        return normalize(TF.to_tensor(out))

    def mim_mask(self, rng: np.random.Generator) -> np.ndarray:
        """A block-wise mask of the global grid, empty with probability 1 − ``mask_prob``."""
        total = self.grid[0] * self.grid[1]
        if rng.random() >= self.mask_prob:
            return np.zeros(self.grid, dtype=bool)
        return block_mask(self.grid, int(round(rng.uniform(*self.mask_ratio) * total)), rng)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, rng = self.rng_for(key)
        image = load_rgb(self.paths[index])
        global_views = [
            self.view(image, rng, self.img_size, self.scale, blur_p, solarize_p)
            for blur_p, solarize_p in ((1.0, 0.0), (0.1, 0.2))
        ]
        local_views = [
            self.view(image, rng, self.local_size, self.local_scale, 0.5, 0.0)
            for _ in range(self.local_views)
        ]
        masks = np.stack([self.mim_mask(rng) for _ in global_views])
        return {
            "index": index,
            "global_views": torch.stack(global_views),
            "local_views": torch.stack(local_views)
            if local_views
            else torch.empty(0, 3, *self.local_size),
            "global_masks": torch.from_numpy(masks),
        }
