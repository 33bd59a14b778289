"""Readers for the real on-disk layouts of the public datasets (and their synthetic copies).

Each reader checks the layout as it goes and raises ``DatasetFormatError`` naming the file and
line at fault: a missing split, a name that breaks the dataset's naming rule, a list entry
with no image. Decoding every image is optional (``check_images``), because it costs a full
read of the dataset; ``skip_corrupt`` then drops bad images and logs them instead of failing.
"""

from __future__ import annotations

import csv
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from cgdmae.data.records import (
    ClassificationSplit,
    ClassRecord,
    DatasetFormatError,
    PoolRecord,
    ReidRecord,
    ReidSplits,
    SegmentationSplit,
    SegRecord,
)

log = logging.getLogger(__name__)

VERI_NAME = re.compile(r"^(\d{4})_c(\d{3})_(\d+)_(\d+)\.jpg$")
MARKET_NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
VEHICLEID_LINE = re.compile(r"^(\d{7}) (\d+)$")
VERIWILD_LINE = re.compile(r"^(\d+)/(\d+)$")
VEHICLEID_TEST_SIZES = (800, 1600, 2400)
VERIWILD_TEST_SIZES = (3000, 5000, 10000)


# ---- shared checks ------------------------------------------------------------------------------
def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetFormatError(f"missing directory ({what})", path)
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetFormatError(f"missing file ({what})", path)
    return path


def numbered_lines(path: Path) -> Iterable[tuple[int, str]]:
    """Non-empty stripped lines with their 1-based line numbers."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield number, line.strip()


def decode_image(path: Path) -> None:
    """Fully decode an image, turning PIL's errors into one that names the file."""
    try:
        with Image.open(path) as img:
            img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetFormatError(f"corrupt or truncated image ({exc})", path) from None


def check_decodable(paths: list[Path], *, skip_corrupt: bool) -> set[Path]:
    """The paths that fail to decode; raises on the first unless ``skip_corrupt``."""
    bad = set()
    for path in paths:
        try:
            decode_image(path)
        except DatasetFormatError:
            if not skip_corrupt:
                raise
            bad.add(path)
    if bad:
        log.warning("skipped %d corrupt image(s): %s", len(bad), ", ".join(map(str, sorted(bad))))
    return bad


def _filter_checked(records: list, key, check_images: bool, skip_corrupt: bool) -> list:
    if not check_images:
        return records
    bad = check_decodable([key(r) for r in records], skip_corrupt=skip_corrupt)
    return [r for r in records if key(r) not in bad]


def relabel(records: list[ReidRecord]) -> list[ReidRecord]:
    """Give train records 0-based class labels in sorted id order."""
    from dataclasses import replace

    labels = {pid: k for k, pid in enumerate(sorted({r.pid for r in records}))}
    return [replace(r, label=labels[r.pid]) for r in records]


# ---- VeRi-776 -----------------------------------------------------------------------------------
def _veri_labels(path: Path) -> dict[str, tuple[int, int]]:
    """imageName -> (colour, type), 0-based, from VeRi's gb2312-declared label XML.

    Python's expat refuses multi-byte encodings in the declaration, so the bytes are decoded
    with the declared codec first and parsed as text.
    """
    raw = path.read_bytes()
    match = re.match(rb'\s*<\?xml[^>]*encoding="([^"]+)"[^>]*\?>', raw)
    text = raw.decode(match.group(1).decode() if match else "utf-8", errors="replace")
    if match:
        text = text[match.end() :]
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise DatasetFormatError(f"malformed XML ({exc})", path, exc.position[0]) from None
    labels = {}
    for item in root.iter("Item"):
        try:
            labels[item.attrib["imageName"]] = (
                int(item.attrib["colorID"]) - 1,
                int(item.attrib["typeID"]) - 1,
            )
        except (KeyError, ValueError) as exc:
            raise DatasetFormatError(f"<Item> without a valid {exc}: {item.attrib}", path) from None
    return labels


