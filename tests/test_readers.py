"""Readers on fixture trees in the exact real layouts, and every bad input they must name."""

import contextlib
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cgdmae.data import (
    DatasetFormatError,
    read_classification_csv,
    read_image_folder,
    read_manifest,
    read_market1501,
    read_pool,
    read_segmentation,
    read_vehicleid,
    read_veri776,
    read_veriwild,
    vehicleid_query_gallery,
)


def jpg(path: Path, size=(8, 8), color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def png_mask(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:40])
    return path


@contextlib.contextmanager
def raises_at(path: Path, line: int | None = None):
    """Expect a DatasetFormatError whose path and line are these, and whose message leads
    with them."""
    with pytest.raises(DatasetFormatError) as info:
        yield info
    error = info.value
    assert (error.path, error.line) == (path, line), str(error)
    assert str(error).startswith(f"{path}:{line}: " if line else f"{path}: ")


# ---- VeRi-776 -----------------------------------------------------------------------------------
VERI_TRAIN = ["0001_c001_00016450_0.jpg", "0001_c002_00016460_1.jpg", "0005_c003_00020000_0.jpg"]
VERI_QUERY = ["0002_c002_00030600_1.jpg", "0009_c001_00000100_0.jpg"]
VERI_TEST = ["0002_c003_00030610_1.jpg", "0003_c004_00040000_0.jpg"]


