"""VERI-Wild as distributed: images/<id>/<image>.jpg, train_test_split/ lists and
vehicle_info.txt (cameras)."""

from __future__ import annotations

import re
from pathlib import Path

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
    ReidSplits,
)

VERIWILD_ITEM = re.compile(r"^(\d+)/(\d+)$")


def _veriwild_cameras(path: Path) -> dict[str, int]:
    """'vid/imgid' -> camera id from vehicle_info.txt (``vid/imgid;camid;time;model;type;color``)."""
    cameras = {}
    for number, line in numbered_lines(path):
        if number == 1 and line.startswith("id/image"):
            continue  # the header of the real file
        fields = line.split(";")
        if len(fields) < 2 or not VERIWILD_ITEM.match(fields[0]) or not fields[1].isdigit():
            raise DatasetFormatError(
                f"expected 'vid/imgid;camid;time;model;type;color', got {line!r}", path, number
            )
        cameras[fields[0]] = int(fields[1])
    return cameras


def _veriwild_list(root: Path, path: Path, cameras: dict[str, int], info: Path) -> list[ReidRecord]:
    records = []
    for number, line in numbered_lines(path):
        match = VERIWILD_ITEM.match(line)
        if not match:
            raise DatasetFormatError(f"expected 'vid/imgid', got {line!r}", path, number)
        image = root / "images" / f"{line}.jpg"
        if not image.is_file():
            raise DatasetFormatError(
                f"lists {line} but images/{line}.jpg does not exist", path, number
            )
        if line not in cameras:
            raise DatasetFormatError(f"lists {line}, which {info} does not list", path, number)
        records.append(ReidRecord(image, int(match.group(1)), cameras[line]))
    if not records:
        raise DatasetFormatError("lists no images", path)
    return records


def read_veriwild(
    root: str | Path,
    test_size: int = 3000,
    *,
    check_images: bool = False,
    skip_corrupt: bool = False,
) -> ReidSplits:
    """VERI-Wild: images/<vid>/<imgid>.jpg and train_test_split/ lists of ``vid/imgid``.

    The gallery is test_N.txt and the queries test_N_query.txt (N in 3000, 5000, 10000).
    Camera ids come from vehicle_info.txt as written there (the dataset numbers them from 1;
    only equality matters to the metric). Its model/type/color columns are free text, not
    class ids, so ``color`` and ``type`` stay -1.
    """
    root = require_root(root, "VERI-Wild")
    require_entry(root, "images/", "VERI-Wild", "the images, images/<vid>/<imgid>.jpg")
    split = "train_test_split"
    info = require_entry(root, f"{split}/vehicle_info.txt", "VERI-Wild", "the camera ids")
    cameras = _veriwild_cameras(info)

    def listed(name: str, what: str) -> list[ReidRecord]:
        path = require_entry(root, f"{split}/{name}", "VERI-Wild", what)
        return checked_paths(_veriwild_list(root, path, cameras, info), check_images, skip_corrupt)

    return ReidSplits(
        relabel(listed("train_list.txt", "the train list")),
        listed(f"test_{test_size}_query.txt", f"the query list of test size {test_size}"),
        listed(f"test_{test_size}.txt", f"the gallery list of test size {test_size}"),
    )