def _veri_split(root: Path, folder: str, listing: str, split: str, labels) -> list[ReidRecord]:
    image_dir = root / folder
    if not image_dir.is_dir():
        raise DatasetFormatError(
            f"VeRi-776 root has no {folder}/ (expected the {split} split)", root
        )
    list_path = root / listing
    if list_path.is_file():
        entries = list(numbered_lines(list_path))
        source = list_path
    else:  # some copies ship without name_*.txt: list the folder
        entries = [(None, p.name) for p in sorted(image_dir.glob("*.jpg"))]
        source = image_dir
    records = []
    for number, name in entries:
        match = VERI_NAME.match(name)
        if not match:
            raise DatasetFormatError(
                f"{name!r} does not match VeRi-776's name pattern {VERI_NAME.pattern}",
                source,
                number,
            )
        path = image_dir / name
        if not path.is_file():
            raise DatasetFormatError(
                f"lists {name} but {folder}/{name} does not exist", source, number
            )
        pid, cam, frame, _ = (int(g) for g in match.groups())
        color, type_ = labels.get(name, (-1, -1))
        records.append(ReidRecord(path, pid, cam - 1, frame=frame, color=color, type=type_))
    return records


def read_veri776(
    root: str | Path, *, check_images: bool = False, skip_corrupt: bool = False
) -> ReidSplits:
    """VeRi-776: image_{train,query,test}/, name_*.txt, {train,test}_label.xml.

    Query images are not in test_label.xml; they take colour and type from their vehicle's
    gallery entries, which is what the labels of the same vehicle are.
    """
    root = require_dir(Path(root), "VeRi-776 root")
    labels: dict[str, tuple[int, int]] = {}
    for xml_name in ("train_label.xml", "test_label.xml"):
        if (root / xml_name).is_file():
            labels.update(_veri_labels(root / xml_name))
    by_vehicle = {int(name[:4]): attrs for name, attrs in labels.items()}
    query_labels = {
        name: by_vehicle[int(name[:4])]
        for _, name in _listing(root / "name_query.txt")
        if name[:4].isdigit() and int(name[:4]) in by_vehicle
    }
    train = _veri_split(root, "image_train", "name_train.txt", "train", labels)
    query = _veri_split(root, "image_query", "name_query.txt", "query", {**query_labels, **labels})
    gallery = _veri_split(root, "image_test", "name_test.txt", "gallery (test)", labels)

    def checked(records):
        return _filter_checked(records, lambda r: r.path, check_images, skip_corrupt)

    return ReidSplits(relabel(checked(train)), checked(query), checked(gallery))


def _listing(path: Path) -> list[tuple[int, str]]:
    return list(numbered_lines(path)) if path.is_file() else []


# ---- VehicleID ----------------------------------------------------------------------------------
def _vehicleid_list(root: Path, list_path: Path) -> list[ReidRecord]:
    require_file(list_path, "VehicleID split list")
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
                f"image {match.group(1)} has no file image/{match.group(1)}.jpg", list_path, number
            )
        records.append(ReidRecord(image, int(match.group(2)), camid=0))
    return records


def read_vehicleid(
    root: str | Path,
    test_size: int = 800,
    *,
    check_images: bool = False,
    skip_corrupt: bool = False,
) -> tuple[list[ReidRecord], list[ReidRecord]]:
    """VehicleID: (train, test) records; ``test_size`` picks test_list_{800,1600,2400}.txt."""
    if test_size not in VEHICLEID_TEST_SIZES:
        raise DatasetFormatError(
            f"VehicleID test size must be one of {VEHICLEID_TEST_SIZES}, got {test_size}"
        )
    root = require_dir(Path(root), "VehicleID root")
    require_dir(root / "image", "VehicleID images")
    split = require_dir(root / "train_test_split", "VehicleID split lists")
    train = _vehicleid_list(root, split / "train_list.txt")
    test = _vehicleid_list(root, split / f"test_list_{test_size}.txt")

    def checked(records):
        return _filter_checked(records, lambda r: r.path, check_images, skip_corrupt)

    return relabel(checked(train)), checked(test)


