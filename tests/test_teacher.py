"""The CLIP teacher: the small one learns something, pretrained weights fail fast offline,
and cached targets are exactly what the online teacher would say for the same crop."""

import json
import time

import numpy as np
import pytest
import torch

from cgdmae.data import DatasetFormatError, read_pool
from cgdmae.data.synth.writers import write_pool
from cgdmae.pretrain.data import PretrainDataset, TeacherTargets, apply_crop, normalize, sample_crop
from cgdmae.pretrain.teacher import (
    TeacherUnavailableError,
    attribute_prompts,
    cache_teacher_targets,
    describe_pretrained,
    load_teacher,
    resolve_pretrained,
    train_small_teacher,
)

SMALL = dict(
    embed_dim=32,
    image_size=16,
    patch_size=4,
    vision_width=32,
    vision_layers=1,
    text_width=32,
    text_layers=1,
    text_heads=2,
    context_length=16,
)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "pool"
    write_pool(root, seed=0, n_images=160, n_identities=40, image_size=(32, 32))
    return root


@pytest.fixture(scope="module")
def trained(pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "model"
    metrics = train_small_teacher(
        read_pool(pool),
        out,
        model=SMALL,
        epochs=2,
        batch_size=32,
        lr=1e-3,
        weight_decay=0.1,
        holdout_fraction=0.2,
        seed=0,
    )
    return out, metrics


def test_small_teacher_trains_and_reloads(trained, pool):
    out, metrics = trained
    assert metrics["loss_per_epoch"][1] < metrics["loss_per_epoch"][0]
    assert {"color_acc", "type_acc", "n"} <= set(metrics) and metrics["n"] > 0
    assert json.loads((out / "teacher.json").read_text())["source"] == "train"
    teacher = load_teacher(out)
    images = torch.rand(3, 3, 32, 32)
    embeds = teacher.encode_image(images)
    assert embeds.shape == (3, 32) and torch.allclose(embeds.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert teacher.encode_text(["a photo of a red sedan"]).shape == (1, 32)
    assert all(not p.requires_grad for p in teacher.parameters())


def test_attribute_prompts_fill_every_colour_and_type():
    prompts = attribute_prompts(["a photo of {a} {color} {type}."])
    assert len(prompts) == 90
    assert "a photo of an orange suv." in prompts and "a photo of a red sedan." in prompts


def test_missing_local_weights_name_the_file(tmp_path):
    missing = tmp_path / "ViT-L-14.pt"
    with pytest.raises(TeacherUnavailableError, match=str(missing)):
        resolve_pretrained("ViT-L-14", str(missing))


def test_uncached_hub_weights_fail_fast_naming_repo_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    start = time.time()
    with pytest.raises(TeacherUnavailableError) as err:
        describe_pretrained("ViT-L-14", "openai", tmp_path / "model")
    message = str(err.value)
    assert "timm/vit_large_patch14_clip_224.openai/open_clip_pytorch_model.bin" in message
    assert "pretrained:" in message  # how to provide it
    assert time.time() - start < 5  # no network retries
    assert not (tmp_path / "model").exists()
    with pytest.raises(TeacherUnavailableError, match="no pretrained tag 'openia'.*openai"):
        resolve_pretrained("ViT-L-14", "openia")


def test_cached_targets_match_the_online_teacher_on_the_same_crop(trained, pool, tmp_path):
    teacher = load_teacher(trained[0])
    paths = [r.path for r in read_pool(pool)][:6]
    out = tmp_path / "targets.pt"
    cache_teacher_targets(
        teacher, paths, out, views=3, img_size=(24, 24), scale=(0.3, 1.0), seed=1, batch_size=4
    )
    targets = TeacherTargets.load(out)
    assert targets.crops.shape == (6, 3, 5) and targets.embeds.dtype == torch.float16
    dataset = PretrainDataset(
        paths, img_size=(24, 24), scale=(0.3, 1.0), seed=1, targets=targets, targets_file=out
    )
    dataset.set_epoch(2)
    item = dataset[4]
    # find the view the loader chose: its embedding must be the teacher's on that exact crop
    view = int(np.random.default_rng([1, 2, 4]).integers(3))
    from PIL import Image

    from cgdmae.pretrain.data import Crop

    top, left, h, w, flip = (int(v) for v in targets.crops[4, view])
    crop01 = apply_crop(
        Image.open(paths[4]).convert("RGB"), Crop(top, left, h, w, bool(flip)), (24, 24)
    )
    assert torch.allclose(item["image"], normalize(crop01))
    online = teacher.encode_image(crop01.unsqueeze(0))[0]
    assert torch.allclose(item["teacher_embed"], online, atol=2e-3)
    with pytest.raises(DatasetFormatError, match="cover 6 images but the pre-training set has 5"):
        PretrainDataset(paths[:5], targets=targets, targets_file=out)


def test_augmentation_is_a_function_of_seed_epoch_index(pool):
    paths = [r.path for r in read_pool(pool)][:4]
    a, b = (
        PretrainDataset(paths, img_size=(16, 16), seed=0),
        PretrainDataset(paths, img_size=(16, 16), seed=0),
    )
    a.set_epoch(3)
    b.set_epoch(3)
    assert torch.equal(a[2]["image"], b[2]["image"])
    b.set_epoch(4)
    assert not torch.equal(a[2]["image"], b[2]["image"])
    crop = sample_crop(np.random.default_rng(0), 64, 48, (0.2, 1.0))
    assert 0 < crop.height <= 48 and 0 < crop.width <= 64
    assert 0.2 * 64 * 48 * 0.9 <= crop.height * crop.width <= 64 * 48
