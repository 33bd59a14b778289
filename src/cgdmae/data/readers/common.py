"""What every reader shares: the root and entry checks, numbered lines and CSV rows, optional
decoding of every image, relabelling, class-name files."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from PIL import Image

from cgdmae.data.errors import DatasetFormatError
from cgdmae.data.records import (
    ReidRecord,
)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TRUE_WORDS = ("1", "true", "yes")
FALSE_WORDS = ("0", "false", "no", "")
DECODE_CHUNK = 4096

Record = TypeVar("Record")


def require_root(root: str | Path, dataset: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetFormatError(f"{dataset} root does not exist or is not a directory", root)
    return root


def require_entry(root: Path, relative: str, dataset: str, expected: str) -> Path:
    """``root/relative`` (a directory if ``relative`` ends in '/'), or an error naming both."""
    path = root / relative.rstrip("/")
    exists = path.is_dir() if relative.endswith("/") else path.is_file()
    if not exists:
        raise DatasetFormatError(
            f"{dataset} root {root} has no {relative} (expected {expected})", path
        )
    return path


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-blank stripped lines of a UTF-8 text file with their 1-based line numbers."""
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
        except UnicodeDecodeError:
            raise DatasetFormatError("line is not UTF-8 text", path, number) from None
        if text:
            yield number, text


def read_csv(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a UTF-8 CSV with a header, with their line numbers; names missing columns."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DatasetFormatError(f"not UTF-8 text ({exc.reason})", path, line) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    try:
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DatasetFormatError(f"missing column(s) {missing}; header is {header}", path, 1)
        for row in reader:
            if None in row or None in row.values():
                raise DatasetFormatError(
                    f"expected {len(header)} fields ({','.join(header)}), got {row}",
                    path,
                    reader.line_num,
                )
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise DatasetFormatError(f"malformed CSV ({exc})", path, reader.line_num) from None
    return rows


def decode_image(path: Path) -> tuple[int, int]:
    """Fully decode an image (PIL ``load``) and return its size; errors name the file."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.size
    except FileNotFoundError:
        raise DatasetFormatError("image file does not exist", path) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetFormatError(f"corrupt or truncated image ({exc})", path) from None


def drop_undecodable(
    records: list[Record], paths: Callable[[Record], Sequence[Path]], skip_corrupt: bool
) -> list[Record]:
    """Decode every image of every record; raise on the first failure unless ``skip_corrupt``.

    Decoding runs in a thread pool (PIL releases the GIL while decoding), so checking a large
    pool costs about a disk read of it.
    """

    def failure(record: Record) -> DatasetFormatError | None:
        try:
            for path in paths(record):
                decode_image(path)
        except DatasetFormatError as exc:
            return exc
        return None

    failures: list[DatasetFormatError | None] = []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(records), DECODE_CHUNK):  # bounded number of live futures
            failures += pool.map(failure, records[start : start + DECODE_CHUNK])
    bad = [exc for exc in failures if exc is not None]
    if bad and not skip_corrupt:
        raise bad[0]
    if bad:
        log.warning(
            "skipped %d corrupt image(s): %s", len(bad), ", ".join(str(e.path) for e in bad)
        )
    return [r for r, exc in zip(records, failures, strict=True) if exc is None]


def checked_paths(records: list[Record], check_images: bool, skip_corrupt: bool) -> list[Record]:
    """Records whose ``path`` decodes, when ``check_images`` asks for the check."""
    if not check_images:
        return records
    return drop_undecodable(records, lambda r: [r.path], skip_corrupt)


def relabel(records: list[ReidRecord]) -> list[ReidRecord]:
    """Give train records 0-based class labels in sorted id order; ``pid`` keeps the id."""
    labels = {pid: k for k, pid in enumerate(sorted({r.pid for r in records}))}
    return [replace(r, label=labels[r.pid]) for r in records]


def read_class_names(path: Path) -> list[str]:
    """One class name per line; a repeated name is an error (its index would be ambiguous)."""
    names: list[str] = []
    for number, name in numbered_lines(path):
        if name in names:
            raise DatasetFormatError(f"class {name!r} is listed twice", path, number)
        names.append(name)
    if not names:
        raise DatasetFormatError("lists no classes", path)
    return names


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
