"""Readers for the real on-disk layouts of the public datasets (and their synthetic copies).

Each reader checks the layout as it goes and raises ``DatasetFormatError`` naming the file and
line at fault: a missing split, a name that breaks the dataset's naming rule, a malformed line,
a list entry with no image. Decoding every image is optional (``check_images``) because it
costs a full read of the dataset; ``skip_corrupt`` then drops the images that fail to decode
and logs them, instead of failing on the first.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import xml.parsers.expat
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from cgdmae.data.errors import DatasetFormatError
from cgdmae.data.records import (
    ClassificationSplit,
    ClassRecord,
    PoolRecord,
    ReidRecord,
    ReidSplits,
    SegmentationSplit,
    SegRecord,
)

log = logging.getLogger(__name__)

VERI_NAME = re.compile(r"^(\d{4})_c(\d{3})_(\d+)_(\d+)\.jpg$")
VERI_ID_NAME_LINE = re.compile(r"^(\d+) (\S.*)$")
MARKET_NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
VEHICLEID_LINE = re.compile(r"^(\d{7}) (\d+)$")
VEHICLEID_ATTRIBUTE_LINE = re.compile(r"^(\d+) (\d+)$")
VERIWILD_ITEM = re.compile(r"^(\d+)/(\d+)$")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TRUE_WORDS = ("1", "true", "yes")
FALSE_WORDS = ("0", "false", "no", "")
DECODE_CHUNK = 4096

Record = TypeVar("Record")


# ---- shared checks ------------------------------------------------------------------------------
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


# ---- VeRi-776 -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class VeriLabel:
    pid: int
    camid: int
    color: int
    type: int
    line: int


def _veri_xml_items(path: Path, root_tag: str) -> list[tuple[int, dict[str, str]]]:
    """(line, attributes) of every <Item> in a VeRi label file.

    The files declare ``encoding="gb2312"``, which Python's expat refuses (it only handles
    single-byte encodings and UTF-8/16). The bytes are decoded with the declared codec and
    handed to expat as UTF-8 with the declaration overridden, which keeps line numbers exact.
    """
    raw = path.read_bytes()
    declared = re.match(rb'\s*<\?xml[^>]*encoding="([^"]+)"', raw)
    codec = declared.group(1).decode("ascii") if declared else "utf-8"
    try:
        text = raw.decode(codec)
    except (LookupError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"cannot decode as declared {codec!r} ({exc})", path) from None
    parser = xml.parsers.expat.ParserCreate(encoding="utf-8")
    items: list[tuple[int, dict[str, str]]] = []
    tags: list[tuple[int, str, dict[str, str]]] = []

    def start(tag: str, attributes: dict[str, str]) -> None:
        tags.append((parser.CurrentLineNumber, tag, attributes))
        if tag == "Item":
            items.append((parser.CurrentLineNumber, attributes))

    parser.StartElementHandler = start
    try:
        parser.Parse(text.encode("utf-8"), True)
    except xml.parsers.expat.ExpatError as exc:
        raise DatasetFormatError(f"malformed XML ({exc})", path, exc.lineno) from None
    line, tag, _ = tags[0]
    if tag != root_tag:
        raise DatasetFormatError(f"root element is <{tag}>, expected <{root_tag}>", path, line)
    declared_counts = [(ln, a.get("number")) for ln, t, a in tags if t == "Items"]
    for line, number in declared_counts:
        if number is not None and number != str(len(items)):
            raise DatasetFormatError(
                f'<Items number="{number}"> but the file has {len(items)} <Item> elements',
                path,
                line,
            )
    return items


def read_veri_labels(
    path: Path, root_tag: str, n_colors: int, n_types: int
) -> dict[str, VeriLabel]:
    """imageName -> label from train_label.xml / test_label.xml; ids become 0-based."""
    labels = {}
    for line, item in _veri_xml_items(path, root_tag):
        try:
            name = item["imageName"]
            pid = int(item["vehicleID"])
            camera = re.fullmatch(r"c(\d{3})", item["cameraID"])
            color, type_ = int(item["colorID"]), int(item["typeID"])
        except (KeyError, ValueError) as exc:
            raise DatasetFormatError(
                f"<Item> has a missing or non-integer attribute {exc}: {item}", path, line
            ) from None
        if camera is None:
            raise DatasetFormatError(
                f"cameraID {item['cameraID']!r} is not of the form cNNN", path, line
            )
        for key, value, count in (("colorID", color, n_colors), ("typeID", type_, n_types)):
            if value < 1 or (count and value > count):
                limit = f"1..{count}" if count else "1 or more"
                raise DatasetFormatError(f"{key}={value} is outside {limit}", path, line)
        labels[name] = VeriLabel(pid, int(camera.group(1)) - 1, color - 1, type_ - 1, line)
    return labels


def read_veri_id_names(path: Path) -> list[str]:
    """list_color.txt / list_type.txt: lines ``<id> <name>`` with ids 1, 2, 3, ... in order."""
    names = []
    for number, line in numbered_lines(path):
        match = VERI_ID_NAME_LINE.match(line)
        if not match:
            raise DatasetFormatError(f"expected '<id> <name>', got {line!r}", path, number)
        if int(match.group(1)) != len(names) + 1:
            raise DatasetFormatError(
                f"expected id {len(names) + 1}, got {match.group(1)} in {line!r}", path, number
            )
        names.append(match.group(2))
    return names


def _veri_split(
    root: Path,
    folder: str,
    listing: str,
    split: str,
    labels: dict[str, VeriLabel],
    labels_file: Path,
    vehicle_labels: dict[int, VeriLabel],
) -> list[ReidRecord]:
    image_dir = require_entry(root, f"{folder}/", "VeRi-776", f"the {split} split")
    list_path = require_entry(root, listing, "VeRi-776", f"the image names of the {split} split")
    records = []
    for number, name in numbered_lines(list_path):
        match = VERI_NAME.match(name)
        if not match:
            raise DatasetFormatError(
                f"{name!r} does not match VeRi-776's name pattern {VERI_NAME.pattern}",
                list_path,
                number,
            )
        path = image_dir / name
        if not path.is_file():
            raise DatasetFormatError(
                f"lists {name} but {folder}/{name} does not exist", list_path, number
            )
        pid, camera, frame, _ = (int(g) for g in match.groups())
        label = labels.get(name)
        if label is not None and (label.pid, label.camid) != (pid, camera - 1):
            raise DatasetFormatError(
                f"{name} is labelled vehicleID={label.pid:04d} cameraID=c{label.camid + 1:03d}, "
                "which disagrees with its name",
                labels_file,
                label.line,
            )
        label = label or vehicle_labels.get(pid)
        color, type_ = (label.color, label.type) if label else (-1, -1)
        records.append(ReidRecord(path, pid, camera - 1, frame=frame, color=color, type=type_))
    return records


def read_veri776(
    root: str | Path, *, check_images: bool = False, skip_corrupt: bool = False
) -> ReidSplits:
    """VeRi-776: image_{train,query,test}/, name_{train,query,test}.txt, {train,test}_label.xml.

    list_color.txt and list_type.txt are optional; when present they bound the label ids and
    name them in ``color_names`` / ``type_names``. The real test_label.xml covers image_test/
    only, so a query image takes colour and type from its vehicle's entries there (a vehicle
    keeps its colour and type across cameras); images with no label keep -1.
    """
    root = require_root(root, "VeRi-776")
    color_names = _optional_id_names(root / "list_color.txt")
    type_names = _optional_id_names(root / "list_type.txt")
    n_colors, n_types = len(color_names), len(type_names)
    train_xml = require_entry(root, "train_label.xml", "VeRi-776", "the train labels")
    test_xml = require_entry(root, "test_label.xml", "VeRi-776", "the test labels")
    train_labels = read_veri_labels(train_xml, "TrainingImages", n_colors, n_types)
    test_labels = read_veri_labels(test_xml, "TestImages", n_colors, n_types)
    by_vehicle = {label.pid: label for label in test_labels.values()}
    train = _veri_split(root, "image_train", "name_train.txt", "train", train_labels, train_xml, {})
    query = _veri_split(
        root, "image_query", "name_query.txt", "query", test_labels, test_xml, by_vehicle
    )
    gallery = _veri_split(
        root, "image_test", "name_test.txt", "gallery (test)", test_labels, test_xml, {}
    )
    return ReidSplits(
        relabel(checked_paths(train, check_images, skip_corrupt)),
        checked_paths(query, check_images, skip_corrupt),
        checked_paths(gallery, check_images, skip_corrupt),
        color_names,
        type_names,
    )


def _optional_id_names(path: Path) -> list[str]:
    return read_veri_id_names(path) if path.is_file() else []


# ---- VehicleID ----------------------------------------------------------------------------------
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


# ---- VERI-Wild ----------------------------------------------------------------------------------
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


# ---- Market-1501 --------------------------------------------------------------------------------
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


# ---- classification -----------------------------------------------------------------------------
def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


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
        images = _image_files(split_dir / name)
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


# ---- segmentation -------------------------------------------------------------------------------
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
    for image in _image_files(image_dir):
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


# ---- pre-training pool --------------------------------------------------------------------------
def read_pool(
    root: str | Path, *, check_images: bool = False, skip_corrupt: bool = False
) -> list[PoolRecord]:
    """images/ + captions.csv (``image,caption``) + optional attributes.csv (hidden labels).

    attributes.csv (``image,color,type,model,identity,camera,viewpoint,track``) is for
    analysis only; its values stay strings, keyed by column.
    """
    root = require_root(root, "pre-training pool")
    require_entry(root, "images/", "pre-training pool", "the images")
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
        if not path.is_file():
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
        if not path.is_file():
            raise DatasetFormatError(f"image {row['path']} does not exist", csv_path, number)
        paths.append(path)
    return paths