def vehicleid_query_gallery(
    test: list[ReidRecord], seed: int
) -> tuple[list[ReidRecord], list[ReidRecord]]:
    """The VehicleID protocol: one random image per id to the gallery, the rest are queries.

    VehicleID has no camera ids; queries get camid 0 and the gallery camid 1, so the usual
    same-id-same-camera removal never drops a match.
    """
    from dataclasses import replace

    rng = np.random.default_rng(seed)
    by_id: dict[int, list[ReidRecord]] = {}
    for record in test:
        by_id.setdefault(record.pid, []).append(record)
    query, gallery = [], []
    for pid in sorted(by_id):
        items = by_id[pid]
        pick = int(rng.integers(len(items)))
        gallery.append(replace(items[pick], camid=1))
        query += [replace(r, camid=0) for k, r in enumerate(items) if k != pick]
    return query, gallery


# ---- VERI-Wild ----------------------------------------------------------------------------------
def _veriwild_info(path: Path) -> dict[str, int]:
    cams = {}
    for number, line in numbered_lines(path):
        if line.startswith("id/image"):
            continue
        fields = line.split(";")
        if len(fields) < 2 or not VERIWILD_LINE.match(fields[0]) or not fields[1].isdigit():
            raise DatasetFormatError(f"expected 'vid/imgid;camid;...', got {line!r}", path, number)
        cams[fields[0]] = int(fields[1])
    return cams


def _veriwild_list(root: Path, path: Path, cams: dict[str, int]) -> list[ReidRecord]:
    records = []
    for number, line in numbered_lines(path):
        match = VERIWILD_LINE.match(line)
        if not match:
            raise DatasetFormatError(f"expected 'vid/imgid', got {line!r}", path, number)
        image = root / "images" / f"{line}.jpg"
        if not image.is_file():
            raise DatasetFormatError(f"{line} has no file images/{line}.jpg", path, number)
        if line not in cams:
            raise DatasetFormatError(
                f"{line} is not in vehicle_info.txt (no camera id)", path, number
            )
        records.append(ReidRecord(image, int(match.group(1)), cams[line]))
    return records


def _first_existing(split: Path, names: list[str], what: str) -> Path:
    for name in names:
        if (split / name).is_file():
            return split / name
    raise DatasetFormatError(f"missing {what}: expected one of {', '.join(names)}", split)


def read_veriwild(
    root: str | Path,
    test_size: int = 3000,
    *,
    check_images: bool = False,
    skip_corrupt: bool = False,
) -> ReidSplits:
    """VERI-Wild: images/<vid>/<imgid>.jpg and train_test_split/ lists of 'vid/imgid'.

    Test lists are test_N.txt / test_N_query.txt; the test_N_id.txt naming of some copies
    is accepted too.
    """
    if test_size not in VERIWILD_TEST_SIZES:
        raise DatasetFormatError(
            f"VERI-Wild test size must be one of {VERIWILD_TEST_SIZES}, got {test_size}"
        )
    root = require_dir(Path(root), "VERI-Wild root")
    require_dir(root / "images", "VERI-Wild images")
    split = require_dir(root / "train_test_split", "VERI-Wild split lists")
    cams = _veriwild_info(require_file(split / "vehicle_info.txt", "VERI-Wild camera ids"))
    train = _veriwild_list(
        root,
        _first_existing(split, ["train_list.txt", "train_list_start0.txt"], "train list"),
        cams,
    )
    gallery_list = _first_existing(
        split, [f"test_{test_size}.txt", f"test_{test_size}_id.txt"], "gallery list"
    )
    query_list = _first_existing(
        split, [f"test_{test_size}_query.txt", f"test_{test_size}_id_query.txt"], "query list"
    )

    def checked(records):
        return _filter_checked(records, lambda r: r.path, check_images, skip_corrupt)

    return ReidSplits(
        relabel(checked(train)),
        checked(_veriwild_list(root, query_list, cams)),
        checked(_veriwild_list(root, gallery_list, cams)),
    )


