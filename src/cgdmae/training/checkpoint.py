"""Checkpoint files and the state that makes a resume exact.

Every file the engine writes goes through :func:`atomic_write`: a job killed mid-write leaves
the previous file (or none), never a truncated one that looks complete. The RNG capture covers
every generator a training step may draw from, so a resumed run continues the same random
stream (masking noise, dropout) as an uninterrupted one.

Every load is ``weights_only=True``: a checkpoint holds tensors and plain values (the RNG states
included), so a file pulled from a shared DVC remote is read as data and never runs code. A
file that a weights-only load refuses, or that is truncated or empty, is a
:class:`CheckpointError` naming the file; before a resume it is set aside (renamed
``checkpoint.corrupt-<time>.pth``) and the run resumes from the previous checkpoint
(``checkpoint.prev.pth``, kept until the run ends), or starts over when there is none, so a
retried job never fails the same way again.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cgdmae.files import atomic_write

log = logging.getLogger(__name__)

# what the engine writes and needs back to resume (see cgdmae.training.engine)
REQUIRED_KEYS = (
    *("model", "method", "optimizer", "config", "train_config", "rng_ranks"),
    *("epoch", "batch_in_epoch", "step", "samples_seen", "epoch_sums", "log_rows"),
)


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read or lacks a key the engine needs to resume."""


def previous_checkpoint(path: str | Path) -> Path:
    """Where the checkpoint before ``path``'s current one is kept: ``<stem>.prev<suffix>``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``path`` atomically, keeping the checkpoint it replaces as the previous one, so a
    checkpoint that turns out unreadable (a disk fault, a file truncated in a copy) costs one
    checkpoint interval, not the run."""
    atomic_write(path, lambda f: torch.save(state, f), keep_previous=previous_checkpoint(path))


def drop_optimizer_state(path: str | Path) -> None:
    """Rewrite a finished job's checkpoint without its optimizer state, and remove the previous
    one: AdamW's two moments are two thirds of a checkpoint that nothing will resume training
    from (a changed config starts over), and every published run would carry them to the DVC
    remote. What stays (weights, method state, progress, config) still re-exports the run."""
    state = load_checkpoint(path)
    if state["optimizer"] is not None:
        state["optimizer"] = None
        atomic_write(path, lambda f: torch.save(state, f))
    previous_checkpoint(path).unlink(missing_ok=True)


def _reason(exc: BaseException) -> str:
    """What a ``torch.load`` error says about the file, in one line."""
    message = str(exc)
    refused = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([^\s,]+)", message)
    if refused:
        return (
            f"refused by a weights-only load: it needs {refused.group(1)}, which a checkpoint "
            "of tensors and plain values never does (a corrupt, older or tampered-with file)"
        )
    operand = re.search(r"Unsupported operand (\S+)", message)
    if operand:
        detail = f"a weights-only load refused pickle operand {operand.group(1)}"
    else:
        detail = message.strip().split(". ")[0] or type(exc).__name__
    return f"cannot be read as a checkpoint ({detail})"


def load_weights_only(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; every failure names the file.

    A weights-only load rebuilds tensors, containers and plain values only: a pickle that would
    import or call anything (``__reduce__``) is refused before it runs.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: cannot be read as a checkpoint (the file is empty)")
        return torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: {_reason(exc)}") from exc


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, naming the file in every error."""
    state = load_weights_only(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a checkpoint dict")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path}: missing key(s) {', '.join(missing)}")
    return state


def set_aside(path: str | Path, label: str, reason: str) -> Path | None:
    """Rename ``path`` to ``<stem>.<label>-<unix time><suffix>`` beside it, log ``reason`` and
    the new name, and return it.

    ``None`` when another process (a DDP rank running the same check) moved it first.
    """
    path = Path(path)
    stamp = int(time.time())
    aside = path.with_name(f"{path.stem}.{label}-{stamp}{path.suffix}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.stem}.{label}-{stamp}-{n}{path.suffix}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        log.info("%s; another process has set it aside", reason)
        return None
    log.warning("%s; kept it as %s, starting over", reason, aside)
    return aside


def load_resumable(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint to resume from: ``path``, else the previous one; ``None`` when neither
    can be loaded, and the run starts over.

    A file that cannot be loaded (refused, truncated, empty, missing keys) would fail every
    retry of the job the same way: it is renamed with :func:`set_aside` and the log says why
    and where it went. A missing ``path`` beside a previous checkpoint is a job killed between
    the two renames of :func:`save_checkpoint`.
    """
    path = Path(path)
    for candidate in (path, previous_checkpoint(path)):
        if not candidate.exists():
            continue
        try:
            state = load_checkpoint(candidate)
        except CheckpointError as exc:
            set_aside(candidate, "corrupt", str(exc))
            continue
        if candidate != path:
            log.warning("resuming from the previous checkpoint, %s", candidate)
        return state
    log.warning("no usable checkpoint in %s: starting over", path.parent)
    return None


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from: Python, NumPy, torch CPU and CUDA.

    Held as tensors and plain lists, the types a weights-only load accepts: Python's state as
    ``[version, [625 ints], gauss_next]``, NumPy's legacy MT19937 tuple as a list with the key
    as a list of ints, torch's as its byte tensors.
    """
    version, internal, gauss_next = random.getstate()
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "python": [version, list(internal), gauss_next],
        "numpy": [str(name), key.tolist(), int(pos), int(has_gauss), float(cached_gaussian)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured, exactly."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, key, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), pos, has_gauss, cached_gaussian))
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
    """Before a job trains, rename a checkpoint it must not resume from, so it starts over.

    A checkpoint written under another config belongs to a different run: resuming would mix
    two configurations, and deleting would lose work someone may want back, so it is kept as
    ``<stem>.stale-<time>.pth``. One that cannot be loaded (refused by the weights-only load,
    truncated, empty) would fail every retry the same way: it is kept as
    ``<stem>.corrupt-<time>.pth``. The log names both files either way.
    """
    path = Path(path)
    previous = previous_checkpoint(path)
    if previous.exists() and not path.exists():
        path = previous  # a job killed between save_checkpoint's renames
    elif previous.exists():
        set_aside_if_stale(previous, config)
    if not path.exists():
        return
    try:
        state = load_weights_only(path)
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a checkpoint dict")
    except CheckpointError as exc:
        set_aside(path, "corrupt", str(exc))
        return
    if state.get("config") != config:
        set_aside(path, "stale", f"the config changed since {path} was written")
