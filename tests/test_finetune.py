"""Fine-tuning: BoT losses, the backbone from encoder.pth, bad input, resume, every task end to end."""

import json
import math
import os
import shutil
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from cgdmae.config import validate_config
from cgdmae.data import DatasetFormatError, RandomIdentitySampler
from cgdmae.data.synth import writers
from cgdmae.finetune.backbone import EncoderMismatchError, load_vit
from cgdmae.finetune.run import run_finetune
from cgdmae.finetune.tasks import FinetuneTask, batch_hard_triplet, cls_feature
from cgdmae.models import create_mae, save_encoder
from cgdmae.training.engine import Preempted

SCHEMA = Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml"
MODEL = {
    "size": "tiny",
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "img_size": [32, 32],
    "patch_size": 8,
}
SMALL = {"image_size": (32, 32), "n_cameras": 4}


def task_spec(**overrides):
    """A task config with the schema's defaults filled, as the workflow passes it."""
    config = {"finetune": {"reid": overrides}}
    validate_config(config, SCHEMA)
    spec = dict(config["finetune"]["reid"])
    spec.pop("datasets")
    return spec


def tiny_spec(**overrides):
    base = dict(
        img_size=[32, 32],
        epochs=2,
        warmup_epochs=0.5,
        batch_size=8,
        instances=2,
        pad=2,
        drop_path=0.0,
        eval_batch_size=16,
        num_workers=0,
        save_every=1,
        precision="fp32",
        head_channels=16,
    )
    return task_spec(**(base | overrides))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    writers.write_veri776(
        root / "veri776",
        n_train_ids=6,
        n_test_ids=4,
        images_per_id=4,
        cameras_per_id=2,
        query_per_id=1,
        **SMALL,
    )
    writers.write_vehicleid(
        root / "vehicleid", n_train_ids=6, test_sizes=[2, 3, 4], images_per_id=3, **SMALL
    )
    writers.write_vfr(root / "vfr", n_train_per_class=1, n_test_per_class=1, **SMALL)
    writers.write_vps(root / "vps", n_train=6, n_val=3, **SMALL)
    torch.manual_seed(0)
    mae = create_mae(
        "tiny",
        img_size=(32, 32),
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        decoder_dim=16,
        decoder_depth=1,
        decoder_heads=2,
    )
    save_encoder(mae, root / "encoder.pth")
    return root


def dataset(root, name, fmt=None):
    formats = {"vfr": "image_folder", "vps": "segmentation"}
    return {"format": fmt or formats.get(name, name), "path": str(root / name)}


def test_batch_hard_triplet_matches_a_loop():
    torch.manual_seed(0)
    features, pids = torch.randn(12, 5), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    for margin in (0.3, None):
        expected = []
        for i in range(12):
            dists = [(features[i] - features[j]).norm() for j in range(12)]
            positive = max(d for j, d in enumerate(dists) if pids[j] == pids[i])
            negative = min(d for j, d in enumerate(dists) if pids[j] != pids[i])
            gap = positive - negative
            expected.append(
                torch.nn.functional.softplus(gap) if margin is None else (gap + margin).clamp(min=0)
            )
        got = batch_hard_triplet(features, pids, margin)
        torch.testing.assert_close(got, torch.stack(expected).mean(), atol=1e-5, rtol=1e-5)


def test_pk_sampler_has_a_fixed_length_and_skips_on_resume():
    pids = [p for p in range(7) for _ in range(2 + p % 4)]  # 2..5 images per id
    sampler = RandomIdentitySampler(pids, p=3, k=2, seed=1)
    for epoch in range(4):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == len(sampler) == sampler.batches_per_epoch * 6
        for start in range(0, len(order), 6):
            batch = [pids[i] for i in order[start : start + 6]]
            assert len(set(batch)) == 3 and all(batch.count(p) == 2 for p in set(batch))
    sampler.set_epoch(2, skip_batches=1)
    skipped = list(sampler)
    sampler.set_epoch(2)
    assert skipped == list(sampler)[6:]


