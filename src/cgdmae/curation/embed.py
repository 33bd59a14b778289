"""Embed the pool once, resumably: float16 chunks, then one .npy written atomically."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from tqdm import tqdm

from cgdmae.data import load_rgb
from cgdmae.files import atomic_write, chunk_starts, save_npy

log = logging.getLogger(__name__)
Encoder = Callable[[torch.Tensor], torch.Tensor]  # [B, 3, H, W] in [0, 1] -> [B, D]


def teacher_encoder(model_dir: str | Path) -> tuple[Encoder, int]:
    """The CLIP teacher's image tower (L2-normalised embeddings) and its input size."""
    from cgdmae.teacher.clip import load_teacher

    teacher = load_teacher(model_dir, "cuda" if torch.cuda.is_available() else "cpu")
    return teacher.encode_image, teacher.image_size


@torch.no_grad()
def embed_images(
    paths: Sequence[str | Path],
    encode: Encoder,
    image_size: int,
    out: str | Path,
    *,
    batch_size: int = 256,
    chunk_batches: int = 8,
    skip: Sequence[str | Path] = (),
    shard: int = 0,
    shards: int = 1,
) -> np.ndarray:
    """Embeddings [n, D] float16 of ``paths``, in order, written to ``out`` (.npy); the rows
    of the paths in ``skip`` (images that do not decode, under ``data.on_corrupt: skip``) are
    NaN, which curation leaves out of every subset.

    Work goes into ``<out>.partial/`` one chunk of ``chunk_batches`` batches at a time, each
    chunk saved atomically; a killed job resumes from the chunks already there. With
    ``shards`` > 1 this job embeds every ``shards``-th chunk from ``shard`` on and writes them
    to ``out`` as a shard file (.npz), which :func:`gather_embeddings` joins with the others.
    """
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    chunk, starts = chunk_starts(len(paths), batch_size, chunk_batches, shard, shards)
    device = next((p.device for p in getattr(encode, "__self__", torch.nn.Module()).parameters()),
                  torch.device("cpu"))  # fmt: skip
    skipped = {str(p) for p in skip}
    for start in tqdm(starts, desc="embedding", unit="chunk", disable=None):
        target = partial / f"{start:09d}.npy"
        if target.exists():
            continue
        pieces = []
        for offset in range(start, min(start + chunk, len(paths)), batch_size):
            names = paths[offset : offset + batch_size]
            good = [k for k, p in enumerate(names) if str(p) not in skipped]
            batch = [TF.to_tensor(TF.resize(load_rgb(names[k]), [image_size] * 2)) for k in good]
            # a batch of skipped images only still needs the embedding width: one blank image
            images = torch.stack(batch) if batch else torch.zeros(1, 3, image_size, image_size)
            embedded = encode(images.to(device)).float().cpu().numpy()
            piece = np.full((len(names), embedded.shape[1]), np.nan, dtype=np.float32)
            piece[good] = embedded[: len(good)]
            pieces.append(piece)
        save_npy(target, np.concatenate(pieces).astype(np.float16))
    pieces = [np.load(partial / f"{start:09d}.npy") for start in starts]
    embeddings = np.concatenate(pieces) if pieces else np.zeros((0, 0), np.float16)  # no chunk
    if shards == 1:
        save_npy(out, embeddings)
    else:
        shard_file = {"starts": np.array(list(starts)), "lengths": [len(p) for p in pieces],
                      "rows": embeddings, "shard": [shard, shards], "images": len(paths)}  # fmt: skip
        atomic_write(out, lambda f: np.savez(f, **shard_file))
    shutil.rmtree(partial)
    log.info("embedded %d images into %s (%s)", len(embeddings), out, embeddings.shape)
    return embeddings


def gather_embeddings(shard_files: Sequence[str | Path], out: str | Path) -> np.ndarray:
    """The pool's embeddings from the shard files of ``embed_images(shard=i, shards=n)``: the
    .npy one job over the whole pool writes, bit for bit."""
    chunks, got, images = [], [], set()
    for path in shard_files:
        with np.load(path, allow_pickle=False) as f:
            got.append(tuple(int(v) for v in f["shard"]))
            images.add(int(f["images"]))
            if len(f["starts"]):  # a shard with no chunk (fewer chunks than shards) adds none
                rows = np.split(f["rows"], np.cumsum(f["lengths"])[:-1])
                chunks += [(int(s), r) for s, r in zip(f["starts"], rows, strict=True)]
    count = len(shard_files)
    if sorted(got) != [(i, count) for i in range(count)] or len(images) != 1:
        raise ValueError(
            f"{', '.join(map(str, shard_files))}: not the {count} shards of one pool's "
            f"embeddings (shards {sorted(got)}); delete them and re-run curation_embed"
        )
    embeddings = np.concatenate([rows for _, rows in sorted(chunks, key=lambda c: c[0])])
    save_npy(out, embeddings)
    return embeddings
