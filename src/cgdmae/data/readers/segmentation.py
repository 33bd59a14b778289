"""Part segmentation: images/{train,val}/, masks/{train,val}/ (uint8 ids, 255 = ignore) and
classes.txt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cgdmae.data.errors import DatasetFormatError
from cgdmae.data.readers.common import (
    decode_image,
    drop_undecodable,
    image_files,
    read_class_names,
    require_entry,
    require_root,
)
from cgdmae.data.records import (
    SegmentationSplit,
    SegRecord,
)


def check_mask(image: Path, mask: Path, num_classes: int) -> None:
    """Decode an image/mask pair: same size, an 8-bit mask, class ids < num_classes or 255."""
    image_size = decode_image(image)
    mask_size = decode_image(mask)
    if mask_size != image_size:
        raise DatasetFormatError(
            f"mask size {mask_size} (w, h) differs from image {image} of size {image_size}", mask
        )
    with Image.open(mask) as m:
        if m.mode not in ("L", "P"):
            raise DatasetFormatError(f"mask mode is {m.mode}, expected 8-bit L or P", mask)
        values = np.unique(np.asarray(m))
    bad = [int(v) for v in values if v >= num_classes and v != 255]
    if bad:
        raise DatasetFormatError(
            f"mask has class ids {bad}; classes.txt names {num_classes} classes (255 = ignore)",
            mask,
        )


def read_segmentation(
    root: str | Path,
    split: str,
    num_classes: int | None = None,
    *,
    check_images: bool = False,
    skip_corrupt: bool = False,
) -> SegmentationSplit:
    """images/<split>/<name>.jpg paired with masks/<split>/<name>.png; classes.txt names the ids.

    Masks hold uint8 class ids, 255 = ignore. ``check_images`` decodes every pair and checks
    sizes and ids; ``skip_corrupt`` drops pairs that fail to decode, never mismatched ones.
    """
    root = require_root(root, "segmentation")
    classes_file = require_entry(root, "classes.txt", "segmentation", "class names, one per line")
    classes = read_class_names(classes_file)
    if num_classes is not None and num_classes != len(classes):
        raise DatasetFormatError(
            f"num_classes={num_classes} is configured but classes.txt lists {len(classes)} classes",
            classes_file,
        )
    image_dir = require_entry(root, f"images/{split}/", "segmentation", f"the {split} images")
    mask_dir = require_entry(root, f"masks/{split}/", "segmentation", f"the {split} masks")
    records = []
    for image in image_files(image_dir):
        mask = mask_dir / f"{image.stem}.png"
        if not mask.is_file():
            raise DatasetFormatError(f"has no mask: expected {mask}", image)
        records.append(SegRecord(image, mask))
    if not records:
        raise DatasetFormatError("has no images", image_dir)
    if check_images:
        records = drop_undecodable(records, lambda r: [r.image, r.mask], skip_corrupt)
        for record in records:
            check_mask(record.image, record.mask, len(classes))
    return SegmentationSplit(records, classes)