def test_backbone_resamples_the_position_embedding(data):
    vit = load_vit(data / "encoder.pth", MODEL, (48, 32))
    assert vit.pos_embed.shape == (1, 1 + 6 * 4, 32)
    same = load_vit(data / "encoder.pth", MODEL, (32, 32))
    encoder = torch.load(data / "encoder.pth", weights_only=True)["model"]
    torch.testing.assert_close(same.pos_embed, encoder["pos_embed"])
    assert same(torch.randn(2, 3, 32, 32)).shape == (2, 32)


def test_global_pool_is_maes_mean_of_patch_tokens_then_a_new_fc_norm(data):
    """MAE's models_vit with global_pool: the final norm is dropped, the patch tokens (not the
    CLS token) are averaged, and a freshly initialised fc_norm normalises the mean."""
    token = load_vit(data / "encoder.pth", MODEL, (32, 32))
    avg = load_vit(data / "encoder.pth", MODEL, (32, 32), global_pool="avg")
    assert isinstance(avg.norm, torch.nn.Identity) and isinstance(avg.fc_norm, torch.nn.LayerNorm)
    assert torch.equal(avg.fc_norm.weight, torch.ones(32)) and not avg.fc_norm.bias.any()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        x = token.patch_embed(images)
        x = token.blocks(token._pos_embed(x))  # the shared encoder, without the final norm
        expected = torch.nn.functional.layer_norm(x[:, 1:].mean(1), (32,), eps=1e-6)
        torch.testing.assert_close(cls_feature(avg, images), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cls_feature(token, images), token.norm(x)[:, 0])


def test_encoder_of_another_width_names_both(data):
    with pytest.raises(
        EncoderMismatchError, match=r"encoder\.pth: embedding dimension 32.*embed_dim 64"
    ):
        load_vit(data / "encoder.pth", MODEL | {"embed_dim": 64}, (32, 32))
    with pytest.raises(EncoderMismatchError, match="2 transformer blocks.*has 3"):
        load_vit(data / "encoder.pth", MODEL | {"depth": 3}, (32, 32))


def test_dataset_without_query_split_names_it(data, tmp_path):
    broken = tmp_path / "veri776"
    shutil.copytree(data / "veri776", broken)
    shutil.rmtree(broken / "image_query")
    with pytest.raises(DatasetFormatError, match="image_query"):
        run_finetune(
            "reid",
            dataset(tmp_path, "veri776"),
            data / "encoder.pth",
            MODEL,
            tiny_spec(),
            tmp_path / "out/metrics.json",
        )


def test_segmentation_class_count_mismatch_names_classes_txt(data, tmp_path):
    with pytest.raises(DatasetFormatError, match=r"num_classes=4 .*classes\.txt lists 6"):
        run_finetune(
            "vps",
            dataset(data, "vps"),
            data / "encoder.pth",
            MODEL,
            tiny_spec(num_classes=4),
            tmp_path / "metrics.json",
        )


def test_task_rejects_a_dataset_it_cannot_read(data, tmp_path):
    with pytest.raises(ValueError, match="vps cannot use a veri776 dataset"):
        run_finetune(
            "vps",
            dataset(data, "veri776"),
            data / "encoder.pth",
            MODEL,
            tiny_spec(),
            tmp_path / "metrics.json",
        )


