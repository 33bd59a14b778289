"""Pre-training data: augmentation is a pure function of (seed, epoch, index), and cached mode
applies exactly the crop the teacher saw, checked against a crop done by hand with PIL."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cgdmae.data import DatasetFormatError
from cgdmae.pretrain.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PretrainDataset,
    TeacherTargets,
    denormalize,
    normalize,
    sample_crop,
)

SIZE = (16, 16)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Six 40×30 images with distinct coloured rectangles, so crops and flips show."""
    root = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(0)
    out = []
    for k in range(6):
        pixels = rng.integers(0, 255, size=(30, 40, 3), dtype=np.uint8)
        pixels[5:20, 3 + k : 15 + k] = (255, 40 * k, 0)
        path = root / f"{k:03d}.png"
        Image.fromarray(pixels).save(path)
        out.append(path)
    return out


def manual_view(path, top, left, height, width, flip) -> torch.Tensor:
    """Crop, bicubic resize, mirror and ImageNet-normalise with PIL and numpy alone."""
    image = Image.open(path).convert("RGB").crop((left, top, left + width, top + height))
    image = image.resize(SIZE[::-1], Image.BICUBIC)
    if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return (pixels - mean.view(3, 1, 1)) / std.view(3, 1, 1)


def write_cache(path, image_paths, crops, dim=4):
    """A cache whose embedding of view k is the one-hot vector e_k, to read back the view."""
    crops = torch.tensor(crops, dtype=torch.int32)
    n, views = crops.shape[:2]
    embeds = torch.eye(dim)[:views].expand(n, views, dim).half()
    torch.save({"paths": [str(p) for p in image_paths], "crops": crops, "embeds": embeds}, path)
    return path


def test_same_seed_epoch_index_gives_identical_tensors(paths):
    a, b = (
        PretrainDataset(paths, img_size=SIZE, seed=3),
        PretrainDataset(paths, img_size=SIZE, seed=3),
    )
    a.set_epoch(2)
    b.set_epoch(2)
    assert torch.equal(a[4]["image"], b[4]["image"]) and a[4]["index"] == 4
    b.set_epoch(3)
    assert not torch.equal(a[4]["image"], b[4]["image"])
    other_seed = PretrainDataset(paths, img_size=SIZE, seed=4)
    other_seed.set_epoch(2)
    assert not torch.equal(a[4]["image"], other_seed[4]["image"])


def test_batches_do_not_depend_on_the_number_of_workers(paths):
    dataset = PretrainDataset(paths, img_size=SIZE, seed=0)
    dataset.set_epoch(5)
    inline = [b["image"] for b in DataLoader(dataset, batch_size=4, num_workers=0)]
    workers = [b["image"] for b in DataLoader(dataset, batch_size=4, num_workers=2)]
    assert all(torch.equal(x, y) for x, y in zip(inline, workers, strict=True))


def test_sampled_crops_respect_scale_ratio_and_flip_switch():
    rng = np.random.default_rng(0)
    crops = [sample_crop(rng, 64, 48, (0.2, 1.0)) for _ in range(300)]
    for c in crops:
        assert 0 <= c.top <= 48 - c.height and 0 <= c.left <= 64 - c.width
        assert 0.2 * 64 * 48 * 0.85 <= c.height * c.width <= 64 * 48
        assert 3 / 4 * 0.85 <= c.width / c.height <= 4 / 3 * 1.15
    assert 0.35 < np.mean([c.flip for c in crops]) < 0.65
    assert not any(sample_crop(rng, 64, 48, (0.2, 1.0), hflip=False).flip for _ in range(50))


def test_online_image_is_the_normalised_crop(paths):
    dataset = PretrainDataset(paths, img_size=SIZE, seed=1)
    image = dataset[2]["image"]
    assert image.shape == (3, *SIZE) and image.dtype == torch.float32
    back = denormalize(image.unsqueeze(0))
    assert back.min() >= -1e-5 and back.max() <= 1 + 1e-5
    assert torch.allclose(normalize(back[0]), image, atol=1e-6)


def test_cached_mode_applies_exactly_the_cached_crop(paths, tmp_path):
    crops = [[[2, 3, 20, 25, 0], [0, 10, 30, 30, 1], [5, 0, 12, 16, 1]] for _ in paths]
    cache = write_cache(tmp_path / "targets.pt", paths, crops)
    dataset = PretrainDataset(
        paths, img_size=SIZE, seed=0, targets=TeacherTargets.load(cache), targets_file=cache
    )
    seen = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        for index in (1, 4):
            item = dataset[index]
            view = int(item["teacher_embed"].argmax())
            assert torch.equal(item["teacher_embed"], torch.eye(4)[view])
            expected = manual_view(paths[index], *crops[index][view])
            assert torch.allclose(item["image"], expected, atol=1e-5)
            seen.add(view)
    assert seen == {0, 1, 2}  # the loader samples among all cached views


