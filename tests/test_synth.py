"""The synthetic world: deterministic, masks aligned with images, look-alikes, real formats."""

import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cgdmae.data.synth import writers
from cgdmae.data.synth.contact_sheet import write_contact_sheet
from cgdmae.data.synth.world import (
    PART_CLASSES,
    VERI_COLORS,
    VERI_TYPES,
    VIEWPOINTS,
    SynthConfigError,
    SynthWorld,
)

VERI_NAME = re.compile(r"^(\d{4})_c(\d{3})_(\d+)_(\d+)\.jpg$")


def render_bytes(seed: int) -> list[bytes]:
    world = SynthWorld(seed)
    rng = np.random.default_rng(seed)
    identities = world.sample_identities(6, rng)
    return [world.render(i, k, rng).image.tobytes() for k, i in enumerate(identities)]


def test_same_seed_same_pixels_other_seed_differs():
    assert render_bytes(3) == render_bytes(3)
    assert render_bytes(3) != render_bytes(4)


def test_world_has_the_veri_classes_and_enough_models():
    world = SynthWorld(0)
    assert len(VERI_COLORS) == 10 and len(VERI_TYPES) == 9
    assert len(world.models) >= 30
    assert {m.type for m in world.models} == set(range(9))
    assert len(world.cameras) == 20
    bigger = SynthWorld(0, n_cameras=7, n_models=45)
    assert len(bigger.models) == 45 and len(bigger.cameras) == 7
    assert len({m.name for m in bigger.models}) == 45


def test_bad_parameters_name_the_culprit(tmp_path):
    world = SynthWorld(0, n_cameras=4)
    ident = world.sample_identities(1, np.random.default_rng(0))[0]
    with pytest.raises(SynthConfigError, match="camera_id 4 .* 4 cameras"):
        world.render(ident, 4, np.random.default_rng(0))
    with pytest.raises(SynthConfigError, match="'top'"):
        world.render(ident, 0, np.random.default_rng(0), viewpoint="top")
    with pytest.raises(SynthConfigError, match="image size"):
        world.render(ident, 0, np.random.default_rng(0), size=(8, 64))
    with pytest.raises(SynthConfigError, match="n_models"):
        SynthWorld(0, n_models=5)
    with pytest.raises(SynthConfigError, match="cameras_per_id"):
        writers.write_veri776(tmp_path / "veri", n_cameras=4, cameras_per_id=1)
    with pytest.raises(SynthConfigError, match="n_images"):
        writers.write_pool(tmp_path / "pool", n_images=0)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("size", [(64, 64), (128, 256), (224, 224)])
def test_mask_matches_image_and_covers_the_parts(size):
    world = SynthWorld(0)
    rng = np.random.default_rng(0)
    ident = world.sample_identities(1, rng)[0]
    for viewpoint in VIEWPOINTS:
        render = world.render(ident, 0, rng, size, viewpoint=viewpoint)
        assert render.image.size == (size[1], size[0])
        assert render.mask.shape == size and render.mask.dtype == np.uint8
        assert render.mask.max() < len(PART_CLASSES)
    side = world.render(ident, 0, rng, size, viewpoint="side").mask
    assert {1, 2, 3, 4} <= set(np.unique(side))  # body, windows, wheels, lights
    for viewpoint in ("front", "rear"):
        face = world.render(ident, 0, rng, size, viewpoint=viewpoint).mask
        assert {1, 2, 4, 5} <= set(np.unique(face))  # glass, lights and plate of the face
    for viewpoint in ("front_three_quarter", "rear_three_quarter"):
        mix = world.render(ident, 0, rng, size, viewpoint=viewpoint).mask
        assert set(range(1, 6)) <= set(np.unique(mix))  # side wheels and the face's plate


def test_lookalike_identities_differ_only_in_small_detail():
    world = SynthWorld(0)
    rng = np.random.default_rng(1)
    identities = world.sample_identities(200, rng)
    pairs = {(i.model, i.color) for i in identities}
    assert len(pairs) < len(identities) * 0.8  # many identities share model and colour
    a = identities[0]
    b = world.make_identity(1, a.model, a.color, rng)
    shot = world.sample_shot(0, rng, viewpoint="front")
    img_a = np.asarray(
        world.render(a, 0, np.random.default_rng(5), (128, 128), shot=shot).image, float
    )
    img_b = np.asarray(
        world.render(b, 0, np.random.default_rng(5), (128, 128), shot=shot).image, float
    )
    changed = np.abs(img_a - img_b).max(axis=2) > 40
    assert 0 < changed.mean() < 0.1  # they differ, but only in a small part of the image


def test_veri776_layout(tmp_path):
    root = tmp_path / "veri"
    counts = writers.write_veri776(
        root, n_train_ids=4, n_test_ids=3, images_per_id=3, cameras_per_id=3, query_per_id=1
    )
    assert counts == {"train": 12, "query": 3, "test": 9}
    for split, folder in (
        ("train", "image_train"),
        ("query", "image_query"),
        ("test", "image_test"),
    ):
        names = (root / f"name_{split}.txt").read_text().split()
        assert sorted(names) == sorted(p.name for p in (root / folder).iterdir())
        assert all(VERI_NAME.match(n) for n in names)
    first_line = (root / "train_label.xml").read_bytes().split(b"\n")[0]
    assert first_line.strip() == b'<?xml version="1.0" encoding="gb2312"?>'
    tree = ET.fromstring((root / "train_label.xml").read_bytes().decode("gb2312").split("?>", 1)[1])
    assert tree.tag == "TrainingImages"
    items = tree.find("Items")
    assert int(items.get("number")) == 12 == len(items)
    item = items[0]
    assert set(item.attrib) == {"imageName", "vehicleID", "cameraID", "colorID", "typeID"}
    assert 1 <= int(item.get("colorID")) <= 10 and 1 <= int(item.get("typeID")) <= 9
    train_ids = {n[:4] for n in (root / "name_train.txt").read_text().split()}
    test_ids = {n[:4] for n in (root / "name_test.txt").read_text().split()}
    assert not train_ids & test_ids
    query_names = (root / "name_query.txt").read_text().split()
    assert {n[:4] for n in query_names} <= test_ids
    test_names = (root / "name_test.txt").read_text().split()
    for query in query_names:  # a query's camera never shows up in its own gallery
        gallery_cams = {n[5:9] for n in test_names if n[:4] == query[:4]}
        assert gallery_cams and query[5:9] not in gallery_cams
    assert (root / "list_color.txt").read_text().splitlines()[0] == "1 yellow"
    assert (root / "list_type.txt").read_text().splitlines()[-1] == "9 estate"
    assert not (tmp_path / "veri.partial").exists()