@pytest.mark.parametrize(
    ("task", "name", "expected"),
    [
        ("reid", "veri776", {"test": {"mAP", "rank1", "rank5", "mINP"}}),
        ("reid", "vehicleid", {f"test{n}": {"rank1", "rank5"} for n in (800, 1600, 2400)}),
        ("var", "veri776", {"test": {"mA", "accuracy", "f1", "color", "type"}}),
        ("vfr", "vfr", {"test": {"top1"}}),
        ("vps", "vps", {"val": {"mIoU", "mAcc"}}),
    ],
)
def test_every_task_writes_its_metrics(data, tmp_path, task, name, expected):
    out = tmp_path / "metrics.json"
    spec = tiny_spec(epochs=1, batch_size=4 if task == "vps" else 8)
    record = run_finetune(
        task, dataset(data, name), data / "encoder.pth", MODEL, spec, out, seeds=(3,)
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    assert set(record["metrics"]) == set(expected)
    for protocol, keys in expected.items():
        assert keys <= set(record["metrics"][protocol])
    assert len(record["encoder_sha256"]) == 64 and record["config"] == spec
    assert record["num_train"] > 0 and record["num_test"] > 0 and record["epochs"] == 1
    assert record["skipped_images"] == 0
    for value in json.dumps(record["metrics"]).replace("{", " ").split():
        assert "NaN" not in value


def test_finetuning_resumes_bit_exact_after_sigterm(data, tmp_path, monkeypatch):
    spec = tiny_spec(epochs=2)
    args = ("reid", dataset(data, "veri776"), data / "encoder.pth", MODEL, spec)
    whole = run_finetune(*args, tmp_path / "whole/metrics.json")

    def preempt_at_step_2(self, step, total_steps):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    with monkeypatch.context() as patch:
        patch.setattr(FinetuneTask, "on_step_end", preempt_at_step_2)
        with pytest.raises(Preempted):
            run_finetune(*args, tmp_path / "cut/metrics.json")
    assert not (tmp_path / "cut/metrics.json").exists()
    saved = torch.load(tmp_path / "cut/work/seed0/checkpoint.pth", weights_only=False)
    assert saved["step"] == 2 and saved["epoch"] == 0
    resumed = run_finetune(*args, tmp_path / "cut/metrics.json")
    assert resumed["metrics"] == whole["metrics"] and resumed["final_loss"] == whole["final_loss"]
    # the per-epoch losses agree to the last digit; the resumable state is gone once the
    # metrics are written (it is ~1 GB per job at paper scale)
    logs = [pd.read_csv(tmp_path / run / "work/seed0/log.csv") for run in ("whole", "cut")]
    timing = ["img_per_s", "seconds"]
    pd.testing.assert_frame_equal(
        logs[0].drop(columns=timing), logs[1].drop(columns=timing), check_exact=True
    )
    assert not list(tmp_path.glob("*/work/seed0/checkpoint.pth"))


def test_reid_trains_and_tests_with_transreid_star_options(data, tmp_path, monkeypatch):
    """Overlapping patches, SIE and JPM through the fine-tuning entry point: the camera ids
    reach the test pass, whose features are the 5 × dim JPM concatenation."""
    from cgdmae.finetune.tasks import ReidNet

    assert not {"stride", "sie", "sie_coef", "jpm", "shift_num"} & set(tiny_spec())
    seen = []
    test_feature = ReidNet.test_feature

    def spy(self, images, camids=None):
        out = test_feature(self, images, camids)
        seen.append((self.backbone.patch_embed.num_patches, self.sie_embed.shape, camids, out))
        return out

    monkeypatch.setattr(ReidNet, "test_feature", spy)
    spec = tiny_spec(epochs=1, stride=6, sie=True, sie_coef=3.0, jpm=True)
    out = tmp_path / "metrics.json"
    record = run_finetune("reid", dataset(data, "veri776"), data / "encoder.pth", MODEL, spec, out)
    assert record["config"]["jpm"] and math.isfinite(record["final_loss"][0])
    assert 0 <= record["metrics"]["test"]["mAP"] <= 1
    assert seen and all(patches == 25 for patches, *_ in seen)  # (32 - 8) // 6 + 1 = 5 per side
    assert all(shape == (SMALL["n_cameras"], 1, MODEL["embed_dim"]) for _, shape, *_ in seen)
    assert all(cams is not None and len(cams) == len(f) for *_, cams, f in seen)
    assert all(f.shape[1] == 5 * MODEL["embed_dim"] for *_, f in seen)


def test_embedded_default_finetune_config_is_valid():
    config = yaml.safe_load((SCHEMA.parents[2] / "config/config.yaml").read_text())
    validate_config(config, SCHEMA)
    assert config["finetune"]["reid"]["datasets"] == ["veri776", "vehicleid"]


def test_several_seeds_give_the_mean_and_each_seed(data, tmp_path):
    from cgdmae.report.tables import build_table

    spec = tiny_spec(epochs=1, batch_size=8)
    out = tmp_path / "results/finetune/r/vfr/vfr/metrics.json"
    record = run_finetune("vfr", dataset(data, "vfr"), data / "encoder.pth", MODEL, spec, out,
                          seeds=(0, 1))  # fmt: skip
    top1 = [record["per_seed"][s]["test"]["top1"] for s in ("0", "1")]
    assert record["metrics"]["test"]["top1"] == pytest.approx(sum(top1) / 2)
    table = build_table("c", "run", [("r", "r")], [("vfr", "vfr")],
                        {"results/finetune/r/vfr/vfr/metrics.json": [record]})  # fmt: skip
    ((_, [cell]),) = table.cells()
    mean, std = 100 * sum(top1) / 2, 100 * abs(top1[0] - top1[1]) / 2**0.5
    assert cell["text"] == f"{mean:.1f} ± {std:.1f}"


# --- the published recipes: MAE's layer decay, TransReID's vehicle settings ------------------

PAPER = SCHEMA.parents[2] / "config/paper.yaml"


def paper_task(task):
    """``finetune.<task>`` of config/paper.yaml with the schema's defaults filled."""
    paper = yaml.safe_load(PAPER.read_text())
    config = {k: paper[k] for k in ("datasets", "cluster") if k in paper}
    config["finetune"] = {task: paper["finetune"][task]}
    validate_config(config, SCHEMA)
    return config["finetune"][task]


def tiny_task(task, spec, depth=2, num_classes=5):
    from timm.models.vision_transformer import VisionTransformer

    from cgdmae.finetune.data import TaskData
    from cgdmae.finetune.run import build_task

    torch.manual_seed(0)
    vit = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=16, depth=depth, num_heads=2, num_classes=0
    )
    counts = {"ids": num_classes, "classes": num_classes, "color": 3, "type": 4}
    return build_task(task, TaskData([], {}, counts), spec, vit)