def test_bad_caches_name_the_file(paths, tmp_path):
    short = write_cache(tmp_path / "short.pt", paths[:5], [[[0, 0, 8, 8, 0]]] * 5)
    with pytest.raises(DatasetFormatError, match=r"short\.pt.*cover 5 images .* has 6"):
        PretrainDataset(paths, targets=TeacherTargets.load(short), targets_file=short)

    outside = write_cache(tmp_path / "outside.pt", paths, [[[10, 30, 25, 20, 0]]] * 6)
    dataset = PretrainDataset(paths, targets=TeacherTargets.load(outside), targets_file=outside)
    with pytest.raises(DatasetFormatError, match=r"outside\.pt.*lies outside .*001\.png"):
        dataset[1]

    swapped = write_cache(tmp_path / "swapped.pt", paths[::-1], [[[0, 0, 8, 8, 0]]] * 6)
    with pytest.raises(DatasetFormatError, match=r"swapped\.pt.*target 0 is for .*005\.png"):
        PretrainDataset(paths, targets=TeacherTargets.load(swapped), targets_file=swapped)

    broken = tmp_path / "broken.pt"
    torch.save({"paths": [str(p) for p in paths], "crops": torch.zeros(6, 2, 5)}, broken)
    with pytest.raises(DatasetFormatError, match=r"broken\.pt.*not a readable teacher-target"):
        TeacherTargets.load(broken)

    misshaped = tmp_path / "misshaped.pt"
    torch.save(
        {
            "paths": [str(p) for p in paths],
            "crops": torch.zeros(6, 2, 4),
            "embeds": torch.zeros(6, 2, 8),
        },
        misshaped,
    )
    with pytest.raises(DatasetFormatError, match=r"misshaped\.pt.*'crops' has shape \(6, 2, 4\)"):
        TeacherTargets.load(misshaped)


def test_targets_made_for_other_crops_are_refused_naming_both(paths, tmp_path):
    """A run whose img_size or crop_scale differs from the cache's would train on crops made for
    another run: refused, where an old cache without the record is still read."""
    cache = write_cache(tmp_path / "targets.pt", paths, [[[0, 0, 8, 8, 0]]] * 6)
    data = torch.load(cache, weights_only=True)
    torch.save({**data, "img_size": [16, 16], "scale": [0.2, 1.0]}, cache)
    targets = TeacherTargets.load(cache)
    assert targets.img_size == (16, 16) and targets.scale == (0.2, 1.0)
    PretrainDataset(paths, img_size=(16, 16), scale=(0.2, 1.0), targets=targets)
    for size, scale in (((24, 24), (0.2, 1.0)), ((16, 16), (0.08, 1.0))):
        with pytest.raises(
            DatasetFormatError,
            match=r"targets\.pt.*img_size \[16, 16\] and crop_scale \[0\.2, 1\.0\].*this run",
        ):
            PretrainDataset(paths, img_size=size, scale=scale, targets=targets, targets_file=cache)


def test_cache_teacher_targets_records_the_crops_it_was_made_for(paths, tmp_path):
    from cgdmae.teacher.targets import cache_teacher_targets

    class Teacher(torch.nn.Module):
        embed_dim = 3

        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.zeros(3))

        def encode_image(self, batch):
            return torch.nn.functional.normalize(batch.mean((2, 3)), dim=-1)

    out = tmp_path / "targets.pt"
    cache_teacher_targets(
        Teacher(), paths, out, views=2, img_size=(16, 12), scale=(0.3, 0.9), seed=0
    )
    targets = TeacherTargets.load(out)
    assert targets.img_size == (16, 12) and targets.scale == (0.3, 0.9)
    PretrainDataset(paths, img_size=(16, 12), scale=(0.3, 0.9), targets=targets)


def test_the_crop_summary_counts_fixed_views_against_fresh_crops(paths, tmp_path):
    crops = [[[0, 0, 8, 8, 0], [1, 1, 9, 9, 1], [0, 0, 8, 8, 0]] for _ in paths]  # 2 distinct
    cache = write_cache(tmp_path / "targets.pt", paths, crops)
    cached = PretrainDataset(paths, targets=TeacherTargets.load(cache))
    assert cached.crop_summary(400).startswith(f"distinct crops: {2 * len(paths)} (3 fixed")
    fresh = PretrainDataset(paths)
    assert fresh.crop_summary(400).startswith(f"distinct crops: {400 * len(paths)} (a fresh")