def veri_xml(tag: str, items: list[str], number: int | None = None) -> bytes:
    lines = [
        '<?xml version="1.0" encoding="gb2312"?>',
        "<!-- 车辆标注 -->",  # multi-byte gb2312 content, as the real files may carry
        f'<{tag} Version="1.0">',
        f'<Items number="{len(items) if number is None else number}">',
        *items,
        "</Items>",
        f"</{tag}>",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("gb2312")


def veri_item(name: str, color: int, type_: int) -> str:
    return (
        f'<Item imageName="{name}" vehicleID="{name[:4]}" cameraID="c{name[6:9]}" '
        f'colorID="{color}" typeID="{type_}" />'
    )


def veri_tree(root: Path) -> Path:
    for folder, names in (
        ("image_train", VERI_TRAIN),
        ("image_query", VERI_QUERY),
        ("image_test", VERI_TEST),
    ):
        for name in names:
            jpg(root / folder / name)
    write(root / "name_train.txt", "\n".join(VERI_TRAIN) + "\n")
    write(root / "name_query.txt", "\n".join(VERI_QUERY) + "\n")
    write(root / "name_test.txt", "\n".join(VERI_TEST) + "\n")
    train_items = [veri_item(n, 5, 2) for n in VERI_TRAIN]
    test_items = [veri_item(VERI_TEST[0], 10, 9), veri_item(VERI_TEST[1], 1, 1)]
    (root / "train_label.xml").write_bytes(veri_xml("TrainingImages", train_items))
    (root / "test_label.xml").write_bytes(veri_xml("TestImages", test_items))
    colors = [
        "yellow",
        "orange",
        "green",
        "gray",
        "red",
        "blue",
        "white",
        "golden",
        "brown",
        "black",
    ]
    types = ["sedan", "suv", "van", "hatchback", "mpv", "pickup", "bus", "truck", "estate"]
    write(root / "list_color.txt", "".join(f"{k + 1} {c}\n" for k, c in enumerate(colors)))
    write(root / "list_type.txt", "".join(f"{k + 1} {t}\n" for k, t in enumerate(types)))
    return root


def test_veri776_reads_the_real_layout(tmp_path):
    root = veri_tree(tmp_path / "VeRi")
    splits = read_veri776(root)
    assert [r.path for r in splits.train] == [root / "image_train" / n for n in VERI_TRAIN]
    assert [(r.pid, r.label) for r in splits.train] == [(1, 0), (1, 0), (5, 1)]
    first = splits.train[0]
    assert (first.camid, first.frame, first.color, first.type) == (0, 16450, 4, 1)
    assert splits.num_train_ids == 2
    assert [(r.pid, r.camid, r.label) for r in splits.gallery] == [(2, 2, -1), (3, 3, -1)]
    assert [(r.color, r.type) for r in splits.gallery] == [(9, 8), (0, 0)]
    # query 0002 is not in test_label.xml: it takes its vehicle's attributes; 0009 has none
    assert [(r.pid, r.camid, r.color, r.type) for r in splits.query] == [
        (2, 1, 9, 8),
        (9, 0, -1, -1),
    ]
    assert splits.color_names[0] == "yellow" and splits.type_names[-1] == "estate"


def test_veri776_missing_split_folder_and_list(tmp_path):
    root = veri_tree(tmp_path / "VeRi")
    for path in (root / "image_query").iterdir():
        path.unlink()
    (root / "image_query").rmdir()
    with raises_at(root / "image_query") as err:
        read_veri776(root)
    assert f"VeRi-776 root {root} has no image_query/ (expected the query split)" in str(err.value)
    root = veri_tree(tmp_path / "VeRi2")
    (root / "name_test.txt").unlink()
    with raises_at(root / "name_test.txt") as err:
        read_veri776(root)
    assert "has no name_test.txt" in str(err.value)


def test_veri776_bad_name_names_file_line_and_pattern(tmp_path):
    root = veri_tree(tmp_path / "VeRi")
    jpg(root / "image_train" / "car_1.jpg")
    write(root / "name_train.txt", "0001_c001_00016450_0.jpg\n\ncar_1.jpg\n")
    with raises_at(root / "name_train.txt", 3) as err:
        read_veri776(root)
    assert "'car_1.jpg'" in str(err.value)
    assert r"^(\d{4})_c(\d{3})_(\d+)_(\d+)\.jpg$" in str(err.value)


def test_veri776_listed_image_missing(tmp_path):
    root = veri_tree(tmp_path / "VeRi")
    (root / "image_test" / "0003_c004_00040000_0.jpg").unlink()
    with raises_at(root / "name_test.txt", 2) as err:
        read_veri776(root)
    assert "image_test/0003_c004_00040000_0.jpg does not exist" in str(err.value)


def test_veri776_label_xml_errors_name_the_line(tmp_path):
    root = veri_tree(tmp_path / "VeRi")
    xml = root / "train_label.xml"
    items = [veri_item(n, 5, 2) for n in VERI_TRAIN]
    xml.write_bytes(veri_xml("TrainingImages", [*items[:2], items[2].replace('"2"', '"x"')]))
    with raises_at(xml, 7) as err:
        read_veri776(root)
    assert "non-integer" in str(err.value) and "typeID" in str(err.value)
    xml.write_bytes(veri_xml("TrainingImages", [*items[:2], veri_item(VERI_TRAIN[2], 11, 2)]))
    with raises_at(xml, 7) as err:
        read_veri776(root)
    assert "colorID=11 is outside 1..10" in str(err.value)
    xml.write_bytes(veri_xml("TrainingImages", items[:2] + [items[2].replace('"0005"', '"0006"')]))
    with raises_at(xml, 7) as err:
        read_veri776(root)
    assert "0005_c003_00020000_0.jpg is labelled vehicleID=0006" in str(err.value)
    xml.write_bytes(veri_xml("TrainingImages", items, number=4))
    with raises_at(xml, 4) as err:
        read_veri776(root)
    assert '<Items number="4"> but the file has 3' in str(err.value)
    xml.write_bytes(veri_xml("TrainingImages", items).replace(b" />\r\n</Items>", b"\r\n</Items>"))
    with raises_at(xml, 8) as err:
        read_veri776(root)
    assert "malformed XML" in str(err.value)
    xml.write_bytes(veri_xml("TestImages", items))
    with raises_at(xml, 3) as err:
        read_veri776(root)
    assert "root element is <TestImages>, expected <TrainingImages>" in str(err.value)


def test_veri776_bad_list_color_line(tmp_path):
    root = veri_tree(tmp_path / "VeRi")
    write(root / "list_color.txt", "1 yellow\n3 orange\n")
    with raises_at(root / "list_color.txt", 2) as err:
        read_veri776(root)
    assert "expected id 2" in str(err.value)


def test_corrupt_jpeg_is_named_or_skipped_and_logged(tmp_path, caplog):
    root = veri_tree(tmp_path / "VeRi")
    bad = truncate(root / "image_train" / "0005_c003_00020000_0.jpg")
    assert len(read_veri776(root).train) == 3  # not decoded by default
    with raises_at(bad) as err:
        read_veri776(root, check_images=True)
    assert "corrupt or truncated image" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="cgdmae.data.readers"):
        splits = read_veri776(root, check_images=True, skip_corrupt=True)
    assert [r.path.name for r in splits.train] == VERI_TRAIN[:2]
    assert [r.label for r in splits.train] == [0, 0]  # labels follow the kept images
    assert "skipped 1 corrupt image(s)" in caplog.text and str(bad) in caplog.text