def named_groups(optimizer, module):
    """{parameter name: its group} over the optimizer's groups; each parameter once."""
    names = {id(p): n for n, p in module.named_parameters()}
    found = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            assert names[id(param)] not in found
            found[names[id(param)]] = group
    return found


def test_layer_decay_groups_follow_maes_rule():
    from cgdmae.training.engine import TrainConfig, build_optimizer

    spec = tiny_spec(layer_decay=0.65, weight_decay=0.05)
    module = tiny_task("vfr", spec, depth=3)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-3, weight_decay=0.05, layer_decay=0.65)
    optimizer = build_optimizer(module, cfg, 1e-3, torch.device("cpu"))
    groups = named_groups(optimizer, module)
    assert set(groups) == {n for n, p in module.named_parameters() if p.requires_grad}
    # MAE (util/lr_decay.py): layer id 0 for cls_token/pos_embed/patch_embed, i + 1 for
    # blocks.i, num_layers + 1 = 4 for the rest; scale 0.65 ** (4 - layer id)
    expected_scale = {
        "model.backbone.cls_token": 0.65**4,
        "model.backbone.pos_embed": 0.65**4,
        "model.backbone.patch_embed.proj.weight": 0.65**4,
        "model.backbone.patch_embed.proj.bias": 0.65**4,
        "model.backbone.blocks.0.attn.qkv.weight": 0.65**3,
        "model.backbone.blocks.1.mlp.fc1.bias": 0.65**2,
        "model.backbone.blocks.2.norm1.weight": 0.65,
        "model.backbone.blocks.2.mlp.fc2.weight": 0.65,
        "model.backbone.norm.weight": 1.0,  # the final norm: MAE's "rest" layer
        "model.backbone.norm.bias": 1.0,
        "model.head.weight": 1.0,
        "model.head.bias": 1.0,
    }
    for name, scale in expected_scale.items():
        assert groups[name]["lr_scale"] == pytest.approx(scale), name
    for name, param in module.named_parameters():
        short = name.removeprefix("model.backbone.")
        if short.startswith("blocks."):
            block = int(short.split(".")[1])
            assert groups[name]["lr_scale"] == pytest.approx(0.65 ** (3 - block)), name
        no_decay = param.ndim == 1 or short in ("cls_token", "pos_embed")
        assert groups[name]["weight_decay"] == (0.0 if no_decay else 0.05), name
    # the engine's scheduler applies the scales: each group's lr is the schedule's × its scale
    from cgdmae.training.engine import make_scheduler

    make_scheduler(optimizer, cfg, steps_per_epoch=10).step_update(0)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"])
    assert optimizer.param_groups[0]["lr_scale"] == 1.0  # the logged lr is the schedule's


