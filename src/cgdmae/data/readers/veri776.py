"""VeRi-776 as distributed: image_{train,query,test}/, name_*.txt, train_label.xml and
test_label.xml (colour and type), list_color.txt, list_type.txt."""

from __future__ import annotations

import re
import xml.parsers.expat
from dataclasses import dataclass
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

VERI_NAME = re.compile(r"^(\d{4})_c(\d{3})_(\d+)_(\d+)\.jpg$")
VERI_ID_NAME_LINE = re.compile(r"^(\d+) (\S.*)$")


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