def test_vehicleid_layout(tmp_path):
    root = tmp_path / "vid"
    writers.write_vehicleid(root, n_train_ids=4, test_sizes=(2, 3, 4), images_per_id=2)
    line = re.compile(r"^(\d{7}) (\d+)$")
    train = (root / "train_test_split" / "train_list.txt").read_text().splitlines()
    assert len(train) == 8 and all(line.match(x) for x in train)
    train_ids = {x.split()[1] for x in train}
    for real, ids in ((800, 2), (1600, 3), (2400, 4)):
        lines = (root / "train_test_split" / f"test_list_{real}.txt").read_text().splitlines()
        assert all(line.match(x) for x in lines)
        assert len({x.split()[1] for x in lines}) == ids
        assert not {x.split()[1] for x in lines} & train_ids
        for x in lines:
            assert (root / "image" / f"{x.split()[0]}.jpg").exists()


def test_veriwild_layout_reads_back_with_the_real_reader(tmp_path):
    from cgdmae.data import read_veriwild

    root = tmp_path / "wild"
    writers.write_veriwild(root, n_train_ids=3, test_sizes=(2, 3, 4), images_per_id=3,
                           n_cameras=5, image_size=(32, 32))  # fmt: skip
    info = (root / "train_test_split" / "vehicle_info.txt").read_text().splitlines()
    assert info[0].startswith("id/image;") and len(info) == 1 + (3 + 4) * 3
    for real, ids in ((3000, 2), (5000, 3), (10000, 4)):
        splits = read_veriwild(root, real, check_images=True)
        assert len(splits.train) == 9 and len({r.pid for r in splits.train}) == 3
        assert len(splits.query) == ids and len(splits.gallery) == 2 * ids
        assert {r.pid for r in splits.query} == {r.pid for r in splits.gallery}
        assert not {r.path for r in splits.query} & {r.path for r in splits.gallery}
        for q in splits.query:  # each query has a gallery image from another camera
            assert any(g.pid == q.pid and g.camid != q.camid for g in splits.gallery)


def test_vfr_vps_layouts(tmp_path):
    writers.write_vfr(
        tmp_path / "vfr", n_train_per_class=1, n_test_per_class=1, image_size=(32, 32)
    )
    classes = (tmp_path / "vfr" / "classes.txt").read_text().split()
    assert sorted(p.name for p in (tmp_path / "vfr" / "train").iterdir()) == sorted(classes)
    writers.write_vps(tmp_path / "vps", n_train=3, n_val=2, image_size=(48, 64))
    assert (tmp_path / "vps" / "classes.txt").read_text().split() == list(PART_CLASSES)
    for split, n in (("train", 3), ("val", 2)):
        images = sorted((tmp_path / "vps" / "images" / split).glob("*.jpg"))
        assert len(images) == n
        for img in images:
            mask = np.asarray(Image.open(tmp_path / "vps" / "masks" / split / f"{img.stem}.png"))
            assert mask.shape == (48, 64) and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {*range(len(PART_CLASSES)), 255}
            assert 255 in mask  # part boundaries are ignored


def test_pool_is_long_tailed_with_duplicates(tmp_path):
    writers.write_pool(tmp_path / "pool", n_images=400, n_identities=80, image_size=(32, 32))
    captions = pd.read_csv(tmp_path / "pool" / "captions.csv")
    attributes = pd.read_csv(tmp_path / "pool" / "attributes.csv")
    assert list(captions.columns) == ["image", "caption"] and len(captions) == 400
    assert all((tmp_path / "pool" / p).exists() for p in captions.image)
    row = attributes.iloc[0]
    assert row.color in captions.caption[0] and row.type in captions.caption[0]
    combos = (attributes.color + "/" + attributes.type).value_counts(normalize=True)
    assert combos.iloc[0] > 3 / 90  # the commonest colour/type pair: over 3x its uniform share
    assert attributes.groupby("track").size().max() >= 3  # near-duplicate frame runs


def test_writer_crash_leaves_no_dataset(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(writers, "_write_veri_xml", boom)
    with pytest.raises(RuntimeError):
        writers.write_veri776(tmp_path / "veri", n_train_ids=2, n_test_ids=2, images_per_id=2)
    assert not (tmp_path / "veri").exists() and not (tmp_path / "veri.partial").exists()


def test_contact_sheet(tmp_path):
    out = tmp_path / "sheet.png"
    write_contact_sheet(out, seed=0, image_size=(32, 32))
    sheet = Image.open(out)
    # rows: 2 of cameras, 9 types, 2 of colours, 5 viewpoints, 1 of look-alike pairs
    assert sheet.size == (240 + 10 * (32 + 2), 19 * (32 + 2))
