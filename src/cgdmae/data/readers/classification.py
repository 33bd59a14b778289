"""Fine-grained classification: an image folder (train/<class>/, test/<class>/) or a CSV list."""

from __future__ import annotations

from pathlib import Path

from cgdmae.data.errors import DatasetFormatError
from cgdmae.data.readers.common import (
    checked_paths,
    image_files,
    read_class_names,
    read_csv,
    require_entry,
    require_root,
)
from cgdmae.data.records import (
    ClassificationSplit,
    ClassRecord,
)


def read_image_folder(
    root: str | Path, split: str, *, check_images: bool = False, skip_corrupt: bool = False
) -> ClassificationSplit:
    """ImageFolder: <root>/<split>/<class>/*.jpg, classes in sorted order.

    An optional <root>/classes.txt (one name per line) fixes the order instead, and must name
    exactly the class folders of the split. Only .jpg/.jpeg/.png files are images.
    """
    root = require_root(root, "classification")
    split_dir = require_entry(root, f"{split}/", "classification", f"the {split} split")
    folders = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    classes = folders
    classes_file = root / "classes.txt"
    if classes_file.is_file():
        classes = read_class_names(classes_file)
        extra, absent = sorted(set(folders) - set(classes)), sorted(set(classes) - set(folders))
        if extra or absent:
            raise DatasetFormatError(
                f"disagrees with the folders of {split_dir}: folders not listed {extra}, "
                f"listed classes without a folder {absent}",
                classes_file,
            )
    if not classes:
        raise DatasetFormatError("has no class folders", split_dir)
    records = []
    for label, name in enumerate(classes):
        images = image_files(split_dir / name)
        if not images:
            raise DatasetFormatError("class folder has no images", split_dir / name)
        records += [ClassRecord(path, label) for path in images]
    return ClassificationSplit(checked_paths(records, check_images, skip_corrupt), classes)


def read_classification_csv(
    csv_path: str | Path,
    root: str | Path | None = None,
    *,
    check_images: bool = False,
    skip_corrupt: bool = False,
) -> ClassificationSplit:
    """A CSV with ``path,label`` columns; paths relative to ``root`` (default: the CSV's folder).

    Integer labels are class ids as they are (classes '0'..'max'); any other labels are class
    names, indexed in sorted order.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetFormatError("classification CSV does not exist", csv_path)
    root = Path(root) if root is not None else csv_path.parent
    rows = read_csv(csv_path, ["path", "label"])
    if not rows:
        raise DatasetFormatError("has a header but no rows", csv_path)
    for number, row in rows:
        if not row["path"].strip() or not row["label"].strip():
            raise DatasetFormatError(f"empty path or label in {row}", csv_path, number)
    values = [row["label"].strip() for _, row in rows]
    if all(v.isdigit() for v in values):
        classes = [str(k) for k in range(max(int(v) for v in values) + 1)]
    else:
        classes = sorted(set(values))
    index = {name: k for k, name in enumerate(classes)}
    records = []
    for (number, row), value in zip(rows, values, strict=True):
        path = root / row["path"].strip()
        if not path.is_file():
            raise DatasetFormatError(
                f"image {row['path']} does not exist under {root}", csv_path, number
            )
        records.append(ClassRecord(path, index[str(int(value)) if value.isdigit() else value]))
    return ClassificationSplit(checked_paths(records, check_images, skip_corrupt), classes)
