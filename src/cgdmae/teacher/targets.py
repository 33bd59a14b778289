"""Cached teacher targets: K fixed augmented views per image, the crop of each and the
teacher's embedding of it, made once (in resumable chunks, optionally over shard jobs) so that
pre-training reads them instead of running the teacher."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from cgdmae.files import atomic_write, chunk_starts
from cgdmae.models import atomic_save
from cgdmae.pretrain.data import Crop, apply_crop, draft_factor, load_for_crop, sample_crop
from cgdmae.teacher.clip import Teacher

log = logging.getLogger(__name__)


class TargetViews(Dataset):
    """The K fixed views of each image, decoded in loader workers. A view's crop is drawn from
    (seed, image, view) alone, so the views do not depend on the worker count or order.

    With ``draft`` each view is cut from the image decoded at its own crop's JPEG reduction,
    as the student decodes it (``PretrainDataset(draft=True)``): one decode per reduction the
    views need."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        views: int,
        img_size: tuple[int, int],
        scale: tuple[float, float],
        seed: int,
        hflip: bool = True,
        draft: bool = False,
    ):
        self.paths, self.views, self.img_size = list(paths), views, tuple(img_size)
        self.scale, self.seed, self.hflip, self.draft = tuple(scale), seed, hflip, draft

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        crops: list[Crop] = []

        def draw(width: int, height: int) -> Crop:
            for k in range(self.views):
                rng = np.random.default_rng([self.seed, 7919, i, k])
                crops.append(sample_crop(rng, width, height, self.scale, self.hflip))
            return crops[0]

        image, _, factor, _ = load_for_crop(self.paths[i], draw, self.img_size, self.draft)
        decoded = {self._reduction(crops[0]): (image, factor)}
        views = []
        for crop in crops:
            wanted = self._reduction(crop)
            if wanted not in decoded:
                image, _, factor, _ = load_for_crop(
                    self.paths[i], lambda w, h, crop=crop: crop, self.img_size, self.draft
                )
                decoded[wanted] = (image, factor)
            image, factor = decoded[wanted]
            views.append(apply_crop(image, crop, self.img_size, factor))
        rows = torch.tensor([crop.as_row() for crop in crops], dtype=torch.int32)
        return i, rows, torch.stack(views)

    def _reduction(self, crop: Crop) -> int:
        return draft_factor(crop, self.img_size) if self.draft else 1