@pytest.mark.parametrize("task", ["var", "vfr"])
def test_finetuning_with_layer_decay_trains(data, tmp_path, task):
    name = "veri776" if task == "var" else "vfr"
    spec = tiny_spec(epochs=1, layer_decay=0.65)
    record = run_finetune(
        task, dataset(data, name), data / "encoder.pth", MODEL, spec, tmp_path / "metrics.json"
    )
    assert record["epochs"] == 1 and all(map(math.isfinite, record["final_loss"]))


def test_paper_reid_recipe_is_transreids_optimizer():
    from cgdmae.finetune.spec import dataset_spec
    from cgdmae.training.engine import TrainConfig, build_optimizer

    spec = dataset_spec(paper_task("reid"), "veri776")
    module = tiny_task("reid", spec)
    cfg = TrainConfig(
        epochs=1, batch_size=64, lr=spec["lr"], weight_decay=spec["weight_decay"], optimizer="sgd"
    )
    optimizer = build_optimizer(module, cfg, spec["lr"], torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.SGD)
    assert all(not g["nesterov"] and g["momentum"] == 0.9 for g in optimizer.param_groups)
    groups = named_groups(optimizer, module)
    assert "model.bottleneck.bias" not in groups  # BNNeck's frozen shift
    for name, group in groups.items():
        assert group["weight_decay"] == 1e-4, name  # WEIGHT_DECAY = WEIGHT_DECAY_BIAS
        assert group["lr_scale"] == (2.0 if name.endswith(".bias") else 1.0), name
    assert spec["min_lr"] == pytest.approx(0.002 * spec["lr"])


def test_paper_reid_loss_has_no_label_smoothing():
    from cgdmae.finetune.spec import dataset_spec

    for name in ("veri776", "vehicleid", "veriwild"):
        assert dataset_spec(paper_task("reid"), name)["label_smoothing"] == 0.0
    images, labels = torch.randn(8, 3, 32, 32), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    losses = {}
    for smoothing in (0.0, 0.1):
        module = tiny_task("reid", task_spec(label_smoothing=smoothing))
        terms = module({"image": images, "label": labels})
        _, logits = module.model(images)
        plain = torch.nn.functional.cross_entropy(logits, labels)
        losses[smoothing] = (terms["ce"], plain)
    ce, plain = losses[0.0]
    torch.testing.assert_close(ce, plain)
    smoothed, plain = losses[0.1]
    assert not torch.allclose(smoothed, plain)  # the test can tell smoothing from none


def test_per_dataset_settings_reach_only_their_dataset():
    from cgdmae.finetune.run import finetune_config, pk_sampler
    from cgdmae.finetune.spec import dataset_spec

    reid = paper_task("reid")
    veri, vehicleid, wild = (dataset_spec(reid, n) for n in ("veri776", "vehicleid", "veriwild"))
    assert (vehicleid["batch_size"], vehicleid["instances"], vehicleid["lr"]) == (224, 4, 0.04)
    assert (veri["batch_size"], veri["lr"], veri["min_lr"]) == (64, 0.008, 1.6e-5)
    assert wild == veri and "per_dataset" not in veri and "datasets" not in veri
    # another dataset's entry leaves this one's spec (the Snakemake params) unchanged
    without = {k: v for k, v in reid.items() if k != "per_dataset"}
    assert dataset_spec(without, "veri776") == veri
    pids = [p for p in range(300) for _ in range(4)]
    for spec, p, lr in ((veri, 16, 0.008), (vehicleid, 56, 0.04)):
        sampler = pk_sampler(pids, spec, seed=0)
        assert (sampler.p, sampler.k) == (p, 4)
        batch = [pids[i] for i in sampler.batches()[0]]
        assert len(batch) == p * 4 and len(set(batch)) == p
        assert finetune_config(spec, 0, sampler.p * sampler.k).lr == lr
    assert finetune_config(vehicleid, 0).batch_size == 224


