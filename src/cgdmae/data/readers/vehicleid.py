"""VehicleID as distributed: image/, train_test_split/{train_list,test_list_<N>}.txt and the
attribute lists; its 10-trial query/gallery draw."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from cgdmae.data.errors import DatasetFormatError
from cgdmae.data.readers.common import (
    checked_paths,
    numbered_lines,
    relabel,
    require_entry,
    require_root,
)
from cgdmae.data.records import (
    ReidRecord,
)

VEHICLEID_LINE = re.compile(r"^(\d{7}) (\d+)$")
VEHICLEID_ATTRIBUTE_LINE = re.compile(r"^(\d+) (\d+)$")


def _vehicleid_attributes(root: Path, name: str) -> dict[int, int]:
    """vehicle id -> 0-based attribute id from attribute/<name> (lines ``<vid> <id>``)."""
    path = root / "attribute" / name
    if not path.is_file():
        return {}
    values = {}
    for number, line in numbered_lines(path):
        match = VEHICLEID_ATTRIBUTE_LINE.match(line)
        if not match:
            raise DatasetFormatError(
                f"expected '<vehicle id> <attribute id>', got {line!r}", path, number
            )
        values[int(match.group(1))] = int(match.group(2))
    return values


def _vehicleid_list(
    root: Path, list_path: Path, colors: dict[int, int], models: dict[int, int]
) -> list[ReidRecord]:
    records = []
    for number, line in numbered_lines(list_path):
        match = VEHICLEID_LINE.match(line)
        if not match:
            raise DatasetFormatError(
                f"expected '<7-digit image> <vehicle id>', got {line!r}", list_path, number
            )
        image = root / "image" / f"{match.group(1)}.jpg"
        if not image.is_file():
            raise DatasetFormatError(
                f"lists image {match.group(1)} but image/{match.group(1)}.jpg does not exist",
                list_path,
                number,
            )
        pid = int(match.group(2))
        records.append(
            ReidRecord(image, pid, camid=0, color=colors.get(pid, -1), model=models.get(pid, -1))
        )
    if not records:
        raise DatasetFormatError("lists no images", list_path)
    return records


def read_vehicleid(
    root: str | Path,
    test_size: int = 800,
    *,
    check_images: bool = False,
    skip_corrupt: bool = False,
) -> tuple[list[ReidRecord], list[ReidRecord]]:
    """VehicleID: (train, test) records; ``test_size`` picks train_test_split/test_list_N.txt.

    VehicleID has no camera ids: every record gets camid 0 (see ``vehicleid_query_gallery``).
    The optional attribute/color_attr.txt and attribute/model_attr.txt (``<vid> <id>``, ids
    0-based) fill ``color`` and ``model`` for the vehicles they list.
    """
    root = require_root(root, "VehicleID")
    require_entry(root, "image/", "VehicleID", "the images")
    split_dir = require_entry(root, "train_test_split/", "VehicleID", "the split lists")
    test_name = f"test_list_{test_size}.txt"
    if not (split_dir / test_name).is_file():
        available = sorted(p.name for p in split_dir.glob("test_list_*.txt"))
        raise DatasetFormatError(
            f"no {test_name} for test_size={test_size}; available: {available}",
            split_dir / test_name,
        )
    colors = _vehicleid_attributes(root, "color_attr.txt")
    models = _vehicleid_attributes(root, "model_attr.txt")
    train_list = require_entry(
        root, "train_test_split/train_list.txt", "VehicleID", "the train list"
    )
    train = _vehicleid_list(root, train_list, colors, models)
    test = _vehicleid_list(root, split_dir / test_name, colors, models)
    return (
        relabel(checked_paths(train, check_images, skip_corrupt)),
        checked_paths(test, check_images, skip_corrupt),
    )


def vehicleid_query_gallery(
    test_records: Sequence[ReidRecord], seed: int
) -> tuple[list[ReidRecord], list[ReidRecord]]:
    """The VehicleID protocol: per test id, one random image to the gallery, the rest queries.

    The protocol has no camera filter, but the ReID metric removes gallery items with the
    query's id AND camera. Queries therefore get camid 0 and gallery items camid 1, so that
    removal never fires. An id with one image only lands in the gallery (a distractor).
    Repeating with seeds 0..9 gives the ten trials the protocol averages.
    """
    rng = np.random.default_rng(seed)
    by_id: dict[int, list[ReidRecord]] = {}
    for record in test_records:
        by_id.setdefault(record.pid, []).append(record)
    query, gallery = [], []
    for pid in sorted(by_id):
        items = by_id[pid]
        pick = int(rng.integers(len(items)))
        gallery.append(replace(items[pick], camid=1))
        query += [replace(r, camid=0) for k, r in enumerate(items) if k != pick]
    return query, gallery