def test_missing_root_is_named(tmp_path):
    with raises_at(tmp_path / "nowhere") as err:
        read_veri776(tmp_path / "nowhere")
    assert "VeRi-776 root does not exist" in str(err.value)


# ---- VehicleID ----------------------------------------------------------------------------------
def vehicleid_tree(root: Path) -> Path:
    for k in range(1, 9):
        jpg(root / "image" / f"{k:07d}.jpg")
    split = root / "train_test_split"
    write(split / "train_list.txt", "0000001 10\n0000002 10\n0000003 11\n")
    for size in (800, 1600, 2400):
        write(
            split / f"test_list_{size}.txt",
            "0000004 20\n0000005 20\n0000006 20\n0000007 21\n0000008 21\n",
        )
    write(root / "attribute" / "color_attr.txt", "10 3\n20 0\n")
    write(root / "attribute" / "model_attr.txt", "10 117\n")
    return root


def test_vehicleid_reads_lists_and_attributes(tmp_path):
    root = vehicleid_tree(tmp_path / "VehicleID")
    train, test = read_vehicleid(root, 1600)
    assert [r.path for r in train] == [root / "image" / f"{k:07d}.jpg" for k in (1, 2, 3)]
    assert [(r.pid, r.label, r.color, r.model) for r in train] == [
        (10, 0, 3, 117),
        (10, 0, 3, 117),
        (11, 1, -1, -1),
    ]
    assert [r.pid for r in test] == [20, 20, 20, 21, 21] and test[0].color == 0


def test_vehicleid_query_gallery_protocol(tmp_path):
    _, test = read_vehicleid(vehicleid_tree(tmp_path / "VehicleID"), 800)
    query, gallery = vehicleid_query_gallery(test, seed=3)
    assert sorted(r.pid for r in gallery) == [20, 21]  # one image per id
    assert sorted(r.path for r in query + gallery) == sorted(r.path for r in test)
    assert {r.camid for r in query} == {0} and {r.camid for r in gallery} == {1}
    assert vehicleid_query_gallery(test, seed=3) == (query, gallery)
    picks = {tuple(r.path.name for r in vehicleid_query_gallery(test, s)[1]) for s in range(10)}
    assert len(picks) > 1  # the ten trials draw different galleries


def test_vehicleid_errors_name_file_and_line(tmp_path):
    root = vehicleid_tree(tmp_path / "VehicleID")
    train_list = root / "train_test_split" / "train_list.txt"
    write(train_list, "0000001 10\n0000099 12\n")
    with raises_at(train_list, 2) as err:
        read_vehicleid(root)
    assert "image/0000099.jpg does not exist" in str(err.value)
    write(train_list, "0000001 10\n1 12\n")
    with raises_at(train_list, 2) as err:
        read_vehicleid(root)
    assert "expected '<7-digit image> <vehicle id>', got '1 12'" in str(err.value)
    train_list.write_bytes(b"0000001 10\n0000002 \xb3\xb5\n")
    with raises_at(train_list, 2):
        read_vehicleid(root)
    with raises_at(root / "train_test_split" / "test_list_1000.txt") as err:
        read_vehicleid(root, 1000)
    assert "test_list_1600.txt" in str(err.value)  # the available ones are listed
    write(root / "attribute" / "color_attr.txt", "10 red\n")
    with raises_at(root / "attribute" / "color_attr.txt", 1):
        read_vehicleid(root)