def test_pk_sampler_caps_p_at_the_identities_available():
    from cgdmae.finetune.run import pk_sampler

    pids = [p for p in range(10) for _ in range(1 + p % 3)]  # 10 ids of 1 to 3 images
    sampler = pk_sampler(pids, {"batch_size": 224, "instances": 4}, seed=0)
    assert (sampler.p, sampler.k) == (10, 4) and sampler.batches_per_epoch >= 1
    for batch in sampler.batches():
        assert len(batch) == 40 and sorted({pids[i] for i in batch}) == list(range(10))
    with pytest.raises(ValueError, match="not a multiple of instances=4"):
        pk_sampler(pids, {"batch_size": 30, "instances": 4}, seed=0)


def test_vehicleid_at_transreids_batch_trains_on_a_few_identities(data, tmp_path):
    from cgdmae.finetune.spec import dataset_spec

    task = {**tiny_spec(epochs=1, instances=4), "per_dataset": {"vehicleid": {"batch_size": 224}}}
    spec = dataset_spec(task, "vehicleid")
    out = tmp_path / "metrics.json"
    record = run_finetune("reid", dataset(data, "vehicleid"), data / "encoder.pth", MODEL, spec,
                          out)  # fmt: skip
    import csv

    with open(tmp_path / "work/seed0/log.csv") as f:
        (row,) = csv.DictReader(f)  # one epoch of 6 ids × 4 images: one step
    assert int(row["step"]) == 1 and math.isfinite(float(row["loss"]))
    assert record["config"]["batch_size"] == 224 and math.isfinite(record["final_loss"][0])


def test_per_dataset_entry_is_checked_by_the_schema():
    from cgdmae.config import ConfigError

    config = {"finetune": {"reid": {"per_dataset": {"vehicleid": {"batch_size": 224}}}}}
    validate_config(config, SCHEMA)
    assert config["finetune"]["reid"]["per_dataset"] == {"vehicleid": {"batch_size": 224}}
    for bad in ({"batch_sise": 224}, {"lr": 0}, {"datasets": ["veri776"]}):
        config = {"finetune": {"reid": {"per_dataset": {"vehicleid": bad}}}}
        with pytest.raises(ConfigError, match="per_dataset"):
            validate_config(config, SCHEMA)


def test_erasing_fills_with_noise_or_zero():
    from PIL import Image

    from cgdmae.finetune.data import train_transform

    image = Image.new("RGB", (32, 32), (120, 120, 120))
    torch.manual_seed(0)
    plain = train_transform((32, 32), 0, 0.0)(image)
    for fill in ("zero", "noise"):
        torch.manual_seed(0)
        erased = train_transform((32, 32), 0, 1.0, fill)(image)
        changed = (erased != plain).any(0)
        assert changed.any(), fill
        values = erased[:, changed]
        if fill == "zero":
            assert torch.all(values == 0)
        else:  # per-pixel standard-normal noise
            assert values.unique().numel() > values.numel() // 2 and values.std() > 0.5


def test_test_resize_interpolation():
    import numpy as np
    import torchvision.transforms.functional as TF
    from PIL import Image

    from cgdmae.finetune.data import test_transform

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (40, 24, 3), dtype=np.uint8))
    for mode in ("bilinear", "bicubic"):
        got = test_transform((32, 16), mode)(image)
        interpolation = getattr(TF.InterpolationMode, mode.upper())
        want = TF.to_tensor(TF.resize(image, [32, 16], interpolation=interpolation))
        mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        torch.testing.assert_close(got, (want - mean) / std)
    assert not torch.equal(test_transform((32, 16), "bilinear")(image), got)


def test_reid_test_pass_runs_without_autocast():
    from cgdmae.finetune.run import eval_autocast

    cuda = torch.device("cuda")
    assert eval_autocast("reid", cuda) is None  # TransReID tests in fp32
    assert eval_autocast("vfr", cuda) is torch.bfloat16  # MAE's evaluate under autocast
    assert eval_autocast("vfr", torch.device("cpu")) is None


# --- MAE's fine-tuning recipe for VAR and VFR -------------------------------------------------


