"""The CLIP teacher: the small one learns colours and reloads through open_clip alone,
pretrained weights are found offline or fail fast naming the file, and cached targets are
exactly what the online teacher says for the same crop."""

import csv
import json
import time

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image, ImageDraw

from cgdmae.data import DatasetFormatError, read_pool
from cgdmae.data.synth.world import VERI_COLORS, VERI_TYPES
from cgdmae.pretrain.data import PretrainDataset, TeacherTargets, denormalize, normalize
from cgdmae.teacher.clip import (
    TeacherUnavailableError,
    attribute_prompts,
    describe_pretrained,
    load_teacher,
    resolve_pretrained,
    train_small_teacher,
)
from cgdmae.teacher.targets import cache_teacher_targets

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
RGB = {
    "yellow": (230, 210, 30),
    "orange": (240, 130, 20),
    "green": (40, 150, 50),
    "gray": (128, 128, 128),
    "red": (200, 30, 30),
    "blue": (30, 60, 200),
    "white": (245, 245, 245),
    "golden": (190, 160, 70),
    "brown": (110, 70, 30),
    "black": (15, 15, 15),
}


def make_pool(root, n_images: int, seed: int = 0):
    """images/ + captions.csv + attributes.csv: a coloured body whose shape depends on type."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    captions, attributes = [], []
    for k in range(n_images):
        color, vtype = VERI_COLORS[k % 10], VERI_TYPES[(k // 10) % 9]
        t = VERI_TYPES.index(vtype)
        image = Image.fromarray(rng.integers(90, 170, size=(24, 24, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(image)
        draw.rectangle((2, 20 - 6 - t // 2, 21, 20), fill=RGB[color])
        draw.rectangle((6 + t % 3, 9 - t // 3, 15 + t % 3, 20 - 6 - t // 2), fill=RGB[color])
        name = f"images/{k:04d}.jpg"
        image.save(root / name, quality=95)
        article = "an" if color[0] in "aeiou" else "a"
        captions.append({"image": name, "caption": f"a photo of {article} {color} {vtype}"})
        attributes.append({"image": name, "color": color, "type": vtype, "identity": str(k // 3)})
    for filename, rows in (("captions.csv", captions), ("attributes.csv", attributes)):
        with open(root / filename, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return make_pool(tmp_path_factory.mktemp("data") / "pool", 400)


@pytest.fixture(scope="module")
def trained(pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "model"
    metrics = train_small_teacher(
        read_pool(pool),
        out,
        model=SMALL,
        epochs=6,
        batch_size=40,
        lr=2e-3,
        weight_decay=0.1,
        holdout_fraction=0.2,
        seed=0,
        metrics_path=out.parent / "metrics.json",
    )
    return out, metrics


def test_small_teacher_learns_colours_and_writes_its_metrics(trained):
    out, metrics = trained
    assert metrics["loss_per_epoch"][-1] < metrics["loss_per_epoch"][0]
    assert metrics["n"] == metrics["heldout_images"] > 0
    assert metrics["color_acc"] > 2 * metrics["color_chance"]  # chance is 10%
    assert json.loads((out.parent / "metrics.json").read_text()) == metrics


def test_small_teacher_reloads_with_open_clip_alone(trained):
    out, _ = trained
    teacher = load_teacher(out)
    clip, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    images = torch.rand(3, 3, 16, 16)
    embeds = teacher.encode_image(images)
    assert embeds.shape == (3, 32) and torch.allclose(embeds.norm(dim=-1), torch.ones(3), atol=1e-5)
    mean = torch.tensor(preprocess.transforms[-1].mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.transforms[-1].std).view(1, 3, 1, 1)
    with torch.no_grad():
        plain = torch.nn.functional.normalize(
            clip.eval().encode_image((images - mean) / std), dim=-1
        )
    assert torch.allclose(embeds, plain, atol=1e-6)
    tokens = open_clip.get_tokenizer(f"local-dir:{out}")(["a photo of a red sedan"])
    assert tokens.shape == (1, SMALL["context_length"])
    assert teacher.encode_text(["a photo of a red sedan"]).shape == (1, 32)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not teacher.train().training  # stays frozen inside a training method


def test_missing_parts_of_a_teacher_dir_are_named(trained, tmp_path):
    with pytest.raises(TeacherUnavailableError, match=str(tmp_path / "teacher.json")):
        load_teacher(tmp_path)
    (tmp_path / "teacher.json").write_text(json.dumps({"source": "train"}))
    with pytest.raises(TeacherUnavailableError, match="open_clip_config.json is missing"):
        load_teacher(tmp_path)


def test_attribute_prompts_fill_every_colour_and_type():
    prompts = attribute_prompts(["a photo of {a} {color} {type}."])
    assert len(prompts) == 90
    assert "a photo of an orange suv." in prompts and "a photo of a red sedan." in prompts


def test_missing_local_weights_name_the_file_and_the_key(tmp_path):
    missing = tmp_path / "ViT-L-14.pt"
    with pytest.raises(TeacherUnavailableError, match=f"teachers.big.pretrained: .*{missing}"):
        resolve_pretrained("ViT-L-14", str(missing), "teachers.big.pretrained")
    with pytest.raises(TeacherUnavailableError, match="no pretrained tag 'openia'.*openai"):
        resolve_pretrained("ViT-L-14", "openia")


def test_uncached_tag_fails_fast_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))
    start = time.time()
    with pytest.raises(TeacherUnavailableError) as err:
        describe_pretrained("ViT-L-14", "openai", tmp_path / "model", "teachers.big.pretrained")
    message = str(err.value)
    assert "timm/vit_large_patch14_clip_224.openai/open_clip_pytorch_model.bin" in message
    assert str(tmp_path / "hub") in message and str(tmp_path / ".cache/clip/ViT-L-14.pt") in message
    assert "openaipublic.azureedge.net" in message  # where to get it
    assert "set teachers.big.pretrained to that path" in message  # how to provide it
    assert time.time() - start < 5  # no network retries
    assert not (tmp_path / "model").exists()


def test_cached_tags_are_found_without_network(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    snapshot = hub / "models--timm--vit_large_patch14_clip_224.openai" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"weights")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HOME", str(tmp_path))
    found = resolve_pretrained("ViT-L-14", "openai")
    assert found == str(snapshot / "open_clip_model.safetensors")
    url_cache = tmp_path / ".cache" / "clip"
    url_cache.mkdir(parents=True)
    (url_cache / "RN50.pt").write_bytes(b"weights")
    assert resolve_pretrained("RN50", "openai") == str(url_cache / "RN50.pt")


def register_tiny_clip(folder, name: str) -> None:
    """A tiny open_clip architecture under ``name``, for teachers loaded from local files."""
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 16,
            "layers": 1,
            "width": 32,
            "head_width": 32,
            "patch_size": 8,
        },
        "text_cfg": {"context_length": 12, "width": 32, "heads": 2, "layers": 1},
    }
    (folder / "configs").mkdir()
    (folder / "configs" / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder / "configs")


def test_pretrained_teacher_from_a_local_checkpoint(tmp_path):
    register_tiny_clip(tmp_path, "cgdmae-test-clip")
    torch.manual_seed(0)
    reference = open_clip.create_model("cgdmae-test-clip").eval()
    weights = tmp_path / "weights.pt"
    torch.save(reference.state_dict(), weights)
    describe_pretrained("cgdmae-test-clip", str(weights), tmp_path / "model")
    teacher = load_teacher(tmp_path / "model")
    images = torch.rand(2, 3, 16, 16)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(
            reference.encode_image((images - mean) / std), dim=-1
        )
    assert teacher.embed_dim == 16
    assert torch.allclose(teacher.encode_image(images), expected, atol=1e-6)


def test_cached_targets_match_the_online_teacher_on_the_same_crop(trained, pool, tmp_path):
    teacher = load_teacher(trained[0])
    paths = [r.path for r in read_pool(pool)][:6]
    out = tmp_path / "targets.pt"
    cache_teacher_targets(
        teacher, paths, out, views=3, img_size=(20, 20), scale=(0.3, 1.0), seed=1, batch_size=4
    )
    targets = TeacherTargets.load(out)
    assert targets.crops.shape == (6, 3, 5) and targets.embeds.dtype == torch.float16
    again = tmp_path / "again.pt"
    cache_teacher_targets(
        teacher, paths, again, views=3, img_size=(20, 20), scale=(0.3, 1.0), seed=1
    )
    assert torch.equal(TeacherTargets.load(again).crops, targets.crops)  # fixed views
    workers = tmp_path / "workers.pt"  # decoded in 2 loader workers: the same file's contents
    cache_teacher_targets(teacher, paths, workers, views=3, img_size=(20, 20), scale=(0.3, 1.0),
                          seed=1, batch_size=4, num_workers=2)  # fmt: skip
    in_workers = TeacherTargets.load(workers)
    assert torch.equal(in_workers.crops, targets.crops)
    assert torch.equal(in_workers.embeds, targets.embeds)
    chunked = tmp_path / "chunked.pt"  # committed one image at a time: the same file
    cache_teacher_targets(teacher, paths, chunked, views=3, img_size=(20, 20), scale=(0.3, 1.0),
                          seed=1, batch_size=4, chunk_batches=1)  # fmt: skip
    assert torch.equal(TeacherTargets.load(chunked).embeds, targets.embeds)
    assert not (tmp_path / "chunked.pt.partial").exists()
    more = tmp_path / "more.pt"  # a 5-view store starts with the 3-view one, bit for bit
    cache_teacher_targets(teacher, paths, more, views=5, img_size=(20, 20), scale=(0.3, 1.0),
                          seed=1, batch_size=4)  # fmt: skip
    first = TeacherTargets.load(more).first_views(3, more)
    assert torch.equal(first.crops, targets.crops) and torch.equal(first.embeds, targets.embeds)
    with pytest.raises(DatasetFormatError, match=r"more\.pt.*6 cached views.*holds 5"):
        TeacherTargets.load(more).first_views(6, more)
    views = targets.embeds[4].float()
    assert (views[0] - views[1]).abs().max() > 1e-2  # so matching the right view means something
    dataset = PretrainDataset(
        paths, img_size=(20, 20), scale=(0.3, 1.0), seed=1, targets=targets, targets_file=out
    )
    for epoch in range(3):
        dataset.set_epoch(epoch)
        item = dataset[4]
        online = teacher.encode_image(normalize_back(item["image"]))[0]
        assert torch.allclose(item["teacher_embed"], online, atol=2e-3)


def test_teacher_targets_resume_from_their_committed_chunks(trained, pool, tmp_path, monkeypatch):
    """A job killed after some chunks (a time limit) resumes at the first missing one and
    writes the file an uninterrupted job writes; chunks made for another seed are dropped."""
    teacher = load_teacher(trained[0])
    paths = [r.path for r in read_pool(pool)][:6]
    settings = dict(views=2, img_size=(20, 20), scale=(0.3, 1.0), batch_size=2, chunk_batches=1)
    cache_teacher_targets(teacher, paths, tmp_path / "whole.pt", seed=1, **settings)
    calls, encode = [], teacher.encode_image

    def killed_after_4(images):
        calls.append(len(images))
        if len(calls) > 4:
            raise KeyboardInterrupt("time limit")
        return encode(images)

    monkeypatch.setattr(teacher, "encode_image", killed_after_4)
    out = tmp_path / "cut.pt"
    with pytest.raises(KeyboardInterrupt):
        cache_teacher_targets(teacher, paths, out, seed=1, **settings)
    assert len(list((tmp_path / "cut.pt.partial").glob("*.pt"))) == 4 and not out.exists()
    calls.clear()
    monkeypatch.setattr(teacher, "encode_image", lambda images: calls.append(1) or encode(images))
    cache_teacher_targets(teacher, paths, out, seed=1, **settings)
    assert len(calls) == 2  # the two images not committed before the kill
    whole, resumed = TeacherTargets.load(tmp_path / "whole.pt"), TeacherTargets.load(out)
    assert torch.equal(whole.crops, resumed.crops) and torch.equal(whole.embeds, resumed.embeds)
    stale = tmp_path / "other.pt.partial"  # chunks of a seed-2 job, then the config says seed 1
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(teacher, "encode_image", killed_after_4)
        calls.clear()
        cache_teacher_targets(teacher, paths, tmp_path / "other.pt", seed=2, **settings)
    assert len(list(stale.glob("*.pt"))) == 4
    monkeypatch.setattr(teacher, "encode_image", encode)
    cache_teacher_targets(teacher, paths, tmp_path / "other.pt", seed=1, **settings)
    assert torch.equal(TeacherTargets.load(tmp_path / "other.pt").embeds, whole.embeds)


def test_sharded_teacher_targets_join_into_the_unsharded_store(trained, pool, tmp_path):
    """cluster.shards: 3 jobs each make every third chunk; joined, the store is the one job's,
    bit for bit. Shards of different settings, or a missing one, are refused."""
    from cgdmae.teacher.targets import gather_teacher_targets

    teacher = load_teacher(trained[0])
    paths = [r.path for r in read_pool(pool)][:7]
    settings = dict(views=2, img_size=(20, 20), scale=(0.3, 1.0), seed=1, batch_size=2,
                    chunk_batches=1)  # fmt: skip
    cache_teacher_targets(teacher, paths, tmp_path / "one.pt", **settings)
    shards = [tmp_path / f"s{i}.pt" for i in range(3)]
    for i, shard in enumerate(shards):
        cache_teacher_targets(teacher, paths, shard, shard=i, shards=3, **settings)
    gather_teacher_targets(shards[::-1], tmp_path / "joined.pt")
    one, joined = (
        TeacherTargets.load(tmp_path / "one.pt"),
        TeacherTargets.load(tmp_path / "joined.pt"),
    )
    assert joined.paths == one.paths and torch.equal(joined.crops, one.crops)
    assert torch.equal(joined.embeds, one.embeds)
    with pytest.raises(ValueError, match=r"not the 2 shards of one target store"):
        gather_teacher_targets(shards[:2], tmp_path / "short.pt")
    # more shards than chunks (batches of 4 images: two chunks): the third shard has none
    settings |= {"batch_size": 8, "chunk_batches": 64}
    cache_teacher_targets(teacher, paths, tmp_path / "one8.pt", **settings)
    for i, shard in enumerate(shards):
        cache_teacher_targets(teacher, paths, shard, shard=i, shards=3, **settings)
    gather_teacher_targets(shards, tmp_path / "joined8.pt")
    one8 = TeacherTargets.load(tmp_path / "one8.pt")
    assert torch.equal(TeacherTargets.load(tmp_path / "joined8.pt").embeds, one8.embeds)


def normalize_back(image: torch.Tensor) -> torch.Tensor:
    """What the online method hands the teacher: the crop back in [0, 1]."""
    back = denormalize(image.unsqueeze(0)).clamp(0, 1)
    assert torch.allclose(normalize(back[0]), image, atol=1e-5)
    return back


def test_text_anchors_file_is_the_teachers_and_spares_loading_it(trained, tmp_path, monkeypatch):
    from pathlib import Path

    import yaml

    from cgdmae.config import run_spec, validate_config
    from cgdmae.pretrain.run import build_method
    from cgdmae.teacher import clip as teacher_module
    from cgdmae.teacher.clip import attribute_prompts, load_text_anchors, save_text_anchors

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "tests/configs/tiny.yaml").read_text())
    validate_config(config, root / "workflow/schemas/config.schema.yaml")
    spec = run_spec(config, "cgd_mae")
    templates = spec["distill"]["templates"]
    path = tmp_path / "anchors.pt"
    assert save_text_anchors(trained[0], templates, path) == len(attribute_prompts(templates))
    with torch.no_grad():
        expected = load_teacher(trained[0]).encode_text(attribute_prompts(templates)).float()
    assert torch.equal(load_text_anchors(path, templates), expected)
    with pytest.raises(ValueError, match=r"anchors\.pt holds the text anchors of the templates"):
        load_text_anchors(path, ["a {color} car"])

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was loaded")

    monkeypatch.setattr(teacher_module, "load_teacher", no_teacher)
    method = build_method(spec, trained[0], text_anchors=path)  # cached targets
    assert method.teacher is None
    assert torch.equal(method.text_embeds, torch.nn.functional.normalize(expected, dim=-1))


def test_random_weights_file_loads_as_a_pretrained_teacher(tmp_path):
    """The rehearsal's stand-in for OpenAI's weights: a local file of a random open_clip model,
    in float16, read through the `pretrained: <file>` path."""
    from cgdmae.teacher.clip import save_random_weights

    register_tiny_clip(tmp_path, "cgdmae-random-clip")
    weights = tmp_path / "random.pt"
    n = save_random_weights("cgdmae-random-clip", weights, seed=3)
    state = torch.load(weights, weights_only=True)
    assert n == sum(
        v.numel() for k, v in state.items() if v.is_floating_point() and "attn_mask" not in k
    )
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    describe_pretrained("cgdmae-random-clip", str(weights), tmp_path / "model")
    teacher = load_teacher(tmp_path / "model")
    assert teacher.embed_dim == 16 and teacher.encode_image(torch.rand(1, 3, 16, 16)).shape == (
        1,
        16,
    )
    again = tmp_path / "again.pt"
    save_random_weights("cgdmae-random-clip", again, seed=3)
    assert all(torch.equal(state[k], v) for k, v in torch.load(again, weights_only=True).items())
