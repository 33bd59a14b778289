"""Market-1501 as distributed: bounding_box_{train,test}/ and query/, names carrying id,
camera and sequence."""

from __future__ import annotations

import re
from pathlib import Path

from cgdmae.data.errors import DatasetFormatError
from cgdmae.data.readers.common import (
    checked_paths,
    relabel,
    require_entry,
    require_root,
)
from cgdmae.data.records import (
    ReidRecord,
    ReidSplits,
)

MARKET_NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")


def _market_split(root: Path, folder: str, split: str) -> list[ReidRecord]:
    image_dir = require_entry(root, f"{folder}/", "Market-1501", f"the {split} split")
    records = []
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() != ".jpg":
            continue  # the release ships Thumbs.db files next to the images
        match = MARKET_NAME.match(path.name)
        if not match:
            raise DatasetFormatError(
                f"does not match Market-1501's name pattern {MARKET_NAME.pattern}", path
            )
        pid, camera = int(match.group(1)), int(match.group(2))
        if pid == -1:
            continue  # junk detection: the standard protocol ignores it
        records.append(ReidRecord(path, pid, camera - 1, frame=int(match.group(4))))
    if not records:
        raise DatasetFormatError("has no .jpg images", image_dir)
    return records


def read_market1501(
    root: str | Path, *, check_images: bool = False, skip_corrupt: bool = False
) -> ReidSplits:
    """Market-1501, as the standard readers load it.

    Junk images (pid -1) are dropped from every split; distractors (pid 0000) stay in the
    gallery, where they can only be false matches. Files other than .jpg are not images.
    """
    root = require_root(root, "Market-1501")
    train = _market_split(root, "bounding_box_train", "train")
    query = _market_split(root, "query", "query")
    gallery = _market_split(root, "bounding_box_test", "gallery")
    return ReidSplits(
        relabel(checked_paths(train, check_images, skip_corrupt)),
        checked_paths(query, check_images, skip_corrupt),
        checked_paths(gallery, check_images, skip_corrupt),
    )
