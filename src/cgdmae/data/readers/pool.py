"""The unlabeled pre-training pool (images/ or tar shards/, + captions.csv) and curation
manifests."""

from __future__ import annotations

from pathlib import Path

from cgdmae.data.errors import DatasetFormatError
from cgdmae.data.readers.common import (
    FALSE_WORDS,
    TRUE_WORDS,
    checked_paths,
    read_csv,
    require_entry,
    require_root,
)
from cgdmae.data.records import (
    PoolRecord,
)
from cgdmae.data.shards import SHARDS_DIR, image_exists


def read_pool(
    root: str | Path, *, check_images: bool = False, skip_corrupt: bool = False
) -> list[PoolRecord]:
    """images/ + captions.csv (``image,caption``) + optional attributes.csv (hidden labels).

    Or shards/ instead of images/: tar files whose images the CSVs name through the shard,
    ``shards/00000.tar/images/1.jpg`` (``cgdmae.data.shards``; ``python -m cgdmae.data.shards``
    packs a plain pool).

    attributes.csv (``image,color,type,model,identity,camera,viewpoint,track``) is for
    analysis only; its values stay strings, keyed by column.
    """
    root = require_root(root, "pre-training pool")
    if not (root / SHARDS_DIR).is_dir():
        require_entry(root, "images/", "pre-training pool", f"the images, or {SHARDS_DIR}/")
    captions = require_entry(root, "captions.csv", "pre-training pool", "image,caption rows")
    attributes: dict[str, dict[str, str]] = {}
    attributes_file = root / "attributes.csv"
    if attributes_file.is_file():
        for _, row in read_csv(attributes_file, ["image"]):
            attributes[row.pop("image")] = row
    records, seen = [], {}
    for number, row in read_csv(captions, ["image", "caption"]):
        name = row["image"]
        if name in seen:
            raise DatasetFormatError(
                f"image {name} is listed twice (first on line {seen[name]})", captions, number
            )
        seen[name] = number
        path = root / name
        if not image_exists(path):
            raise DatasetFormatError(f"image {name} does not exist under {root}", captions, number)
        records.append(PoolRecord(path, row["caption"], attributes.get(name, {})))
    return checked_paths(records, check_images, skip_corrupt)


def read_manifest(csv_path: str | Path, root: str | Path | None = None) -> list[Path]:
    """Image paths of a curation manifest: a ``path`` column plus any others.

    When a ``selected`` column exists only its true rows are kept (1/true/yes; 0/false/no or
    empty are false; anything else is an error). Relative paths resolve against ``root``,
    by default the manifest's folder.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetFormatError("curation manifest does not exist", csv_path)
    root = Path(root) if root is not None else csv_path.parent
    paths = []
    for number, row in read_csv(csv_path, ["path"]):
        if "selected" in row:
            flag = row["selected"].strip().lower()
            if flag not in TRUE_WORDS + FALSE_WORDS:
                raise DatasetFormatError(
                    f"selected={row['selected']!r} is not a boolean", csv_path, number
                )
            if flag in FALSE_WORDS:
                continue
        path = root / row["path"]  # an absolute path replaces root
        if not image_exists(path):
            raise DatasetFormatError(f"image {row['path']} does not exist", csv_path, number)
        paths.append(path)
    return paths
