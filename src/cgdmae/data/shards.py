"""A pool stored as tar shards, so that a million images are a few hundred files on a shared
file system instead of a million.

An image inside a shard is addressed as a path through the tar file,
``<root>/shards/00000.tar/images/123.jpg``, so every reader, dataset and manifest keeps
handling paths. Each process indexes a shard once (its members' data offsets, read from the
tar headers) and reads an image with one positional read (``os.pread``): no per-image open,
and no file offset shared between a parent and its forked loader workers. The bytes are the
same as the plain file's, so a sharded pool trains exactly as the ``images/`` one.

``python -m cgdmae.data.shards SRC DST --shards N`` packs a plain pool into N shards.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import tarfile
from collections import OrderedDict
from pathlib import Path

from cgdmae.files import atomic_write, write_text

SHARDS_DIR = "shards"
OPEN_SHARDS = 64  # descriptors a process keeps open, the least recently read closed first
_open: OrderedDict[str, int] = OrderedDict()
_open_pid = os.getpid()
_shards: dict[str, _Shard] = {}  # member indexes by tar path


class _Shard:
    """A tar file's member index (this process's; a forked worker inherits it)."""

    def __init__(self, path: str):
        with tarfile.open(path) as tar:  # headers only: it seeks over the data
            self.members = {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}
        self.path = path

    def read(self, member: str) -> bytes:
        offset, size = self.members[member]
        return os.pread(_descriptor(self.path), size, offset)


def _descriptor(path: str) -> int:
    """This process's descriptor of ``path``: a forked worker opens its own (a shared one
    would be fine for pread, but the parent may close it), and at most OPEN_SHARDS stay open."""
    global _open_pid
    if _open_pid != os.getpid():
        _open.clear()  # the parent's; closing them here would not free the parent's
        _open_pid = os.getpid()
    fd = _open.pop(path, None)
    if fd is None:
        fd = os.open(path, os.O_RDONLY)
    while len(_open) >= OPEN_SHARDS:
        os.close(_open.popitem(last=False)[1])
    _open[path] = fd
    return fd


def split_member(path: str | Path) -> tuple[str, str] | None:
    """(tar file, member name) of a path through a ``.tar`` file, or None for a plain path."""
    parts = Path(path).parts
    for k, part in enumerate(parts[:-1]):
        if part.endswith(".tar"):
            return str(Path(*parts[: k + 1])), "/".join(parts[k + 1 :])
    return None


def _shard(tar_path: str) -> _Shard:
    shard = _shards.get(tar_path)
    if shard is None:
        shard = _shards[tar_path] = _Shard(tar_path)
    return shard


def _locate(path: str | Path) -> tuple[_Shard, str] | None:
    """The shard and member name of a path through an existing shard holding that member."""
    where = split_member(path)
    if where is None or not os.path.isfile(where[0]):
        return None
    shard = _shard(where[0])
    return (shard, where[1]) if where[1] in shard.members else None


def member_exists(path: str | Path) -> bool:
    """Whether ``path`` names a file inside an existing tar shard."""
    return _locate(path) is not None


def members(tar_path: str | Path) -> list[Path]:
    """Every file inside a shard, as paths through it, in the tar's order."""
    return [Path(tar_path) / name for name in _shard(str(tar_path)).members]


def image_exists(path: str | Path) -> bool:
    """A plain file, or an image inside a shard."""
    return Path(path).is_file() or member_exists(path)


def read_member(path: str | Path) -> bytes:
    """The bytes of an image inside a shard; FileNotFoundError when the shard or the member
    does not exist."""
    found = _locate(path)
    if found is None:
        raise FileNotFoundError(path)
    shard, member = found
    return shard.read(member)


def pack_pool(src: str | Path, dst: str | Path, shards: int) -> list[Path]:
    """Pack a plain pool (``images/`` + ``captions.csv`` [+ ``attributes.csv``]) into
    ``shards`` tar files of consecutive images, with the CSVs' image column rewritten to the
    paths through the shards; every file written atomically (``cgdmae.files``)."""
    from cgdmae.data.readers.pool import read_pool

    src, dst = Path(src), Path(dst)
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    records = read_pool(src)
    (dst / SHARDS_DIR).mkdir(parents=True, exist_ok=False)
    renamed, written = {}, []
    per_shard = -(-len(records) // shards)
    for k in range(shards):
        name = f"{SHARDS_DIR}/{k:05d}.tar"
        chunk = records[k * per_shard : (k + 1) * per_shard]
        relatives = [record.path.relative_to(src).as_posix() for record in chunk]
        renamed |= {relative: f"{name}/{relative}" for relative in relatives}

        def write(f, relatives=relatives):
            with tarfile.open(fileobj=f, mode="w", dereference=True) as tar:
                for relative in relatives:
                    tar.add(src / relative, arcname=relative, recursive=False)

        atomic_write(dst / name, write)
        written.append(dst / name)
    for table in ("captions.csv", "attributes.csv"):
        if (src / table).is_file():
            _rewrite_image_column(src / table, dst / table, renamed)
    return written


def _rewrite_image_column(src: Path, dst: Path, renamed: dict[str, str]) -> None:
    with open(src, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
        fields = list(rows[0]) if rows else ["image"]
    for row in rows:
        row["image"] = renamed[row["image"]]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text(dst, text.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description="Pack a plain pool into tar shards.")
    parser.add_argument("src", help="a pool root: images/ + captions.csv")
    parser.add_argument("dst", help="a new directory for shards/ + captions.csv")
    parser.add_argument("--shards", type=int, required=True)
    args = parser.parse_args()
    for path in pack_pool(args.src, args.dst, args.shards):
        print(path)


if __name__ == "__main__":
    main()