def test_the_mae_control_on_fixed_crops_trains_on_the_cached_views(paths, tmp_path):
    """`cached_crops`: a plain MAE run reads the cached views (and ignores their embeddings),
    so its crops are exactly those cgd_mae's targets were made from."""
    import yaml

    from cgdmae.config import run_spec, validate_config
    from cgdmae.pretrain.run import build_dataset, build_method

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    config["ablations"] = {}
    config["runs"] = {"mae_fixed": {"method": "mae", "overrides": {
        "cached_crops": "clip_small", "model.img_size": list(SIZE), "model.patch_size": 8}}}  # fmt: skip
    config = validate_config(config, root / "workflow" / "schemas" / "config.schema.yaml")
    spec = run_spec(config, "mae_fixed")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in paths))
    crops = [[[2, 3, 20, 25, 0], [0, 10, 30, 30, 1]] for _ in paths]
    cache = write_cache(tmp_path / "targets.pt", paths, crops)
    dataset = build_dataset(spec, manifest, seed=0, targets=cache)
    assert "distinct crops: 12 (2 fixed cached views of each of 6 images" in dataset.crop_summary(5)
    item = dataset[3]
    view = int(item["teacher_embed"].argmax())
    assert torch.allclose(item["image"], manual_view(paths[3], *crops[3][view]), atol=1e-5)
    batch = {"image": item["image"][None], "teacher_embed": item["teacher_embed"][None]}
    assert torch.isfinite(build_method(spec)(batch)["loss"])


RANK_SCRIPT = """
import json, os, sys
import torch
import torch.distributed as dist
from cgdmae.bench.targets_memory import memory_kb
from cgdmae.pretrain.data import TeacherTargets

dist.init_process_group("gloo")
before = memory_kb()
targets = TeacherTargets.load(sys.argv[1])
rows = targets.embeds[dist.get_rank() :: 7].float().sum()  # reads a seventh of the store
mapped = sys.argv[1] in open("/proc/self/maps").read()
gained = memory_kb()["anonymous"] - before["anonymous"]
out = {"mapped": mapped, "anonymous_kb": gained, "rows": float(rows)}
with open(f"{sys.argv[2]}/rank{dist.get_rank()}.json", "w") as f:
    json.dump(out, f)
dist.destroy_process_group()
"""


def test_ddp_ranks_share_the_memory_mapped_target_store(tmp_path):
    """Two ranks open a 30 MB store: each maps the file and holds well under a tenth of it in
    its own memory (the pages they read are the page cache's, shared)."""
    import json
    import subprocess
    import sys

    from cgdmae.models import atomic_save

    n, views, dim = 5000, 4, 768
    store = tmp_path / "targets.pt"
    atomic_save({"paths": [f"{i}.jpg" for i in range(n)],
                 "crops": torch.zeros(n, views, 5, dtype=torch.int32),
                 "embeds": torch.ones(n, views, dim).half()}, store)  # fmt: skip
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run([*cmd, str(script), str(store), str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    store_kb = n * views * dim * 2 / 1024
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["mapped"] and result["rows"] > 0
        assert result["anonymous_kb"] < 0.1 * store_kb, result


def test_persistent_workers_see_each_epoch_and_train_as_inline(paths, tmp_path, monkeypatch):
    """The engine hands (epoch, index) keys to a pre-training set, so one loader's workers
    persist across epochs and still draw each epoch's views: the run equals one without
    workers, weights and log, and the loader is built once instead of once per epoch."""
    import csv

    from cgdmae.models import create_mae
    from cgdmae.pretrain.methods import with_defaults
    from cgdmae.training import engine
    from cgdmae.training.engine import TrainConfig, train

    built = []

    class CountingLoader(DataLoader):
        def __init__(self, *args, **kwargs):
            built.append(kwargs["persistent_workers"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(engine, "DataLoader", CountingLoader)
    key = (1, 4)
    assert torch.equal(PretrainDataset(paths, img_size=SIZE, seed=3)[key]["image"],
                       _at_epoch(PretrainDataset(paths, img_size=SIZE, seed=3), 1)[4]["image"])  # fmt: skip
    runs = {}
    for workers in (0, 2):
        torch.manual_seed(0)
        model = create_mae("tiny", img_size=SIZE, patch_size=8, embed_dim=16, depth=1,
                           num_heads=2, decoder_dim=8, decoder_depth=1, decoder_heads=2)  # fmt: skip
        method = with_defaults("mae", model)
        cfg = TrainConfig(epochs=3, batch_size=2, blr=0.1, warmup_epochs=1, seed=1,
                          device="cpu", num_workers=workers)  # fmt: skip
        out = tmp_path / f"w{workers}"
        train(method, PretrainDataset(paths, img_size=SIZE, seed=0), cfg, out)
        with open(out / "log.csv") as f:
            rows = [{k: v for k, v in r.items() if k not in ("img_per_s", "seconds")}
                    for r in csv.DictReader(f)]  # fmt: skip
        runs[workers] = rows, method.model.state_dict()
    assert built == [False, False, False, True]  # a loader per epoch inline; one, persistent
    assert runs[0][0] == runs[2][0]
    assert all(torch.equal(v, runs[2][1][k]) for k, v in runs[0][1].items())


def _at_epoch(dataset, epoch):
    dataset.set_epoch(epoch)
    return dataset
