"""Torch Datasets over reader records, and the P×K identity sampler for ReID batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from cgdmae.data.records import DatasetFormatError, SegRecord


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image as RGB; a truncated or corrupt file raises an error naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetFormatError(f"corrupt or truncated image ({exc})", path) from None


class ImageDataset(Dataset):
    """Any record list with a ``path``: returns the image and the record's integer fields."""

    def __init__(self, records: Sequence[Any], transform: Callable | None = None):
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = load_rgb(record.path)
        item = {k: v for k, v in asdict(record).items() if isinstance(v, int)}
        item["image"] = self.transform(image) if self.transform else image
        item["index"] = index
        return item


class SegmentationDataset(Dataset):
    """Image and mask pairs; ``transform(image, mask)`` applies the same geometry to both."""

    def __init__(self, records: Sequence[SegRecord], transform: Callable | None = None):
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = load_rgb(record.image)
        try:
            with Image.open(record.mask) as m:
                mask = np.array(m)
        except (OSError, SyntaxError, ValueError) as exc:
            raise DatasetFormatError(f"corrupt or truncated mask ({exc})", record.mask) from None
        if mask.shape != (image.height, image.width):
            raise DatasetFormatError(
                f"mask shape {mask.shape} differs from its image {record.image} "
                f"of shape {(image.height, image.width)}",
                record.mask,
            )
        if self.transform:
            image, mask = self.transform(image, mask)
        else:
            mask = torch.from_numpy(mask.astype(np.int64))
        return {"image": image, "mask": mask, "index": index}


class RandomIdentitySampler(Sampler[int]):
    """P identities × K images per batch (BoT's PK sampler), reshuffled each epoch.

    Identities with fewer than K images are sampled with replacement. The order is a
    function of (seed, epoch), so a resumed fine-tuning run sees the same batches.
    """

    def __init__(self, pids: Sequence[int], p: int, k: int, seed: int = 0):
        self.by_pid: dict[int, list[int]] = {}
        for index, pid in enumerate(pids):
            self.by_pid.setdefault(int(pid), []).append(index)
        if len(self.by_pid) < p:
            raise ValueError(
                f"PK sampler needs at least P={p} identities, the data has {len(self.by_pid)}"
            )
        self.p, self.k, self.seed, self.epoch = p, k, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks: dict[int, list[list[int]]] = {}
        for pid, items in self.by_pid.items():
            picks = rng.permutation(items) if len(items) >= self.k else rng.choice(items, self.k)
            usable = len(picks) - len(picks) % self.k
            chunks[pid] = [
                [int(i) for i in picks[s : s + self.k]] for s in range(0, usable, self.k)
            ]
        available = sorted(chunks)
        batches = []
        while len(available) >= self.p:
            chosen = [available[int(i)] for i in rng.choice(len(available), self.p, replace=False)]
            batch = []
            for pid in chosen:
                batch += chunks[pid].pop()
                if not chunks[pid]:
                    available.remove(pid)
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[int]:
        for batch in self._batches():
            yield from batch

    def __len__(self) -> int:
        return len(self._batches()) * self.p * self.k
