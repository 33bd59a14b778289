"""Torch Datasets over reader records, a joint image/mask transform, and the P×K sampler.

Image decoding happens here, lazily; a file that fails to decode raises ``DatasetFormatError``
naming it (the error survives DataLoader workers, see ``DatasetFormatError``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import InterpolationMode, RandomErasing, RandomResizedCrop

from cgdmae.data.errors import DatasetFormatError
from cgdmae.data.records import SegRecord
from cgdmae.data.shards import read_member, split_member

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SEG_IGNORE = 255  # the mask value no loss or metric counts


def _open_decoded(
    path: str | Path, what: str, reduce: Callable[[int, int], int] | None = None
) -> Image.Image:
    try:
        source = io.BytesIO(read_member(path)) if split_member(path) else path
        with Image.open(source) as img:
            factor = reduce(*img.size) if reduce is not None else 1
            if factor > 1 and img.format == "JPEG":
                width, height = img.size  # draft's scale is min(width // w, height // h)
                img.draft(None, (width // factor, height // factor))
            img.load()  # decode now: PIL is lazy, a truncated file would fail later
            return img
    except FileNotFoundError:
        raise DatasetFormatError(f"{what} file does not exist", path) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetFormatError(f"corrupt or truncated {what} ({exc})", path) from None


DECODED_CACHE_ENV = "CGDMAE_DECODED_CACHE_MB"  # data.decoded_cache_mb, set by the job


class _DecodedImages:
    """Decoded RGB images by path, until they fill ``data.decoded_cache_mb``.

    A training job reads each image once per epoch; a set this small decodes once per process
    instead. The budget is read from the environment, so DataLoader workers and torchrun ranks
    inherit it. Only full decodes are kept (a reduced one depends on the crop)."""

    def __init__(self) -> None:
        self.images: dict[str, Image.Image] = {}
        self.nbytes = 0

    def get(self, path: str | Path) -> Image.Image | None:
        image = self.images.get(str(path))
        return image.copy() if image is not None else None

    def put(self, path: str | Path, image: Image.Image) -> None:
        size = image.width * image.height * len(image.getbands())
        budget = float(os.environ.get(DECODED_CACHE_ENV) or 0) * 2**20
        if self.nbytes + size <= budget:
            self.images[str(path)] = image.copy()
            self.nbytes += size


_DECODED = _DecodedImages()


def load_rgb(path: str | Path, reduce: Callable[[int, int], int] | None = None) -> Image.Image:
    """Decode an image as RGB; a missing, truncated or corrupt file names its path.

    ``reduce(width, height)``, called with the stored size before decoding, may ask for a JPEG
    to be decoded at 1/2, 1/4 or 1/8 of it (libjpeg's DCT scaling, PIL's ``draft``): the
    returned image is then that much smaller. Other formats decode in full. A full decode comes
    from memory when ``data.decoded_cache_mb`` holds it (:class:`_DecodedImages`)."""
    if reduce is None and (image := _DECODED.get(path)) is not None:
        return image
    image = _open_decoded(path, "image", reduce).convert("RGB")
    if reduce is None:
        _DECODED.put(path, image)
    return image


def load_mask(path: str | Path) -> Image.Image:
    """Decode a class-id mask; it must be 8-bit single-channel (L or P, ids kept as stored)."""
    mask = _open_decoded(path, "mask")
    if mask.mode not in ("L", "P"):
        raise DatasetFormatError(f"mask mode is {mask.mode}, expected 8-bit L or P", path)
    return mask


class ImageDataset(Dataset):
    """Any record list with a ``path``: the image tensor plus the record's integer fields.

    Items are dicts: ``image`` (the transform's output, or a float CHW tensor in [0, 1]),
    ``index``, and e.g. ``pid``, ``camid``, ``label``, ``color``, ``type`` for ReID records or
    ``label`` for classification records, so one collate works for every task.
    """

    def __init__(self, records: Sequence[Any], transform: Callable | None = None):
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = load_rgb(record.path)
        item: dict[str, Any] = {
            f.name: getattr(record, f.name)
            for f in fields(record)
            if isinstance(getattr(record, f.name), int)
        }
        item["image"] = self.transform(image) if self.transform else TF.to_tensor(image)
        item["index"] = index
        return item


class SegmentationTransform:
    """The same geometry on image and mask: random resized crop + flip, then ``pad`` + random
    crop and random erasing with probability ``erasing``, when training.

    The image is resized bilinearly and normalised; the mask is resized with nearest
    neighbour so class ids (and 255 = ignore) stay exact. Padding and the erased box are
    ignored in the mask: they hold no vehicle to label. Randomness comes from torch's global
    generator, which the DataLoader seeds per worker.
    """

    def __init__(
        self,
        size: tuple[int, int],
        train: bool,
        scale: tuple[float, float] = (0.5, 1.0),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        pad: int = 0,
        erasing: float = 0.0,
    ):
        self.size, self.train, self.scale = list(size), train, scale
        self.mean, self.std = list(mean), list(std)
        self.pad, self.erasing = pad, erasing

    def __call__(self, image: Image.Image, mask: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        if self.train:
            top, left, h, w = RandomResizedCrop.get_params(image, list(self.scale), [3 / 4, 4 / 3])
            image = TF.resized_crop(image, top, left, h, w, self.size, InterpolationMode.BILINEAR)
            mask = TF.resized_crop(mask, top, left, h, w, self.size, InterpolationMode.NEAREST)
            if torch.rand(()) < 0.5:
                image, mask = TF.hflip(image), TF.hflip(mask)
            if self.pad:
                top, left = (int(v) for v in torch.randint(0, 2 * self.pad + 1, (2,)))
                image = TF.crop(TF.pad(image, self.pad, fill=0), top, left, *self.size)
                mask = TF.crop(TF.pad(mask, self.pad, fill=SEG_IGNORE), top, left, *self.size)
        else:
            image = TF.resize(image, self.size, InterpolationMode.BILINEAR)
            mask = TF.resize(mask, self.size, InterpolationMode.NEAREST)
        tensor = TF.normalize(TF.to_tensor(image), self.mean, self.std)
        target = torch.from_numpy(np.array(mask, dtype=np.int64))
        if self.train and self.erasing and torch.rand(()) < self.erasing:
            top, left, h, w, _ = RandomErasing.get_params(
                tensor, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=[0.0]
            )
            tensor[:, top : top + h, left : left + w] = 0.0
            target[top : top + h, left : left + w] = SEG_IGNORE
        return tensor, target


class SegmentationDataset(Dataset):
    """Image/mask pairs as ``{"image", "mask", "index"}``; ``mask`` is int64 [H, W].

    ``transform(image, mask)`` takes both PIL images and returns both tensors, so flips and
    crops hit both alike (see ``SegmentationTransform``). Without one, the image becomes a
    float tensor in [0, 1] at its own size.
    """

    def __init__(self, records: Sequence[SegRecord], transform: Callable | None = None):
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image, mask = load_rgb(record.image), load_mask(record.mask)
        if mask.size != image.size:
            raise DatasetFormatError(
                f"mask size {mask.size} (w, h) differs from image {record.image} "
                f"of size {image.size}",
                record.mask,
            )
        if self.transform:
            image_tensor, mask_tensor = self.transform(image, mask)
        else:
            image_tensor = TF.to_tensor(image)
            mask_tensor = torch.from_numpy(np.array(mask, dtype=np.int64))
        return {"image": image_tensor, "mask": mask_tensor, "index": index}


class RandomIdentitySampler(Sampler[int]):
    """P identities × K images per batch (BoT's PK sampler), reshuffled by ``set_epoch``.

    Use with ``DataLoader(batch_size=p * k, sampler=..., drop_last=True)``. Each epoch splits
    every identity's images into chunks of K (an identity with fewer than K images is drawn
    with replacement; a leftover short chunk is dropped), then fills batches with chunks of P
    distinct identities. The number of batches is fixed (chunks // P), so a training engine
    can size its lr schedule; when the greedy filling runs out of distinct identities early,
    the last batches draw P random identities afresh. The order is a pure function of
    (seed, epoch), and ``set_epoch(epoch, skip_batches)`` lets a resumed run skip the batches
    it had already trained on.
    """

    def __init__(self, pids: Sequence[int], p: int, k: int, seed: int = 0):
        if p < 1 or k < 1:
            raise ValueError(f"PK sampler needs p >= 1 and k >= 1, got p={p}, k={k}")
        self.by_pid: dict[int, list[int]] = {}
        for index, pid in enumerate(pids):
            self.by_pid.setdefault(int(pid), []).append(index)
        if len(self.by_pid) < p:
            raise ValueError(
                f"PK sampler needs at least P={p} identities, the data has {len(self.by_pid)}"
            )
        self.p, self.k, self.seed, self.epoch, self.skip_batches = p, k, seed, 0, 0
        chunks = sum(max(len(items) // k, 1) for items in self.by_pid.values())
        self.batches_per_epoch = chunks // p
        self.steps_per_epoch = self.batches_per_epoch  # one optimizer step per batch
        self._cached: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches

    def _chunk(self, rng: np.random.Generator, pid: int) -> list[int]:
        return [int(i) for i in rng.choice(self.by_pid[pid], self.k)]

    def batches(self) -> list[list[int]]:
        """This epoch's batches, each P×K dataset indices (K consecutive per identity)."""
        if self._cached is not None and self._cached[0] == self.epoch:
            return self._cached[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks: dict[int, list[list[int]]] = {}
        for pid, items in self.by_pid.items():
            picks = rng.permutation(items) if len(items) >= self.k else rng.choice(items, self.k)
            usable = len(picks) - len(picks) % self.k
            chunks[pid] = [
                [int(i) for i in picks[s : s + self.k]] for s in range(0, usable, self.k)
            ]
        available = sorted(chunks)
        pids = sorted(self.by_pid)
        batches = []
        while len(batches) < self.batches_per_epoch:
            if len(available) >= self.p:
                chosen = [available[int(i)] for i in rng.choice(len(available), self.p, False)]
            else:
                chosen = [pids[int(i)] for i in rng.choice(len(pids), self.p, replace=False)]
            batch = []
            for pid in chosen:
                batch += chunks[pid].pop() if chunks[pid] else self._chunk(rng, pid)
                if pid in available and not chunks[pid]:
                    available.remove(pid)
            batches.append(batch)
        self._cached = (self.epoch, batches)
        return batches

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches()[self.skip_batches :]:
            yield from batch

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip_batches) * self.p * self.k
