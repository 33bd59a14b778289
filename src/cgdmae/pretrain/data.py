"""Pre-training data: MAE's augmentation, reproducible per (seed, epoch, index), and cached views.

Every random draw comes from a generator seeded by (seed, epoch, index), so a sample does not
depend on worker count or on where a resumed run restarts. The engine passes the epoch with
each index, ``(epoch, index)``, so loader workers can persist across epochs (a worker's copy
of the dataset never sees ``set_epoch``); a bare index uses the epoch ``set_epoch`` set.

Teacher inputs: with cached targets, the loader picks one of the K precomputed views, applies
exactly the crop the teacher saw and returns its embedding as ``teacher_embed``. Online, no
second image is returned: the method undoes the ImageNet normalisation of ``image`` (the crop
in [0, 1], up to float rounding) and the teacher resizes it to its own input size, which is
also what the cache was computed from, so both modes give the teacher the same pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode

from cgdmae.data import DatasetFormatError, load_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Crop:
    """A RandomResizedCrop draw in source-image pixels, plus the flip."""

    top: int
    left: int
    height: int
    width: int
    flip: bool

    def as_row(self) -> list[int]:
        return [self.top, self.left, self.height, self.width, int(self.flip)]


def sample_crop(
    rng: np.random.Generator,
    width: int,
    height: int,
    scale: tuple[float, float],
    hflip: bool = True,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Crop:
    """torchvision's RandomResizedCrop parameters (w/h ``ratio``, log-uniform), from ``rng``.

    After ten misses it falls back, as torchvision does, to the whole image clipped to the
    ratio range (for a pedestrian-shaped range, not a central square).
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return Crop(top, left, h, w, hflip and bool(rng.random() < 0.5))
    w, h = width, height
    if width / height < min(ratio):
        h = int(round(w / min(ratio)))
    elif width / height > max(ratio):
        w = int(round(h * max(ratio)))
    return Crop((height - h) // 2, (width - w) // 2, h, w, hflip and bool(rng.random() < 0.5))


def crop_image(image: Image.Image, crop: Crop, size: tuple[int, int]) -> Image.Image:
    """Crop, resize (bicubic) and flip a PIL image, staying in PIL for photometric transforms."""
    out = TF.resized_crop(
        image,
        crop.top,
        crop.left,
        crop.height,
        crop.width,
        list(size),
        InterpolationMode.BICUBIC,
        antialias=True,
    )
    return TF.hflip(out) if crop.flip else out


def apply_crop(
    image: Image.Image, crop: Crop, size: tuple[int, int], factor: int = 1
) -> torch.Tensor:
    """:func:`crop_image` as a [0, 1] float tensor. ``crop`` is in the stored image's pixels;
    on an image decoded at 1/``factor`` of them (:func:`load_for_crop`) its box scales with
    them, and the crop is resampled (bicubic) from the reduced pixels."""
    if factor == 1:
        return TF.to_tensor(crop_image(image, crop, size))
    box = (crop.left, crop.top, crop.left + crop.width, crop.top + crop.height)
    out = image.resize((size[1], size[0]), Image.Resampling.BICUBIC,
                       box=tuple(v / factor for v in box))  # fmt: skip
    return TF.to_tensor(TF.hflip(out) if crop.flip else out)


def draft_factor(crop: Crop, size: tuple[int, int]) -> int:
    """The JPEG reduction (1, 2, 4 or 8) a crop may be decoded at: the largest at which it
    still spans at least ``size`` pixels both ways, so the resize to ``size`` still shrinks
    it. libjpeg's DCT scaling averages the pixels the bicubic resize would blend anyway; the
    view is close to, not bit-equal to, a full decode's."""
    for factor in (8, 4, 2):
        if crop.height >= size[0] * factor and crop.width >= size[1] * factor:
            return factor
    return 1


def load_for_crop(
    path: str | Path, draw: Callable[[int, int], Crop], size: tuple[int, int], draft: bool
) -> tuple[Image.Image, Crop, int, tuple[int, int]]:
    """Decode ``path`` for the crop ``draw(width, height)`` picks from its stored size: the
    image, the crop, the reduction it was decoded at and the stored size. With ``draft`` a
    JPEG is decoded at the crop's :func:`draft_factor`, a function of the crop alone, so the
    teacher-target job and the student decode a cached view alike; else (or for a PNG) in
    full, factor 1 (from memory, with ``data.decoded_cache_mb``)."""
    if not draft:
        image = load_rgb(path)
        return image, draw(image.width, image.height), 1, image.size
    drawn: list[Any] = []

    def reduce(width: int, height: int) -> int:
        drawn.extend([draw(width, height), (width, height)])
        return draft_factor(drawn[0], size)

    image = load_rgb(path, reduce)
    crop, (width, height) = drawn
    return image, crop, round(width / image.width), (width, height)


def normalize(images01: torch.Tensor) -> torch.Tensor:
    return TF.normalize(images01, IMAGENET_MEAN, IMAGENET_STD)


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Back to [0, 1]: the teacher normalises with its own statistics."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return images * std + mean


@dataclass
class TeacherTargets:
    """K cached views per image: crop rows (top, left, h, w, flip) and L2-normalised embeddings."""

    paths: list[str]
    crops: torch.Tensor  # int32 [N, K, 5]
    embeds: torch.Tensor  # float16 [N, K, C]
    # the student's resolution and crop-scale range the views were made for (absent in old caches)
    img_size: tuple[int, int] | None = None
    scale: tuple[float, float] | None = None
    draft: bool = False  # the views were decoded at their crops' JPEG reductions

    @classmethod
    def load(cls, path: str | Path) -> TeacherTargets:
        """Read a cache written by ``cache_teacher_targets``; a malformed one names the file.

        The tensors are memory-mapped from the file, not read: the ranks of a DDP job and
        their loader workers share one copy in the page cache (a million images × 4 views is
        6 GB of embeddings), and each reads only the rows it draws."""
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            targets = cls(list(data["paths"]), data["crops"], data["embeds"])
            if "img_size" in data:
                targets.img_size = tuple(int(v) for v in data["img_size"])
                targets.scale = tuple(float(v) for v in data["scale"])
            targets.draft = bool(data.get("draft", False))
        except (OSError, KeyError, TypeError, RuntimeError, EOFError) as exc:
            raise DatasetFormatError(f"not a readable teacher-target cache ({exc})", path) from None
        n = len(targets.paths)
        if targets.crops.ndim != 3 or targets.crops.shape[0] != n or targets.crops.shape[2] != 5:
            raise DatasetFormatError(
                f"'crops' has shape {tuple(targets.crops.shape)}, expected [{n}, views, 5]", path
            )
        if targets.embeds.ndim != 3 or targets.embeds.shape[:2] != targets.crops.shape[:2]:
            raise DatasetFormatError(
                f"'embeds' has shape {tuple(targets.embeds.shape)}, expected "
                f"[{n}, {targets.crops.shape[1]}, dim]",
                path,
            )
        return targets

    def first_views(self, views: int, source: str | Path | None = None) -> TeacherTargets:
        """The store's first ``views`` views of each image: view k is drawn from (seed, image, k)
        alone, so they are exactly the views a ``views``-view store holds."""
        held = self.crops.shape[1]
        if not 1 <= views <= held:
            raise DatasetFormatError(
                f"the run trains on {views} cached views per image, the store holds {held}",
                source or "teacher targets",
            )
        return replace(self, crops=self.crops[:, :views], embeds=self.embeds[:, :views])


class PretrainDataset(Dataset):
    """Images for pre-training with MAE's RandomResizedCrop (bicubic) + flip, normalised."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        img_size: tuple[int, int] = (64, 64),
        scale: tuple[float, float] = (0.2, 1.0),
        hflip: bool = True,
        seed: int = 0,
        targets: TeacherTargets | None = None,
        targets_file: str | Path | None = None,
        draft: bool = False,
    ):
        self.paths = [Path(p) for p in paths]
        self.draft = draft
        self.img_size, self.scale, self.hflip, self.seed = (
            tuple(img_size),
            tuple(scale),
            hflip,
            seed,
        )
        self.targets, self.targets_file = targets, targets_file
        self.epoch = 0
        if targets is not None:
            self._check_targets(targets, targets_file)

    def _check_targets(self, targets: TeacherTargets, source: str | Path | None) -> None:
        made_for = (targets.img_size, targets.scale)
        if targets.img_size is not None and made_for != (self.img_size, self.scale):
            raise DatasetFormatError(
                f"teacher targets were made for img_size {list(targets.img_size)} and crop_scale "
                f"{list(targets.scale)}; this run crops at img_size {list(self.img_size)} and "
                f"crop_scale {list(self.scale)}: its targets must be cached for its own crops",
                source,
            )
        if targets.draft != self.draft:
            made, run = ("reduced", "full") if targets.draft else ("full", "reduced")
            raise DatasetFormatError(
                f"teacher targets were made from {made}-size JPEG decodes; this run decodes at "
                f"{run} size (pretrain.decode_draft): the student must see the teacher's pixels",
                source,
            )
        if len(targets.paths) != len(self.paths):
            raise DatasetFormatError(
                f"teacher targets cover {len(targets.paths)} images but the pre-training set has {len(self.paths)}",
                source,
            )
        for k, (cached, path) in enumerate(zip(targets.paths, self.paths, strict=True)):
            if Path(cached).name != path.name:
                raise DatasetFormatError(
                    f"teacher target {k} is for {cached}, the image is {path}", source
                )

    epoch_in_index = True  # the engine may send (epoch, index) keys to persistent workers

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng_for(self, key: int | tuple[int, int]) -> tuple[int, np.random.Generator]:
        """The image index of a loader key and the generator of its (seed, epoch, index)."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        return index, np.random.default_rng([self.seed, epoch, index])

    def crop_summary(self, epochs: int) -> str:
        """How many distinct crops a run of ``epochs`` epochs trains on, for its log: the cached
        views (each epoch draws one of them per image), or a fresh crop per image and epoch."""
        n = len(self.paths)
        if self.targets is None:
            return (
                f"distinct crops: {n * epochs} (a fresh random crop of each of {n} images in "
                f"each of {epochs} epochs)"
            )
        distinct = sum(len(torch.unique(rows, dim=0)) for rows in self.targets.crops)
        views = self.targets.crops.shape[1]
        return (
            f"distinct crops: {distinct} ({views} fixed cached views of each of {n} images, "
            f"one drawn per image in each of {epochs} epochs)"
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, rng = self.rng_for(key)
        item: dict[str, Any] = {"index": index}
        if self.targets is not None:
            view = int(rng.integers(self.targets.crops.shape[1]))
            top, left, height, width, flip = (int(v) for v in self.targets.crops[index, view])
            cached = Crop(top, left, height, width, bool(flip))
            item["teacher_embed"] = self.targets.embeds[index, view].float()
            image, crop, factor, (full_w, full_h) = load_for_crop(
                self.paths[index], lambda w, h: cached, self.img_size, self.draft
            )
            if top < 0 or left < 0 or top + height > full_h or left + width > full_w:
                raise DatasetFormatError(
                    f"cached crop (top {top}, left {left}, {height}x{width}) of image {index} "
                    f"view {view} lies outside {self.paths[index]} ({full_h}x{full_w})",
                    self.targets_file,
                )
        else:
            image, crop, factor, _ = load_for_crop(
                self.paths[index],
                lambda w, h: sample_crop(rng, w, h, self.scale, self.hflip),
                self.img_size,
                self.draft,
            )
        item["image"] = normalize(apply_crop(image, crop, self.img_size, factor))
        return item
