"""Checkpoint files and the state that makes a resume exact.

Every file the engine writes goes through :func:`atomic_write`: a job killed mid-write leaves
the previous file (or none), never a truncated one that looks complete. The RNG capture covers
every generator a training step may draw from, so a resumed run continues the same random
stream (masking noise, dropout) as an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

log = logging.getLogger(__name__)

# what the engine writes and needs back to resume (see cgdmae.pretrain.engine)
REQUIRED_KEYS = (
    *("model", "method", "optimizer", "config", "train_config", "rng_ranks"),
    *("epoch", "batch_in_epoch", "step", "samples_seen", "epoch_sums", "log_rows"),
)


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read or lacks a key the engine needs to resume."""


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a temp file in ``path``'s directory, fsync it, then rename it over ``path``.

    The rename is atomic on POSIX file systems and the fsync makes the data durable before it,
    so after a crash ``path`` holds either the old or the new content. The file gets the
    permissions ``open`` would give it (0666 less the umask), not mkstemp's owner-only 0600, so
    colleagues sharing a results directory can read it.
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
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, naming the file in every error.

    ``weights_only=False`` because the RNG states hold NumPy arrays and Python tuples; only
    checkpoints this pipeline wrote are loaded.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({exc})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a checkpoint dict")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path}: missing key(s) {', '.join(missing)}")
    return state


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from: Python, NumPy, torch CPU and CUDA."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: saved -> current`` for each dotted key whose value differs between two configs."""
    diffs = []
    for key in sorted(set(saved) | set(current), key=str):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            diffs += [f"{key}.{sub}" for sub in config_differences(old, new)]
        elif old != new:
            diffs.append(f"{key}: {old!r} -> {new!r}")
    return diffs


def set_aside_if_stale(path: str | Path, config: dict[str, Any]) -> None:
    """Rename a checkpoint written under another config, so the job starts over but loses nothing.

    A run whose config changed is a different run: resuming would mix two configurations, and
    deleting would lose work someone may want back.
    """
    path = Path(path)
    if not path.exists():
        return
    saved = torch.load(path, map_location="cpu", weights_only=False).get("config")
    if saved != config:
        aside = path.with_name(f"{path.stem}.stale-{int(time.time())}{path.suffix}")
        os.replace(path, aside)
        log.warning(
            "the config changed since %s was written: kept it as %s, starting over", path, aside
        )
