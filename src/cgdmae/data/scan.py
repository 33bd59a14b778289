"""``python -m cgdmae.data.scan CONFIG...`` (``make check-data``): decode every image first.

The dataset check that runs before any job reads each dataset's lists and checks that the
listed images exist, but decoding them all costs a full read of the data, so it is not done
there. A corrupt or truncated JPEG otherwise stops a training job mid-epoch, hours in. This
scan decodes every image file under each configured dataset (in parallel), lists the bad ones
with the config key that points at them, and exits 1 when there are any, so a cluster run can
be started on data known to decode.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from cgdmae.data.datasets import load_rgb
from cgdmae.data.errors import DatasetFormatError
from cgdmae.data.shards import members

log = logging.getLogger(__name__)
T = TypeVar("T")
ON_CORRUPT = ("error", "skip")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def image_files(root: str | Path) -> list[Path]:
    """Every image file under ``root`` (by suffix), those inside tar shards included, sorted."""
    files = [p for p in Path(root).rglob("*") if p.is_file()]
    inside = [m for p in files if p.suffix == ".tar" for m in members(p)]
    return sorted(p for p in files + inside if p.suffix.lower() in IMAGE_SUFFIXES)


def decode_error(path: Path) -> str | None:
    """Why ``path`` does not decode as an RGB image, or ``None`` when it does."""
    try:
        load_rgb(path)
    except DatasetFormatError as exc:
        return str(exc)
    return None


def decode_errors(paths: Sequence[str | Path], workers: int = 1) -> list[str | None]:
    """:func:`decode_error` of each path, decoded by ``workers`` processes (in this one for 1)."""
    if workers <= 1 or len(paths) < 64:
        return [decode_error(Path(p)) for p in paths]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(decode_error, map(Path, paths), chunksize=64))


def without_corrupt(
    items: Sequence[T],
    files: Callable[[T], Iterable[str | Path]],
    on_corrupt: str,
    where: str | Path,
    workers: int = 1,
) -> tuple[list[T], list[T]]:
    """``data.on_corrupt`` applied to the items a job reads: ``error`` keeps them all (the
    first corrupt image then fails the job, naming it, when it is read); ``skip`` decodes every
    file of every item first and drops the items with one that does not decode. Returns the
    items kept and those dropped; each dropped one is logged as a warning with its error, and
    the count after them: jobs record it (``skipped_images``), so skipping is never silent."""
    if on_corrupt not in ON_CORRUPT:
        raise ValueError(
            f"data.on_corrupt must be one of {', '.join(ON_CORRUPT)}, got {on_corrupt!r}"
        )
    if on_corrupt == "error":
        return list(items), []
    per_item = [list(files(item)) for item in items]
    errors = iter(decode_errors([f for fs in per_item for f in fs], workers))
    kept, skipped = [], []
    for item, fs in zip(items, per_item, strict=True):
        bad = [e for e in (next(errors) for _ in fs) if e]
        if bad:
            skipped.append(item)
            log.warning("%s: skipped (data.on_corrupt: skip): %s", where, "; ".join(bad))
        else:
            kept.append(item)
    level = logging.WARNING if skipped else logging.INFO
    log.log(level, "%s: skipped_images %d of %d (data.on_corrupt: skip)", where, len(skipped),
            len(items))  # fmt: skip
    return kept, skipped


def corrupt_images(paths: Sequence[Path], on_corrupt: str, where: str | Path) -> list[Path]:
    """The images of ``paths`` that ``data.on_corrupt`` leaves out (none under ``error``),
    decoded in the job's CPUs' worth of processes."""
    return without_corrupt(paths, lambda path: [path], on_corrupt, where, decoding_workers())[1]


def decoding_workers() -> int:
    """The processes a job decodes its images with: the CPUs it was given."""
    return len(os.sched_getaffinity(0))


def scan(
    datasets: Mapping[str, Mapping[str, Any]], workers: int = 1, skip_prefix: str = "results/"
) -> tuple[int, list[tuple[str, str]]]:
    """(images decoded, [(config key, error)]) over the ``datasets`` section of a config.

    Datasets under ``skip_prefix`` that do not exist yet are written by the workflow later
    and are skipped.
    """
    keyed: list[tuple[str, Path]] = []
    for name, spec in datasets.items():
        if str(spec["path"]).startswith(skip_prefix) and not Path(spec["path"]).exists():
            continue
        keyed += [(f"datasets.{name}.path", p) for p in image_files(spec["path"])]
    errors = decode_errors([p for _, p in keyed], workers)
    bad = [(key, error) for (key, _), error in zip(keyed, errors, strict=True) if error]
    return len(keyed), bad


def main(argv: Iterable[str] | None = None) -> int:
    from cgdmae.config import SCHEMA, ConfigError, load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="config files, later ones overriding")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(None if argv is None else list(argv))
    datasets: dict[str, Any] = {}
    for path in args.configs:
        try:
            datasets |= load_config(path, SCHEMA).get("datasets", {})
        except ConfigError as exc:
            print(f"check-data: {exc}", file=sys.stderr)
            return 2
    count, bad = scan(datasets, args.workers)
    for key, error in bad:
        print(f"config key '{key}': {error}", file=sys.stderr)
    print(f"check-data: {count} images decoded, {len(bad)} corrupt")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
