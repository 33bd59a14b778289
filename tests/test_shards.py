"""A pool packed into tar shards reads, trains and caches teacher views exactly as its plain
images/ layout: the same bytes, the same crops, with and without forked loader workers."""

import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cgdmae.data import DatasetFormatError, load_rgb, read_manifest, read_pool
from cgdmae.data.shards import pack_pool, split_member
from cgdmae.pretrain.data import PretrainDataset
from cgdmae.teacher.targets import TargetViews

N = 7


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    """A plain pool of N JPEGs and the same packed into 3 shards."""
    root = tmp_path_factory.mktemp("pool")
    plain = root / "plain"
    (plain / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    captions, attributes = ["image,caption"], ["image,color"]
    for k in range(N):
        pixels = rng.integers(0, 255, size=(30 + k, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(plain / f"images/{k:03d}.jpg", quality=90)
        captions.append(f"images/{k:03d}.jpg,a car number {k}.")
        attributes.append(f"images/{k:03d}.jpg,red")
    (plain / "captions.csv").write_text("\n".join(captions) + "\n")
    (plain / "attributes.csv").write_text("\n".join(attributes) + "\n")
    sharded = root / "sharded"
    written = pack_pool(plain, sharded, 3)
    assert [p.name for p in written] == ["00000.tar", "00001.tar", "00002.tar"]
    assert not (sharded / "images").exists()
    return plain, sharded


def test_the_sharded_pool_reads_as_the_plain_one(pools):
    plain, sharded = pools
    a, b = read_pool(plain), read_pool(sharded)
    assert [r.caption for r in a] == [r.caption for r in b]
    assert [r.attributes for r in a] == [r.attributes for r in b] and b[0].attributes
    assert split_member(b[4].path) == (str(sharded / "shards/00001.tar"), "images/004.jpg")
    for x, y in zip(a, b, strict=True):
        assert x.path.name == y.path.name
        assert np.array_equal(np.asarray(load_rgb(x.path)), np.asarray(load_rgb(y.path)))
    with tarfile.open(sharded / "shards/00000.tar") as tar:
        assert tar.getnames() == ["images/000.jpg", "images/001.jpg", "images/002.jpg"]


def test_views_and_teacher_crops_are_identical_with_forked_workers(pools):
    plain, sharded = pools
    paths = {
        name: [r.path for r in read_pool(root)] for name, root in zip("ab", pools, strict=True)
    }
    datasets = {name: PretrainDataset(p, img_size=(16, 16), seed=2) for name, p in paths.items()}
    for key in [(0, 1), (3, 6)]:
        assert torch.equal(datasets["a"][key]["image"], datasets["b"][key]["image"])
    keys = [(1, k) for k in range(N)]
    loaders = {
        name: [b["image"] for b in DataLoader(d, batch_size=3, sampler=keys, num_workers=2)]
        for name, d in datasets.items()
    }
    assert all(torch.equal(x, y) for x, y in zip(loaders["a"], loaders["b"], strict=True))
    views = {name: TargetViews(p, 2, (16, 16), (0.2, 1.0), seed=5) for name, p in paths.items()}
    for i in (0, N - 1):
        (_, crops_a, views_a), (_, crops_b, views_b) = views["a"][i], views["b"][i]
        assert torch.equal(crops_a, crops_b) and torch.equal(views_a, views_b)


def test_a_manifest_may_name_images_inside_shards(pools, tmp_path):
    _, sharded = pools
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,selected\n{sharded}/shards/00002.tar/images/006.jpg,1\n")
    assert [p.name for p in read_manifest(manifest)] == ["006.jpg"]
    manifest.write_text(f"path\n{sharded}/shards/00002.tar/images/099.jpg\n")
    with pytest.raises(DatasetFormatError, match=r"image .*099\.jpg does not exist"):
        read_manifest(manifest)


def test_a_missing_member_or_shard_is_named(pools, tmp_path):
    _, sharded = pools
    with pytest.raises(DatasetFormatError, match=r"00001\.tar/images/000\.jpg.*does not exist"):
        load_rgb(sharded / "shards/00001.tar/images/000.jpg")  # it is in shard 0
    copy = tmp_path / "copy"
    (copy / "shards").mkdir(parents=True)
    (copy / "shards/00000.tar").write_bytes((sharded / "shards/00000.tar").read_bytes())
    (copy / "captions.csv").write_text(
        "image,caption\nshards/00000.tar/images/000.jpg,a\nshards/00001.tar/images/003.jpg,b\n"
    )
    with pytest.raises(
        DatasetFormatError,
        match=r"captions\.csv:3: image shards/00001\.tar/images/003\.jpg does not exist",
    ):
        read_pool(copy)


def test_the_cli_packs_a_pool(pools, tmp_path):
    plain, _ = pools
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "cgdmae.data.shards", str(plain), str(out), "--shards", "2"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(read_pool(out)) == N and len(result.stdout.splitlines()) == 2


def test_check_data_decodes_the_images_inside_shards(pools, tmp_path):
    from cgdmae.data.scan import scan

    _, sharded = pools
    count, bad = scan({"pool": {"path": str(sharded)}})
    assert (count, bad) == (N, [])
    broken = tmp_path / "broken"
    (broken / "images").mkdir(parents=True)
    (broken / "images/x.jpg").write_bytes(b"not a jpeg")
    with tarfile.open(broken / "bad.tar", "w") as tar:
        tar.add(broken / "images/x.jpg", arcname="images/x.jpg")
    (broken / "images/x.jpg").unlink()
    count, bad = scan({"pool": {"path": str(broken)}})
    assert count == 1 and "bad.tar/images/x.jpg" in bad[0][1]


def test_at_most_open_shards_descriptors_stay_open(pools, monkeypatch):
    from cgdmae.data import shards

    plain, sharded = pools
    monkeypatch.setattr(shards, "OPEN_SHARDS", 2)
    expected = [np.asarray(load_rgb(r.path)) for r in read_pool(plain)]
    for _ in range(2):  # every shard in turn, twice: descriptors are closed and reopened
        got = [np.asarray(load_rgb(r.path)) for r in read_pool(sharded)]
        assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))
        assert len(shards._open) <= 2