# ---- VERI-Wild ----------------------------------------------------------------------------------
def veriwild_tree(root: Path) -> Path:
    for item in ("00001/000001", "00001/000002", "00002/000003", "00002/000004", "00003/000005"):
        jpg(root / "images" / f"{item}.jpg")
    split = root / "train_test_split"
    write(
        split / "vehicle_info.txt",
        "id/image;Camera ID;Time;Model;Type;Color\n"
        "00001/000001;7;2018-03-11 10:20:21;Audi A4;sedan;red\n"
        "00001/000002;8;2018-03-11 10:25:00;Audi A4;sedan;red\n"
        "00002/000003;1;2018-03-12 08:00:00;Buick GL8;MPV;white\n"
        "00002/000004;2;2018-03-12 08:10:00;Buick GL8;MPV;white\n"
        "00003/000005;3;2018-03-13 09:00:00;BYD F3;sedan;black\n",
    )
    write(split / "train_list.txt", "00001/000001\n00001/000002\n")
    write(split / "test_3000.txt", "00002/000004\n00003/000005\n")
    write(split / "test_3000_query.txt", "00002/000003\n")
    return root


def test_veriwild_reads_the_real_layout(tmp_path):
    root = veriwild_tree(tmp_path / "VERI-Wild")
    splits = read_veriwild(root, 3000)
    assert [(r.pid, r.camid, r.label) for r in splits.train] == [(1, 7, 0), (1, 8, 0)]
    assert splits.train[0].path == root / "images" / "00001" / "000001.jpg"
    assert [(r.pid, r.camid) for r in splits.query] == [(2, 1)]
    assert [(r.pid, r.camid) for r in splits.gallery] == [(2, 2), (3, 3)]


def test_veriwild_errors(tmp_path):
    root = veriwild_tree(tmp_path / "VERI-Wild")
    split = root / "train_test_split"
    with raises_at(split / "test_5000_query.txt") as err:
        read_veriwild(root, 5000)
    assert "expected the query list of test size 5000" in str(err.value)
    write(split / "test_3000.txt", "00002/000004\n00003/000006\n")
    with raises_at(split / "test_3000.txt", 2) as err:
        read_veriwild(root)
    assert "images/00003/000006.jpg does not exist" in str(err.value)
    jpg(root / "images" / "00003" / "000006.jpg")
    with raises_at(split / "test_3000.txt", 2) as err:
        read_veriwild(root)
    assert "vehicle_info.txt does not list" in str(err.value)
    write(split / "test_3000.txt", "00002/000004\n00003-000005\n")
    with raises_at(split / "test_3000.txt", 2):
        read_veriwild(root)
    write(split / "vehicle_info.txt", "00001/000001;7;t;m;t;c\n00001/000002,8\n")
    with raises_at(split / "vehicle_info.txt", 2) as err:
        read_veriwild(root)
    assert "'00001/000002,8'" in str(err.value)


# ---- Market-1501 --------------------------------------------------------------------------------
def test_market1501_drops_junk_keeps_distractors(tmp_path):
    root = tmp_path / "Market-1501-v15.09.15"
    jpg(root / "bounding_box_train" / "0002_c1s1_000451_03.jpg")
    jpg(root / "bounding_box_train" / "0007_c2s3_070952_01.jpg")
    jpg(root / "query" / "0001_c1s1_001051_00.jpg")
    jpg(root / "bounding_box_test" / "0001_c2s1_000301_01.jpg")
    jpg(root / "bounding_box_test" / "-1_c1s1_000401_03.jpg")
    jpg(root / "bounding_box_test" / "0000_c6s1_000551_01.jpg")
    write(root / "bounding_box_test" / "Thumbs.db", "")
    splits = read_market1501(root)
    assert [(r.pid, r.camid, r.label, r.frame) for r in splits.train] == [
        (2, 0, 0, 451),
        (7, 1, 1, 70952),
    ]
    assert [(r.pid, r.camid) for r in splits.gallery] == [(0, 5), (1, 1)]
    bad = jpg(root / "query" / "1_c1s1_001051_00.jpg")
    with raises_at(bad) as err:
        read_market1501(root)
    assert r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$" in str(err.value)


