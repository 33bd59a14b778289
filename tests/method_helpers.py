"""Shared by the methods' tests: noise images on disk, a SIGTERM at a chosen sample, and log
rows to compare."""

import os
import signal

import numpy as np
import torch
from PIL import Image

# two short epochs with a warm-up that ends mid-epoch, so a resume crosses the schedule's kink
RESUME_CFG = dict(epochs=2, batch_size=2, blr=0.1, warmup_epochs=0.5, seed=1, device="cpu")


class Interrupt(torch.utils.data.Dataset):
    """A dataset that sends this process SIGTERM at one ``__getitem__`` call of one epoch."""

    def __init__(self, inner, at):
        self.inner, self.at, self.epoch, self.calls = inner, at, 0, 0

    def __len__(self):
        return len(self.inner)

    def set_epoch(self, epoch):
        self.inner.set_epoch(epoch)
        self.epoch, self.calls = epoch, 0

    def __getitem__(self, index):
        self.calls += 1
        if (self.epoch, self.calls) == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.inner[index]


def without_timing(rows):
    """Log rows without the wall-clock columns, which differ between any two runs."""
    return [{k: v for k, v in row.items() if k not in ("img_per_s", "seconds")} for row in rows]


def write_noise_images(root, n: int = 8, shape: tuple[int, int] = (60, 30)) -> list:
    """``n`` PNGs of uniform noise, ``shape`` (height, width), as a tiny pre-training pool."""
    rng = np.random.default_rng(0)
    paths = []
    for k in range(n):
        path = root / f"{k}.png"
        Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths
