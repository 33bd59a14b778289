"""Readers on fixture trees in the exact real layouts, and every bad input they must name."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cgdmae.data import (
    DatasetFormatError,
    ImageDataset,
    RandomIdentitySampler,
    SegmentationDataset,
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


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


VERI_XML = """<?xml version="1.0" encoding="gb2312"?>
<{tag} Version="1.0">
<Items number="{n}">
{items}
</Items>
</{tag}>
"""


def veri_tree(root: Path) -> Path:
    train = ["0001_c001_00016450_0.jpg", "0001_c002_00016460_1.jpg", "0005_c003_00020000_0.jpg"]
    query = ["0002_c002_00030600_1.jpg"]
    test = ["0002_c003_00030610_1.jpg", "0003_c004_00040000_0.jpg"]
    for folder, names in (("image_train", train), ("image_query", query), ("image_test", test)):
        for name in names:
            jpg(root / folder / name)
    write(root / "name_train.txt", "\n".join(train) + "\n")
    write(root / "name_query.txt", "\n".join(query) + "\n")
    write(root / "name_test.txt", "\n".join(test) + "\n")

    def items(names, color, type_):
        return "\n".join(
            f'<Item imageName="{n}" vehicleID="{n[:4]}" cameraID="c{n[6:9]}" colorID="{color}" typeID="{type_}" />'
            for n in names
        )

    (root / "train_label.xml").write_bytes(
        VERI_XML.format(tag="TrainingImages", n=3, items=items(train, 5, 2)).encode("gb2312")
    )
    (root / "test_label.xml").write_bytes(
        VERI_XML.format(tag="TestImages", n=2, items=items(test, 10, 9)).encode("gb2312")
    )
    write(root / "list_color.txt", "1 yellow\n2 orange\n")
    write(root / "list_type.txt", "1 sedan\n2 suv\n")
    return root


def test_veri776_reads_the_real_layout(tmp_path):
    splits = read_veri776(veri_tree(tmp_path / "VeRi"))
    assert [r.pid for r in splits.train] == [1, 1, 5]
    assert [r.label for r in splits.train] == [0, 0, 1]
    first = splits.train[0]
    assert (first.camid, first.frame, first.color, first.type) == (0, 16450, 4, 1)
    assert splits.query[0].pid == 2 and splits.query[0].camid == 1
    assert (splits.query[0].color, splits.query[0].type) == (9, 8)  # from its vehicle's labels
    assert [r.pid for r in splits.gallery] == [2, 3]
    assert splits.num_train_ids == 2


def test_veri776_missing_query_split(tmp_path):
    root = veri_tree(tmp_path / "VeRi")
    for p in (root / "image_query").iterdir():
        p.unlink()
    (root / "image_query").rmdir()
    with pytest.raises(DatasetFormatError, match=r"no image_query/ \(expected the query split\)"):
        read_veri776(root)


def test_veri776_bad_name_names_file_and_line(tmp_path):
    root = veri_tree(tmp_path / "VeRi")
    jpg(root / "image_train" / "car_1.jpg")
    write(root / "name_train.txt", "0001_c001_00016450_0.jpg\ncar_1.jpg\n")
    with pytest.raises(DatasetFormatError) as err:
        read_veri776(root)
    assert err.value.path == root / "name_train.txt" and err.value.line == 2
    assert "car_1.jpg" in str(err.value) and "name_train.txt:2" in str(err.value)


def test_veri776_listed_image_missing(tmp_path):
    root = veri_tree(tmp_path / "VeRi")
    (root / "image_test" / "0003_c004_00040000_0.jpg").unlink()
    with pytest.raises(
        DatasetFormatError, match=r"name_test.txt:2: lists 0003_c004_00040000_0.jpg"
    ):
        read_veri776(root)


def test_corrupt_jpeg_is_named_or_skipped(tmp_path, caplog):
    root = veri_tree(tmp_path / "VeRi")
    bad = root / "image_train" / "0005_c003_00020000_0.jpg"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    read_veri776(root)  # not decoded by default
    with pytest.raises(DatasetFormatError, match="corrupt or truncated") as err:
        read_veri776(root, check_images=True)
    assert err.value.path == bad
    splits = read_veri776(root, check_images=True, skip_corrupt=True)
    assert len(splits.train) == 2
    assert "skipped 1 corrupt image" in caplog.text and bad.name in caplog.text
    with pytest.raises(DatasetFormatError, match=str(bad)):
        ImageDataset(read_veri776(root).train)[2]


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
    return root


def test_vehicleid_protocol(tmp_path):
    train, test = read_vehicleid(vehicleid_tree(tmp_path / "VehicleID"), 1600)
    assert [r.pid for r in train] == [10, 10, 11] and [r.label for r in train] == [0, 0, 1]
    query, gallery = vehicleid_query_gallery(test, seed=3)
    assert sorted(r.pid for r in gallery) == [20, 21]  # one image per id
    assert len(query) == 3 and {r.camid for r in query} == {0} and {r.camid for r in gallery} == {1}
    assert vehicleid_query_gallery(test, seed=3) == (query, gallery)


def test_vehicleid_errors(tmp_path):
    root = vehicleid_tree(tmp_path / "VehicleID")
    write(root / "train_test_split" / "train_list.txt", "0000001 10\n0000099 12\n")
    with pytest.raises(DatasetFormatError, match=r"train_list.txt:2: image 0000099 has no file"):
        read_vehicleid(root)
    write(root / "train_test_split" / "train_list.txt", "0000001 10\n1 12\n")
    with pytest.raises(
        DatasetFormatError, match=r"train_list.txt:2: expected '<7-digit image> <vehicle id>'"
    ):
        read_vehicleid(root)
    with pytest.raises(DatasetFormatError, match="800, 1600, 2400"):
        read_vehicleid(root, 1000)


def test_veriwild(tmp_path):
    root = tmp_path / "VERI-Wild"
    for item in ("00001/000001", "00001/000002", "00002/000003", "00002/000004", "00003/000005"):
        jpg(root / "images" / f"{item}.jpg")
    split = root / "train_test_split"
    write(split / "vehicle_info.txt", "id/image;Camera ID;Time;Model;Type;Color\n"
          "00001/000001;7;2018;A;SUV;red\n00001/000002;8;2018;A;SUV;red\n"
          "00002/000003;1;2018;B;Sedan;white\n00002/000004;2;2018;B;Sedan;white\n00003/000005;3;2018;C;MPV;black\n")  # fmt: skip
    write(split / "train_list.txt", "00001/000001\n00001/000002\n")
    write(split / "test_3000.txt", "00002/000004\n00003/000005\n")
    write(split / "test_3000_query.txt", "00002/000003\n")
    splits = read_veriwild(root, 3000)
    assert [(r.pid, r.camid) for r in splits.train] == [(1, 7), (1, 8)]
    assert [(r.pid, r.camid) for r in splits.query] == [(2, 1)]
    assert [r.pid for r in splits.gallery] == [2, 3]
    with pytest.raises(DatasetFormatError, match="test_5000.txt"):
        read_veriwild(root, 5000)


def test_market1501(tmp_path):
    root = tmp_path / "Market-1501-v15.09.15"
    jpg(root / "bounding_box_train" / "0002_c1s1_000451_03.jpg")
    jpg(root / "bounding_box_train" / "0007_c2s3_070952_01.jpg")
    jpg(root / "query" / "0001_c1s1_001051_00.jpg")
    jpg(root / "bounding_box_test" / "0001_c2s1_000301_01.jpg")
    jpg(root / "bounding_box_test" / "-1_c1s1_000401_03.jpg")  # junk: dropped
    jpg(root / "bounding_box_test" / "0000_c1s1_000551_01.jpg")  # distractor: kept
    write(root / "bounding_box_test" / "Thumbs.db", "")
    splits = read_market1501(root)
    assert [(r.pid, r.camid, r.label) for r in splits.train] == [(2, 0, 0), (7, 1, 1)]
    assert sorted(r.pid for r in splits.gallery) == [0, 1]
    jpg(root / "query" / "1_c1s1_001051_00.jpg")
    with pytest.raises(
        DatasetFormatError, match="1_c1s1_001051_00.jpg: does not match Market-1501"
    ):
        read_market1501(root)


def test_image_folder_and_csv(tmp_path):
    root = tmp_path / "vfr"
    jpg(root / "train" / "sedan_01" / "a.jpg")
    jpg(root / "train" / "suv_02" / "b.jpg")
    write(root / "classes.txt", "suv_02\nsedan_01\n")
    split = read_image_folder(root, "train")
    assert split.classes == ["suv_02", "sedan_01"]
    assert [r.label for r in split.records] == [1, 0]
    jpg(root / "train" / "bus_09" / "c.jpg")
    with pytest.raises(DatasetFormatError, match=r"\['bus_09'\].*not in classes.txt"):
        read_image_folder(root, "train")
    with pytest.raises(DatasetFormatError, match="the test split"):
        read_image_folder(root, "test")
    write(
        tmp_path / "labels.csv", "path,label\nvfr/train/sedan_01/a.jpg,sedan\nvfr/missing.jpg,suv\n"
    )
    with pytest.raises(
        DatasetFormatError, match=r"labels.csv:3: image vfr/missing.jpg does not exist"
    ):
        read_classification_csv(tmp_path / "labels.csv")


def seg_tree(root: Path) -> Path:
    write(root / "classes.txt", "background\nbody\nwindow\n")
    for split, name in (("train", "000001"), ("val", "000002")):
        jpg(root / "images" / split / f"{name}.jpg", size=(6, 4))
        mask = np.array([[0, 1, 2, 255, 1, 0]] * 4, dtype=np.uint8)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(root / "masks" / split / f"{name}.png")
    return root


def test_segmentation(tmp_path):
    root = seg_tree(tmp_path / "vps")
    split = read_segmentation(root, "train", num_classes=3, check_images=True)
    assert split.classes == ["background", "body", "window"] and len(split.records) == 1
    item = SegmentationDataset(split.records)[0]
    assert item["mask"].shape == (4, 6) and int(item["mask"].max()) == 255
    with pytest.raises(DatasetFormatError, match=r"num_classes=5 but classes.txt lists 3"):
        read_segmentation(root, "train", num_classes=5)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "masks" / "val" / "000002.png")
    with pytest.raises(
        DatasetFormatError, match=r"000002.png: mask size \(5, 5\) differs from its image"
    ):
        read_segmentation(root, "val", check_images=True)
    with pytest.raises(DatasetFormatError, match=r"mask shape \(5, 5\) differs"):
        SegmentationDataset(read_segmentation(root, "val").records)[0]


def test_pool_and_manifest(tmp_path):
    root = tmp_path / "pool"
    jpg(root / "images" / "0000000.jpg")
    jpg(root / "images" / "0000001.jpg")
    write(
        root / "captions.csv",
        "image,caption\nimages/0000000.jpg,a photo of a red sedan\nimages/0000001.jpg,a photo\n",
    )
    write(root / "attributes.csv", "image,color,type\nimages/0000000.jpg,red,sedan\n")
    records = read_pool(root)
    assert records[0].caption == "a photo of a red sedan" and records[0].attributes == {
        "color": "red",
        "type": "sedan",
    }
    assert records[1].attributes == {}
    write(root / "captions.csv", "image,text\nimages/0000000.jpg,x\n")
    with pytest.raises(
        DatasetFormatError, match=r"captions.csv:1: missing column\(s\) \['caption'\]"
    ):
        read_pool(root)
    write(
        tmp_path / "manifest.csv",
        f"path,selected\n{root}/images/0000000.jpg,True\n{root}/images/0000001.jpg,False\n",
    )
    assert read_manifest(tmp_path / "manifest.csv") == [root / "images" / "0000000.jpg"]


def test_missing_root_is_named(tmp_path):
    with pytest.raises(DatasetFormatError, match=r"nowhere: missing directory \(VeRi-776 root\)"):
        read_veri776(tmp_path / "nowhere")


def test_pk_sampler_batches():
    pids = [0] * 5 + [1] * 4 + [2] * 2 + [3] * 6
    sampler = RandomIdentitySampler(pids, p=2, k=2, seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) and len(order) % 4 == 0
    for start in range(0, len(order), 4):
        batch = [pids[i] for i in order[start : start + 4]]
        assert batch[0] == batch[1] and batch[2] == batch[3] and batch[0] != batch[2]
    sampler.set_epoch(1)
    assert list(sampler) != order
    sampler.set_epoch(0)
    assert list(sampler) == order