# ---- Market-1501 --------------------------------------------------------------------------------
def _market_split(root: Path, folder: str, split: str) -> list[ReidRecord]:
    image_dir = root / folder
    if not image_dir.is_dir():
        raise DatasetFormatError(
            f"Market-1501 root has no {folder}/ (expected the {split} split)", root
        )
    records = []
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() != ".jpg":
            continue  # Market ships Thumbs.db files
        match = MARKET_NAME.match(path.name)
        if not match:
            raise DatasetFormatError(
                f"does not match Market-1501's name pattern {MARKET_NAME.pattern}", path
            )
        pid, cam = int(match.group(1)), int(match.group(2))
        if pid == -1:
            continue  # junk detections: ignored by the standard protocol
        records.append(ReidRecord(path, pid, cam - 1, frame=int(match.group(4))))
    return records


def read_market1501(
    root: str | Path, *, check_images: bool = False, skip_corrupt: bool = False
) -> ReidSplits:
    """Market-1501: junk images (pid -1) are dropped; distractors (pid 0) stay in the gallery."""
    root = require_dir(Path(root), "Market-1501 root")

    def checked(records):
        return _filter_checked(records, lambda r: r.path, check_images, skip_corrupt)

    return ReidSplits(
        relabel(checked(_market_split(root, "bounding_box_train", "train"))),
        checked(_market_split(root, "query", "query")),
        checked(_market_split(root, "bounding_box_test", "gallery")),
    )


# ---- classification -----------------------------------------------------------------------------
def read_classes(path: Path) -> list[str]:
    return [line for _, line in numbered_lines(path)]


def read_image_folder(
    root: str | Path, split: str, *, check_images: bool = False, skip_corrupt: bool = False
) -> ClassificationSplit:
    """ImageFolder: <root>/<split>/<class>/*.jpg; an optional classes.txt fixes the order."""
    root = require_dir(Path(root), "classification root")
    split_dir = require_dir(root / split, f"the {split} split")
    folders = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    classes = folders
    if (root / "classes.txt").is_file():
        classes = read_classes(root / "classes.txt")
        unknown = sorted(set(folders) - set(classes))
        if unknown:
            raise DatasetFormatError(
                f"class folder(s) {unknown} of {split}/ are not in classes.txt",
                root / "classes.txt",
            )
    index = {name: k for k, name in enumerate(classes)}
    records = [
        ClassRecord(path, index[folder])
        for folder in folders
        for path in sorted((split_dir / folder).iterdir())
        if path.suffix.lower() in (".jpg", ".jpeg", ".png")
    ]
    if not records:
        raise DatasetFormatError("no images found", split_dir)
    return ClassificationSplit(
        _filter_checked(records, lambda r: r.path, check_images, skip_corrupt), classes
    )


def read_classification_csv(
    csv_path: str | Path, root: str | Path | None = None
) -> ClassificationSplit:
    """A CSV with ``path,label`` columns; paths relative to ``root`` (default: the CSV's folder)."""
    csv_path = require_file(Path(csv_path), "classification CSV")
    root = Path(root) if root is not None else csv_path.parent
    rows = _read_csv(csv_path, ["path", "label"])
    classes = sorted({row["label"] for _, row in rows})
    index = {name: k for k, name in enumerate(classes)}
    records = []
    for number, row in rows:
        path = root / row["path"]
        if not path.is_file():
            raise DatasetFormatError(
                f"image {row['path']} does not exist under {root}", csv_path, number
            )
        records.append(ClassRecord(path, index[row["label"]]))
    return ClassificationSplit(records, classes)


# ---- segmentation -------------------------------------------------------------------------------
def check_mask_matches(image: Path, mask: Path) -> None:
    with Image.open(image) as img, Image.open(mask) as m:
        if img.size != m.size:
            raise DatasetFormatError(
                f"mask size {m.size} differs from its image {image} of size {img.size}", mask
            )


def read_segmentation(
    root: str | Path,
    split: str,
    num_classes: int | None = None,
    *,
    check_images: bool = False,
    skip_corrupt: bool = False,
) -> SegmentationSplit:
    """images/<split>/<name>.jpg paired with masks/<split>/<name>.png; classes.txt names ids."""
    root = require_dir(Path(root), "segmentation root")
    classes_file = require_file(root / "classes.txt", "segmentation class names, one per line")
    classes = read_classes(classes_file)
    if num_classes is not None and num_classes != len(classes):
        raise DatasetFormatError(
            f"configured num_classes={num_classes} but classes.txt lists {len(classes)} classes",
            classes_file,
        )
    image_dir = require_dir(root / "images" / split, f"images of the {split} split")
    mask_dir = require_dir(root / "masks" / split, f"masks of the {split} split")
    records = []
    for image in sorted(
        p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    ):
        mask = mask_dir / f"{image.stem}.png"
        if not mask.is_file():
            raise DatasetFormatError(
                f"image {image.name} has no mask masks/{split}/{image.stem}.png", image
            )
        records.append(SegRecord(image, mask))
    if not records:
        raise DatasetFormatError("no images found", image_dir)
    if check_images:
        bad = check_decodable(
            [p for r in records for p in (r.image, r.mask)], skip_corrupt=skip_corrupt
        )
        records = [r for r in records if r.image not in bad and r.mask not in bad]
        for record in records:
            check_mask_matches(record.image, record.mask)
    return SegmentationSplit(records, classes)


# ---- pre-training pool --------------------------------------------------------------------------
def _read_csv(path: Path, required: list[str]) -> list[tuple[int, dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetFormatError(
                f"missing column(s) {missing}; header is {reader.fieldnames}", path, 1
            )
        return [(number, row) for number, row in enumerate(reader, start=2)]


def read_pool(
    root: str | Path, *, check_images: bool = False, skip_corrupt: bool = False
) -> list[PoolRecord]:
    """images/ + captions.csv (image,caption) + optional attributes.csv (hidden labels)."""
    root = require_dir(Path(root), "pre-training pool root")
    require_dir(root / "images", "pool images")
    captions_file = require_file(root / "captions.csv", "captions.csv with image,caption columns")
    attributes: dict[str, dict[str, str]] = {}
    if (root / "attributes.csv").is_file():
        attributes = {row["image"]: row for _, row in _read_csv(root / "attributes.csv", ["image"])}
    records = []
    for number, row in _read_csv(captions_file, ["image", "caption"]):
        path = root / row["image"]
        if not path.is_file():
            raise DatasetFormatError(
                f"image {row['image']} does not exist under {root}", captions_file, number
            )
        attrs = {k: v for k, v in attributes.get(row["image"], {}).items() if k != "image"}
        records.append(PoolRecord(path, row["caption"], attrs))
    return _filter_checked(records, lambda r: r.path, check_images, skip_corrupt)


def read_manifest(csv_path: str | Path, root: str | Path | None = None) -> list[Path]:
    """Image paths of a curation manifest (rows with ``selected`` true when that column exists)."""
    csv_path = require_file(Path(csv_path), "curation manifest")
    root = Path(root) if root is not None else csv_path.parent
    paths = []
    for number, row in _read_csv(csv_path, ["path"]):
        if "selected" in row and row["selected"].strip().lower() not in ("1", "true", "yes"):
            continue
        path = Path(row["path"]) if Path(row["path"]).is_absolute() else root / row["path"]
        if not path.is_file():
            raise DatasetFormatError(f"image {row['path']} does not exist", csv_path, number)
        paths.append(path)
    return paths