# ---- classification -----------------------------------------------------------------------------
def test_image_folder_sorted_and_classes_txt_order(tmp_path):
    root = tmp_path / "vfr"
    jpg(root / "train" / "sedan_01" / "sedan_01_00000.jpg")
    jpg(root / "train" / "suv_02" / "suv_02_00000.jpg")
    jpg(root / "train" / "suv_02" / "suv_02_00001.jpg")
    split = read_image_folder(root, "train")
    assert split.classes == ["sedan_01", "suv_02"] and [r.label for r in split.records] == [0, 1, 1]
    write(root / "classes.txt", "suv_02\nsedan_01\n")
    split = read_image_folder(root, "train")
    assert split.classes == ["suv_02", "sedan_01"]
    assert [(r.path.name, r.label) for r in split.records] == [
        ("suv_02_00000.jpg", 0),
        ("suv_02_00001.jpg", 0),
        ("sedan_01_00000.jpg", 1),
    ]


def test_image_folder_errors(tmp_path):
    root = tmp_path / "vfr"
    jpg(root / "train" / "sedan_01" / "a.jpg")
    jpg(root / "train" / "bus_09" / "c.jpg")
    write(root / "classes.txt", "sedan_01\nsuv_02\n")
    with raises_at(root / "classes.txt") as err:
        read_image_folder(root, "train")
    assert "folders not listed ['bus_09']" in str(err.value)
    assert "listed classes without a folder ['suv_02']" in str(err.value)
    write(root / "classes.txt", "sedan_01\nbus_09\nsedan_01\n")
    with raises_at(root / "classes.txt", 3):
        read_image_folder(root, "train")
    (root / "classes.txt").unlink()
    with raises_at(root / "test") as err:
        read_image_folder(root, "test")
    assert "expected the test split" in str(err.value)
    (root / "train" / "empty").mkdir()
    with raises_at(root / "train" / "empty"):
        read_image_folder(root, "train")


def test_classification_csv(tmp_path):
    jpg(tmp_path / "img" / "a.jpg")
    jpg(tmp_path / "img" / "b.jpg")
    labels = write(tmp_path / "labels.csv", "path,label\nimg/a.jpg,suv\nimg/b.jpg,sedan\n")
    split = read_classification_csv(labels)
    assert split.classes == ["sedan", "suv"] and [r.label for r in split.records] == [1, 0]
    write(labels, "path,label\nimg/a.jpg,10\nimg/b.jpg,2\n")  # ids, not names: no string sort
    split = read_classification_csv(labels)
    assert len(split.classes) == 11 and [r.label for r in split.records] == [10, 2]
    write(labels, "path,label\nimg/a.jpg,suv\nimg/missing.jpg,suv\n")
    with raises_at(labels, 3) as err:
        read_classification_csv(labels, tmp_path)
    assert "image img/missing.jpg does not exist" in str(err.value)
    write(labels, "path,label\nimg/a.jpg,suv\nimg/b.jpg,suv,extra\n")
    with raises_at(labels, 3):
        read_classification_csv(labels)
    write(labels, "file,label\nimg/a.jpg,suv\n")
    with raises_at(labels, 1) as err:
        read_classification_csv(labels)
    assert "missing column(s) ['path']" in str(err.value)


# ---- segmentation -------------------------------------------------------------------------------
def seg_tree(root: Path) -> Path:
    write(root / "classes.txt", "background\nbody\nwindow\n")
    mask = np.array([[0, 1, 2, 255, 1, 0]] * 4)
    for split, name in (("train", "000001"), ("val", "000002")):
        jpg(root / "images" / split / f"{name}.jpg", size=(6, 4))
        png_mask(root / "masks" / split / f"{name}.png", mask)
    return root


def test_segmentation_reads_pairs(tmp_path):
    root = seg_tree(tmp_path / "vps")
    split = read_segmentation(root, "train", num_classes=3, check_images=True)
    assert split.classes == ["background", "body", "window"]
    assert [(r.image, r.mask) for r in split.records] == [
        (root / "images/train/000001.jpg", root / "masks/train/000001.png")
    ]