def test_mixup_and_cutmix_are_active_in_a_vfr_batch():
    spec = task_spec(mixup=0.8, cutmix=1.0, label_smoothing=0.1)
    module = tiny_task("vfr", spec, num_classes=5)
    torch.manual_seed(0)
    images, labels = torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    kinds = set()
    for _ in range(30):
        mixed, targets = module.mix(images.clone(), labels)  # timm mixes in place
        assert targets.shape == (8, 5)
        torch.testing.assert_close(targets.sum(1), torch.ones(8))
        assert (targets > 0.1 / 5 + 1e-6).sum(1).max() == 2  # two classes per soft target
        flipped = images.flip(0)
        from_either = (mixed == images) | (mixed == flipped)
        if from_either.all() and not torch.equal(mixed, images):
            kinds.add("cutmix")  # a box pasted from the paired image
        elif not from_either.any():
            kinds.add("mixup")  # every pixel a blend
    assert kinds == {"mixup", "cutmix"}
    terms = module({"image": images, "label": labels})
    assert torch.isfinite(terms["loss"])
    plain = tiny_task("vfr", task_spec(), num_classes=5)
    assert plain.mixup is None and torch.equal(plain.mix(images, labels)[0], images)


def test_mae_recipe_keys_reach_the_transforms_lr_and_heads():
    import numpy as np
    from PIL import Image

    from cgdmae.finetune.data import test_transform
    from cgdmae.finetune.run import finetune_config
    from cgdmae.finetune.tasks import task_class

    spec = task_spec(
        blr=5e-4, batch_size=64, head_init_std=2e-5, rand_augment="rand-m9-mstd0.5-inc1"
    )
    assert finetune_config(spec, 0).lr is None
    from cgdmae.training.engine import peak_lr

    assert peak_lr(finetune_config(spec, 0), 1) == pytest.approx(5e-4 * 64 / 256)
    assert peak_lr(finetune_config(task_spec(lr=5e-4), 0), 1) == 5e-4
    module = tiny_task("vfr", spec)
    assert module.model.head.weight.std() < 1e-4 and not module.model.head.bias.any()
    assert tiny_task("vfr", task_spec()).model.head.weight.std() > 1e-2
    assert module.model.backbone.blocks[0].mlp.fc1.weight.std() > 1e-2  # the backbone is kept
    train_set = task_class("vfr").train_set([], (32, 32), spec)
    names = [type(t).__name__ for t in train_set.transform.transforms]
    assert "RandAugment" in names and "RandomResizedCropAndInterpolation" in names
    # test time: shorter side to 32 / 0.875 = 36, then the central 32 × 32
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (48, 72, 3), dtype=np.uint8))
    got = test_transform((32, 32), "bicubic", 0.875)(image)
    resized = image.resize((54, 36), Image.BICUBIC).crop((11, 2, 43, 34))
    want = test_transform((32, 32), "bicubic")(resized)
    assert got.shape == (3, 32, 32)
    torch.testing.assert_close(got, want, atol=0.05, rtol=0)


def test_vfr_trains_with_maes_recipe(data, tmp_path):
    spec = tiny_spec(epochs=1, layer_decay=0.65, blr=5e-4, mixup=0.8, cutmix=1.0,
                     rand_augment="rand-m9-mstd0.5-inc1", head_init_std=2e-5, test_crop_pct=0.875,
                     erasing=0.25)  # fmt: skip
    record = run_finetune(
        "vfr", dataset(data, "vfr"), data / "encoder.pth", MODEL, spec, tmp_path / "metrics.json"
    )
    assert record["epochs"] == 1 and math.isfinite(record["final_loss"][0])
    with pytest.raises(ValueError, match="batch size must be even"):
        tiny_task("vfr", task_spec(mixup=0.8, batch_size=7))


def test_paper_var_and_vfr_follow_maes_recipe():
    from cgdmae.finetune.run import finetune_config
    from cgdmae.training.engine import peak_lr

    for task in ("var", "vfr"):
        spec = paper_task(task)
        assert peak_lr(finetune_config(spec, 0), 1) == pytest.approx(5e-4 * 64 / 256)
        assert (spec["epochs"], spec["layer_decay"], spec["head_init_std"]) == (100, 0.65, 2e-5)
        assert spec["test_crop_pct"] == 0.875
    vfr = paper_task("vfr")
    assert (vfr["mixup"], vfr["cutmix"], vfr["label_smoothing"], vfr["erasing"]) == (
        0.8, 1.0, 0.1, 0.25,
    )  # fmt: skip
    assert vfr["rand_augment"] == "rand-m9-mstd0.5-inc1"


