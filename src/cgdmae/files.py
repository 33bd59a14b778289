"""The one writer of every output file: atomic, durable, and readable by the group.

A job killed mid-write leaves the previous file (or none), never a truncated one that looks
complete; the temp files it may leave are named ``.<name>.*.tmp`` so that a retry can find and
remove them (``cgdmae.pretrain.cli.remove_stale_temp_files``). Files get the mode ``open`` would
give them (0666 less the umask), not ``mkstemp``'s owner-only 0600, so colleagues sharing a
results directory can read them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(
    path: str | Path, write: Callable[[IO[bytes]], None], keep_previous: Path | None = None
) -> None:
    """Call ``write`` on a temp file in ``path``'s directory, fsync it, then rename it over ``path``.

    The rename is atomic on POSIX file systems and the fsync makes the data durable before it,
    so after a crash ``path`` holds either the old or the new content. The file gets the
    permissions ``open`` would give it (0666 less the umask), not mkstemp's owner-only 0600, so
    colleagues sharing a results directory can read it. With ``keep_previous`` the old file is
    renamed there first, once the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~umask)
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """``text`` (UTF-8) through :func:`atomic_write`."""
    data = text.encode()
    atomic_write(path, lambda f: f.write(data))


def save_npy(path: str | Path, array: Any) -> None:
    """A numpy array as ``.npy`` through :func:`atomic_write` (readable with ``mmap_mode``)."""
    import numpy as np

    atomic_write(path, lambda f: np.save(f, array))


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """``data`` as indented JSON with sorted keys, through :func:`atomic_write`."""
    text = json.dumps(data, indent=2, sort_keys=True).encode()
    atomic_write(path, lambda f: f.write(text))


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_fingerprint(root: str | Path) -> str:
    """SHA-256 (16 hex digits) of a dataset's file list: every file under ``root`` with its
    size, sorted. A number traced through it names the exact data it was measured on (a file
    added, removed or rewritten at another size changes it) without reading the images."""
    root = Path(root)
    listing = sorted(
        f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}"
        for path in root.rglob("*")
        if path.is_file()
    )
    return hashlib.sha256("\n".join(listing).encode()).hexdigest()[:16]


def chunk_starts(
    n: int, batch: int, chunk_batches: int, shard: int = 0, shards: int = 1
) -> tuple[int, range]:
    """The chunk size of a resumable job over ``n`` items and where shard ``shard`` of
    ``shards`` starts its chunks: chunks of whole batches (so the batches, and every output
    bit, do not depend on the chunking), at most ``chunk_batches`` each and small enough that
    every shard gets one where there are enough batches."""
    per_shard = -(-n // (batch * shards))  # batches per shard, rounded up
    chunk = batch * max(1, min(chunk_batches, per_shard))
    return chunk, range(0, n, chunk)[shard::shards]