def cache_teacher_targets(
    teacher: Teacher,
    paths: Sequence[str | Path],
    out_path: str | Path,
    *,
    views: int,
    img_size: tuple[int, int],
    scale: tuple[float, float],
    seed: int,
    hflip: bool = True,
    batch_size: int = 128,
    num_workers: int = 0,
    chunk_batches: int = 64,
    shard: int = 0,
    shards: int = 1,
    draft: bool = False,
) -> None:
    """For K fixed augmented views per image: the crop and the teacher's unit-norm embedding.
    With ``draft``, each view is decoded at its crop's JPEG reduction, as a run with
    ``decode_draft`` decodes it (the store then records ``draft``).

    Saved as ``{"paths", "crops": int32 [N, K, 5] (top, left, height, width, flip),
    "embeds": float16 [N, K, C], "views"}``. The teacher sees the crop at the student's
    resolution (then resized to its own), exactly what the online mode gives it, so cached and
    online targets agree. Images are decoded and cropped by ``num_workers`` loader workers (the
    teacher's forward is 7× faster than one process decodes, docs/benchmarks.md); on a GPU the
    teacher runs under bf16 autocast, as the engine's autocast runs an online teacher.

    The work is committed in chunks of ``chunk_batches`` batches to ``<out>.partial/``, each
    written atomically: a job killed by its time limit resumes at its first missing chunk (a
    million images take hours), and the result is the one file an uninterrupted job writes,
    bit for bit. Chunks made under other inputs (images, views, crops, seed, batch, teacher
    weights) are discarded, not mixed in. With ``shards`` > 1 this job makes every
    ``shards``-th chunk from ``shard`` on and writes them as a shard file, which
    :func:`gather_teacher_targets` joins with the others into the store.
    """
    out_path = Path(out_path)
    partial = out_path.with_name(out_path.name + ".partial")
    per_batch = max(1, batch_size // views)
    chunk, starts = chunk_starts(len(paths), per_batch, chunk_batches, shard, shards)
    settings = (views, img_size, scale, seed, hflip, per_batch, chunk) + (
        ("draft",) if draft else ()
    )
    _clear_unless(partial, _targets_identity(teacher, paths, *settings))
    dataset = TargetViews(paths, views, img_size, scale, seed, hflip, draft)
    device = teacher.mean.device
    for start in tqdm(starts, desc="teacher targets", unit="chunk", disable=None):
        target = partial / f"{start:09d}.pt"
        if target.exists():
            continue
        indices = range(start, min(start + chunk, len(paths)))
        loader = DataLoader(
            torch.utils.data.Subset(dataset, indices),
            batch_size=per_batch,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
        )
        crops, embeds = [], []
        for _, rows, images in loader:
            batch = images.flatten(0, 1).to(device, non_blocking=True)
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                out = teacher.encode_image(batch).half().cpu()
            crops.append(rows)
            embeds.append(out.view(len(rows), views, -1))
        state = {"start": start, "crops": torch.cat(crops), "embeds": torch.cat(embeds)}
        atomic_write(target, lambda f, state=state: torch.save(state, f))
    store = {
        "paths": [str(p) for p in paths],
        "views": views,
        "img_size": [int(v) for v in img_size],
        "scale": [float(v) for v in scale],
    } | ({"draft": True} if draft else {})
    chunks = [torch.load(partial / f"{start:09d}.pt", weights_only=True) for start in starts]
    if shards == 1:
        _save_store(store, chunks, out_path)
    else:
        atomic_save({**store, "shard": [shard, shards], "chunks": chunks}, out_path)
    shutil.rmtree(partial)


def gather_teacher_targets(shard_files: Sequence[str | Path], out_path: str | Path) -> None:
    """One store from the shard files of ``cache_teacher_targets(shard=i, shards=n)``: the file
    one job over all the images writes, bit for bit (the same chunks, the same batches)."""
    parts = [torch.load(f, weights_only=True) for f in shard_files]
    keys = ("paths", "views", "img_size", "scale", "draft")
    settings = [{k: p[k] for k in keys if k in p} for p in parts]
    count = len(parts)
    got = sorted(tuple(p["shard"]) for p in parts)
    if got != [(i, count) for i in range(count)] or any(s != settings[0] for s in settings):
        raise ValueError(
            f"{', '.join(map(str, shard_files))}: not the {count} shards of one target store "
            f"(shards {got}); delete them and re-run teacher_targets"
        )
    chunks = sorted((c for p in parts for c in p["chunks"]), key=lambda c: c["start"])
    _save_store(settings[0], chunks, out_path)


def _save_store(store: dict[str, Any], chunks: list[dict[str, Any]], out_path: Path) -> None:
    atomic_save(
        {
            **store,
            "crops": torch.cat([c["crops"] for c in chunks]),
            "embeds": torch.cat([c["embeds"] for c in chunks]),
        },
        out_path,
    )


def _targets_identity(teacher: Teacher, paths: Sequence[str | Path], *settings: Any) -> str:
    """A digest of what a target chunk depends on: the image list, the view settings and
    batching (batch composition can change the last bit of a forward), and the teacher's
    weights (a sample of each tensor: different weights differ everywhere)."""
    digest = hashlib.sha256(json.dumps([[str(p) for p in paths], repr(settings)]).encode())
    for name, tensor in sorted(teacher.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().flatten()[:64].float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _clear_unless(partial: Path, identity: str) -> None:
    """Keep ``partial``'s chunks only when they were made for ``identity``."""
    stamp = partial / "identity.txt"
    if partial.exists() and (not stamp.exists() or stamp.read_text() != identity):
        log.warning("%s: chunks made for other inputs; starting over", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    stamp.write_text(identity)