def test_segmentation_errors(tmp_path):
    root = seg_tree(tmp_path / "vps")
    with raises_at(root / "classes.txt") as err:
        read_segmentation(root, "train", num_classes=5)
    assert "num_classes=5 is configured but classes.txt lists 3 classes" in str(err.value)
    mask = png_mask(root / "masks" / "val" / "000002.png", np.zeros((5, 5)))
    read_segmentation(root, "val")  # sizes are only compared when images are decoded
    with raises_at(mask) as err:
        read_segmentation(root, "val", check_images=True)
    assert f"mask size (5, 5) (w, h) differs from image {root}/images/val/000002.jpg" in str(
        err.value
    )
    assert "of size (6, 4)" in str(err.value)
    png_mask(mask, np.full((4, 6), 7))
    with raises_at(mask) as err:
        read_segmentation(root, "val", check_images=True)
    assert "class ids [7]" in str(err.value)
    mask.unlink()
    with raises_at(root / "images" / "val" / "000002.jpg") as err:
        read_segmentation(root, "val")
    assert f"expected {mask}" in str(err.value)


# ---- pre-training pool and manifests ------------------------------------------------------------
def pool_tree(root: Path) -> Path:
    jpg(root / "images" / "0000000.jpg")
    jpg(root / "images" / "0000001.jpg")
    write(
        root / "captions.csv",
        'image,caption\nimages/0000000.jpg,"a photo of a red sedan, side view"\n'
        "images/0000001.jpg,a photo of a white suv\n",
    )
    write(
        root / "attributes.csv",
        "image,color,type,model,identity,camera,viewpoint,track\n"
        "images/0000000.jpg,red,sedan,m03,12,4,side,0\n",
    )
    return root


def test_pool_reads_captions_and_attributes(tmp_path):
    root = pool_tree(tmp_path / "pool")
    records = read_pool(root)
    assert [r.path for r in records] == [root / "images/0000000.jpg", root / "images/0000001.jpg"]
    assert records[0].caption == "a photo of a red sedan, side view"
    assert records[0].attributes["track"] == "0" and records[0].attributes["color"] == "red"
    assert records[1].attributes == {}


def test_pool_errors_and_skip_corrupt(tmp_path, caplog):
    root = pool_tree(tmp_path / "pool")
    captions = root / "captions.csv"
    bad = truncate(root / "images" / "0000001.jpg")
    with caplog.at_level(logging.WARNING, logger="cgdmae.data.readers"):
        kept = read_pool(root, check_images=True, skip_corrupt=True)
    assert [r.path.name for r in kept] == ["0000000.jpg"] and str(bad) in caplog.text
    with raises_at(bad):
        read_pool(root, check_images=True)
    write(captions, "image,caption\nimages/0000000.jpg,x\nimages/0000009.jpg,y\n")
    with raises_at(captions, 3) as err:
        read_pool(root)
    assert "images/0000009.jpg does not exist" in str(err.value)
    write(captions, "image,caption\nimages/0000000.jpg,x\nimages/0000000.jpg,y\n")
    with raises_at(captions, 3) as err:
        read_pool(root)
    assert "listed twice (first on line 2)" in str(err.value)
    captions.write_bytes(b"image,caption\nimages/0000000.jpg,x\nimages/0000001.jpg,\xff\n")
    with raises_at(captions, 3) as err:
        read_pool(root)
    assert "not UTF-8 text" in str(err.value)
    write(captions, "image,text\nimages/0000000.jpg,x\n")
    with raises_at(captions, 1) as err:
        read_pool(root)
    assert "missing column(s) ['caption']" in str(err.value)


def test_manifest_keeps_selected_rows(tmp_path):
    root = pool_tree(tmp_path / "pool")
    manifest = write(
        root / "manifest.csv",
        "path,cluster,selected\nimages/0000000.jpg,3,True\nimages/0000001.jpg,3,false\n",
    )
    assert read_manifest(manifest) == [root / "images" / "0000000.jpg"]
    write(manifest, f"path\n{root}/images/0000001.jpg\n")  # absolute paths stay as they are
    assert read_manifest(manifest, root="/elsewhere") == [root / "images" / "0000001.jpg"]
    write(manifest, "path,selected\nimages/0000000.jpg,maybe\n")
    with raises_at(manifest, 2) as err:
        read_manifest(manifest)
    assert "selected='maybe' is not a boolean" in str(err.value)
    write(manifest, "path\nimages/0000000.jpg\nimages/gone.jpg\n")
    with raises_at(manifest, 3):
        read_manifest(manifest)