def test_on_corrupt_skip_leaves_out_bad_train_query_and_gallery_images(data, tmp_path):
    import shutil

    from cgdmae.finetune.run import read_task_data, usable_data

    root = tmp_path / "veri776"
    shutil.copytree(data / "veri776", root)
    whole = read_task_data("reid", {"format": "veri776", "path": str(root)}, {})
    query, gallery = whole.test["test"]
    for record in (whole.train[0], query[0], gallery[-1]):
        record.path.write_bytes(record.path.read_bytes()[:100])
    same, none = usable_data(whole, "error", root)
    assert none == 0 and same.train == whole.train
    kept, skipped = usable_data(whole, "skip", root)
    assert skipped == 3 and kept.train == whole.train[1:]
    assert kept.test["test"] == (query[1:], gallery[:-1])


def test_vps_head_is_upernet_over_four_blocks_at_strides_4_to_32():
    """ViT-B's 12 blocks give the head blocks 2, 5, 8, 11; the pyramid has strides 4, 8, 16,
    32; the logits are at the image size, and a loss reaches every pyramid level."""
    from timm.models.vision_transformer import VisionTransformer

    from cgdmae.finetune.tasks import SegmenterNet, feature_blocks

    assert feature_blocks(12) == [2, 5, 8, 11] and feature_blocks(4) == [0, 1, 2, 3]
    assert feature_blocks(2) == [0, 0, 0, 1]
    torch.manual_seed(0)
    vit = VisionTransformer(
        img_size=64, patch_size=8, embed_dim=32, depth=4, num_heads=2, num_classes=0
    )
    net = SegmenterNet(vit, num_classes=5, channels=16)
    images = torch.randn(2, 3, 64, 64)
    levels = net.features(images)
    assert [tuple(x.shape[-2:]) for x in levels] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    vit16 = VisionTransformer(
        img_size=64, patch_size=16, embed_dim=32, depth=4, num_heads=2, num_classes=0
    )
    levels16 = SegmenterNet(vit16, num_classes=5, channels=16).features(images)
    assert [tuple(x.shape[-2:]) for x in levels16] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    logits = net(images)
    assert logits.shape == (2, 5, 64, 64)
    logits.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in net.pyramid.parameters())
    assert all(p.grad is not None for p in net.ppm.parameters())
    assert vit.blocks[3].mlp.fc2.weight.grad is not None


def test_paper_vps_recipe_is_upernet_without_pad_or_erasing():
    spec = paper_task("vps")
    assert (spec["layer_decay"], spec["head_channels"], spec["pad"], spec["erasing"]) == (
        0.65, 768, 0, 0.0,
    )  # fmt: skip


def test_a_task_defined_in_a_test_fine_tunes_and_gets_its_columns(data, tmp_path, monkeypatch):
    """A task is its card and its class: the plugin test's linear probe on image-folder data
    (tests/test_plugins.py), registered here, fine-tunes through run_finetune and gets table
    columns, with no edit to the package."""
    from test_plugins import LinearProbe

    from cgdmae.finetune import cards, tasks
    from cgdmae.report.tables import columns_for

    monkeypatch.setattr(cards, "_CARDS", cards._CARDS.copy())
    monkeypatch.setattr(tasks, "_TASKS", tasks._TASKS.copy())
    cards.register_task_card(
        cards.TaskCard("probe", ("image_folder",), (("top1", "acc"),), "Probe")
    )

    tasks.register_task("probe")(LinearProbe)

    out = tmp_path / "metrics.json"
    record = run_finetune("probe", dataset(data, "vfr"), data / "encoder.pth", MODEL,
                          tiny_spec(epochs=1), out)  # fmt: skip
    assert set(record["metrics"]["test"]) == {"top1"} and record["epochs"] == 1
    assert [c.label for c in columns_for([("probe", "vfr")])] == ["Probe acc"]
    with pytest.raises(ValueError, match="task probe cannot use a veri776 dataset"):
        run_finetune("probe", dataset(data, "veri776"), data / "encoder.pth", MODEL,
                     tiny_spec(epochs=1), out)  # fmt: skip
