"""The seed methods as configured runs: their config sections, views, teachers and exports."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from cgdmae.config import ConfigError, all_runs, run_spec, validate_config
from cgdmae.finetune.backbone import load_vit
from cgdmae.pretrain.methods.mae_lite import MAELiteMethod
from cgdmae.pretrain.methods.person_mae import PersonMAEMethod
from cgdmae.pretrain.methods.person_vit import PersonViTMethod
from cgdmae.pretrain.run import build_dataset, build_method, run_pretraining, train_config
from cgdmae.pretrain.views import CrossRegionDataset, MultiCropDataset
from cgdmae.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
SEED_RUNS = ("person_mae", "person_vit", "mae_lite_distill")


def tiny_config() -> dict:
    return validate_config(yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text()), SCHEMA)


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    """A pool directory in its on-disk format: images/ plus captions.csv, read by read_pool."""
    root = tmp_path_factory.mktemp("pool")
    (root / "images").mkdir()
    generator = torch.Generator().manual_seed(0)
    rows = ["image,caption"]
    for i in range(24):
        pixels = (torch.rand(40, 40, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(root / "images" / f"{i:04d}.jpg")
        rows.append(f"images/{i:04d}.jpg,a photo of a red sedan.")
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    return root


# ---- config -------------------------------------------------------------------------------------
def test_a_run_spec_holds_only_its_own_methods_section():
    config = tiny_config()
    sections = ("distill", "person_mae", "person_vit", "mae_lite")
    owned = {"mae": None, "cgd_mae": "distill", "person_mae": "person_mae"}
    owned |= {"person_vit": "person_vit", "mae_lite_distill": "mae_lite"}
    for run, own in owned.items():
        spec = run_spec(config, run)
        assert [s for s in sections if s in spec] == ([own] if own else []), run


def test_changing_one_methods_section_leaves_the_other_runs_unchanged():
    config = tiny_config()
    before = {run: run_spec(config, run) for run in all_runs(config)}
    config["pretrain"]["person_vit"]["lambda_mim"] = 0.5
    changed = [run for run in before if run_spec(config, run) != before[run]]
    assert changed == ["person_vit"]


def test_overriding_another_methods_section_names_the_method():
    config = tiny_config()
    config["runs"]["mae"]["overrides"] = {"person_mae.shift": 8}
    with pytest.raises(
        ConfigError, match=r"runs\.mae\.overrides\.person_mae\.shift.*person_mae.*'mae' is mae"
    ):
        validate_config(config, SCHEMA)


def test_mae_lite_teacher_run_must_be_a_run_without_a_cycle_on_the_same_grid():
    config = tiny_config()
    config["runs"]["mae_lite_distill"]["overrides"]["mae_lite.teacher_run"] = "maee"
    with pytest.raises(ConfigError, match=r"mae_lite\.teacher_run.*'maee' is not a run"):
        validate_config(config, SCHEMA)

    config = tiny_config()
    config["runs"]["a"] = {"method": "mae_lite", "overrides": {"mae_lite.teacher_run": "b"}}
    config["runs"]["b"] = {"method": "mae_lite", "overrides": {"mae_lite.teacher_run": "a"}}
    with pytest.raises(ConfigError, match=r"cycle \(a -> b -> a\)"):
        validate_config(config, SCHEMA)

    config = tiny_config()
    config["runs"]["mae"]["overrides"] = {"model.patch_size": 16}
    with pytest.raises(ConfigError, match=r"teacher run 'mae' sees a \[2, 2\] patch grid"):
        validate_config(config, SCHEMA)


def test_person_vit_local_views_must_fit_the_patch_grid():
    config = tiny_config()
    config["runs"]["person_vit"]["overrides"]["person_vit.local_size"] = [12, 16]
    with pytest.raises(ConfigError, match=r"person_vit\.local_size.*\[12, 16\].*patch size 8"):
        validate_config(config, SCHEMA)


def test_unknown_person_vit_key_is_named():
    config = tiny_config()
    config["pretrain"]["person_vit"]["local_veiws"] = 2
    with pytest.raises(ConfigError, match=r"pretrain\.person_vit\.local_veiws.*local_views"):
        validate_config(config, SCHEMA)


def test_paper_config_has_each_seed_recipe_and_the_person_mae_ablations():
    from cgdmae.config import load_config

    config = load_config(ROOT / "config" / "paper.yaml", SCHEMA)
    person_mae = run_spec(config, "person_mae")
    assert person_mae["model"]["img_size"] == [256, 128] and person_mae["epochs"] == 100
    assert person_mae["mask_strategy"] == "block" and person_mae["person_mae"]["shift"] == 64
    effective = person_mae["batch_size"] * person_mae["accum_iter"] * person_mae["gpus"]
    assert person_mae["blr"] * effective / 256 == pytest.approx(1.2e-3)
    person_vit = run_spec(config, "person_vit")
    assert person_vit["model"]["size"] == "small"
    assert person_vit["person_vit"]["local_size"] == [96, 64]
    assert person_vit["person_vit"]["local_views"] == 6
    assert person_vit["blr"] == 5e-4
    schedule = train_config(person_vit, seed=0)
    assert (schedule.weight_decay, schedule.weight_decay_end) == (0.04, 0.4)  # DINO's cosine
    assert train_config(person_mae, seed=0).weight_decay_end is None
    lite = run_spec(config, "mae_lite_distill")
    assert lite["model"]["size"] == "tiny" and lite["model"]["num_heads"] == 12
    assert lite["crop_scale"] == [0.08, 1.0] and lite["epochs"] == 400
    assert lite["mae_lite"]["teacher_run"] == "mae"
    runs = all_runs(config)
    assert "person_mae@person_mae.shift=32" in runs and "person_mae@person_mae.lambda=0.5" in runs


# ---- runs ---------------------------------------------------------------------------------------
def test_each_method_gets_its_views_and_its_settings(pool):
    config = tiny_config()
    spec = run_spec(config, "person_mae")
    method, dataset = build_method(spec), build_dataset(spec, pool, seed=0)
    assert isinstance(method, PersonMAEMethod) and isinstance(dataset, CrossRegionDataset)
    assert dataset.max_shift == spec["person_mae"]["shift"]
    assert method.momentum == tuple(spec["person_mae"]["ema_momentum"])
    assert method.model.mask_strategy == "block"

    spec = run_spec(config, "person_vit")
    method, dataset = build_method(spec), build_dataset(spec, pool, seed=0)
    assert isinstance(method, PersonViTMethod) and isinstance(dataset, MultiCropDataset)
    assert method.head.last_layer.weight.shape[0] == spec["person_vit"]["out_dim"]
    deeper = build_method({**spec, "model": {**spec["model"], "depth": 2}})  # tiny has 1 block
    assert spec["person_vit"]["drop_path"] == 0.1
    assert deeper.model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    item = dataset[0]
    assert item["local_views"].shape == (2, 3, 16, 16)
    assert item["global_views"].shape == (2, 3, 32, 32)
    cfg = train_config(spec, seed=0)
    assert cfg.betas == (0.9, 0.999) and cfg.clip_grad == 3.0

    spec = run_spec(config, "mae_lite_distill")
    spec["mae_lite"]["teacher_run"] = None
    method = build_method(spec)
    assert isinstance(method, MAELiteMethod) and method.teacher is None


def test_on_corrupt_skip_trains_on_the_images_that_decode(pool, tmp_path):
    import shutil

    from cgdmae.data import DatasetFormatError
    from cgdmae.pretrain.run import training_images

    copy = tmp_path / "pool"
    shutil.copytree(pool, copy)
    (copy / "images" / "0003.jpg").write_bytes(b"\xff\xd8\xff")
    assert len(training_images(copy)) == 24  # error: listed, fails when read
    kept = training_images(copy, "skip")
    assert len(kept) == 23 and copy / "images" / "0003.jpg" not in kept
    spec = run_spec(tiny_config(), "mae")
    assert len(build_dataset(spec, copy, 0, on_corrupt="skip")) == 23
    with pytest.raises(DatasetFormatError, match=r"0003\.jpg: corrupt or truncated image"):
        build_dataset(spec, copy, 0)[3]


def test_distilled_mae_lite_without_its_teacher_fails_before_training(pool, tmp_path):
    spec = run_spec(tiny_config(), "mae_lite_distill")
    missing = tmp_path / "mae" / "checkpoint.pth"
    with pytest.raises(FileNotFoundError, match=r"teacher checkpoint .*mae/checkpoint\.pth"):
        run_pretraining(spec, pool, tmp_path / "out", teacher_checkpoint=missing)
    assert not (tmp_path / "out" / "work" / "checkpoint.pth").exists()
    with pytest.raises(ValueError, match=r"teacher_run is 'mae' but no teacher checkpoint"):
        build_method(spec)


@pytest.fixture(scope="module")
def trained(pool, tmp_path_factory) -> dict[str, Path]:
    """One epoch of mae (the teacher) and of each seed method, as the rule runs them."""
    config = tiny_config()
    out = {}
    for run in ("mae", *SEED_RUNS):
        spec = run_spec(config, run)
        spec["epochs"], spec["warmup_epochs"] = 1, 0
        teacher = out["mae"] / "checkpoint.pth" if run == "mae_lite_distill" else None
        out[run] = tmp_path_factory.mktemp(run)
        run_pretraining(spec, pool, out[run], teacher_checkpoint=teacher)
    return out


def test_a_run_publishes_its_checkpoint_without_optimizer_state(trained, pool):
    """The published checkpoint is the work one (a hard link) minus the optimizer state, and
    a retried job that finds it re-exports the same encoder."""
    out = trained["mae"]
    assert load_checkpoint(out / "checkpoint.pth")["optimizer"] is None
    assert (out / "checkpoint.pth").samefile(out / "work" / "checkpoint.pth")
    before = (out / "encoder.pth").read_bytes()
    spec = run_spec(tiny_config(), "mae")
    spec["epochs"], spec["warmup_epochs"] = 1, 0
    run_pretraining(spec, pool, out)
    assert (out / "encoder.pth").read_bytes() == before


@pytest.mark.parametrize("run", SEED_RUNS)
def test_each_seed_method_exports_a_timm_loadable_encoder(trained, run):
    config = tiny_config()
    model = run_spec(config, run)["model"]
    backbone = load_vit(trained[run] / "encoder.pth", model, (32, 32), 0.0)
    assert backbone(torch.zeros(2, 3, 32, 32)).shape[0] == 2
    log = (trained[run] / "log.csv").read_text().splitlines()
    assert len(log) == 2  # a header and one epoch


def test_person_vit_exports_its_ema_teacher(trained):
    state = torch.load(trained["person_vit"] / "checkpoint.pth", weights_only=False)
    encoder = torch.load(trained["person_vit"] / "encoder.pth", weights_only=True)["model"]
    teacher = {k.removeprefix("teacher.encoder."): v for k, v in state["method"].items()}
    key = "blocks.0.attn.qkv.weight"
    assert torch.equal(encoder[key], teacher[key])
    assert not torch.equal(encoder[key], state["model"][key])


def test_mae_lite_distills_from_the_teacher_runs_weights(trained):
    from cgdmae.pretrain.run import load_mae_teacher

    teacher = load_mae_teacher(trained["mae"] / "checkpoint.pth")
    saved = torch.load(trained["mae"] / "checkpoint.pth", weights_only=False)["model"]
    assert torch.equal(teacher.blocks[0].attn.qkv.weight, saved["blocks.0.attn.qkv.weight"])
    assert not any(p.requires_grad for p in teacher.parameters())
    columns = (trained["mae_lite_distill"] / "log.csv").read_text().splitlines()[0]
    assert "distill" in columns.split(",")


def test_throughput_benchmark_times_every_method():
    import json
    import subprocess
    import sys

    args = "--model tiny --embed-dim 16 --depth 1 --heads 2 --img 32 --patch 8"
    args += " --decoder 16 1 2 --batch 4 --teacher-dim 16 --steps 1 --warmup 1"
    result = subprocess.run(
        [sys.executable, "-m", "cgdmae.bench.pretrain", *args.split()],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.splitlines()[-1])
    assert set(results) == {
        "mae",
        "cgd_mae cached",
        "person_mae",
        "person_vit 2L",
        "mae_lite",
        "mae_lite distill",
    }
    assert all(r["img_per_s"] > 0 and r["train_gflops_per_img"] > 0 for r in results.values())


# ---- launch -------------------------------------------------------------------------------------
def test_launch_trains_in_process_or_as_ddp_ranks_under_torchrun(pool, tmp_path):
    """The rule's entry point: one process trains here; gpus > 1 starts torchrun (gloo on CPU)."""
    from cgdmae.pretrain.cli import launch

    spec = {**run_spec(tiny_config(), "mae"), "epochs": 1, "batch_size": 4}
    for gpus in (1, 2):
        out, log = tmp_path / f"gpus{gpus}", tmp_path / f"gpus{gpus}.log"
        argv = ["--name=mae", f"--spec={json.dumps(spec)}", f"--images={pool}", f"--out={out}"]
        assert launch(argv, gpus, log) == 0, log.read_text()[-3000:]
        saved = load_checkpoint(out / "checkpoint.pth")
        assert saved["train_config"]["world_size"] == gpus and saved["step"] == 24 // (4 * gpus)
        assert (out / "encoder.pth").exists() and "epoch 1/1" in log.read_text()


def test_pretrain_argv_is_read_back_by_the_parser():
    """The workflow's command line of a run parses to what it was given; absent inputs stay
    empty and the target views unset."""
    import json

    from cgdmae.pretrain.cli import parser, pretrain_argv

    spec = {"method": "cgd_mae", "epochs": 2}
    inputs = {"images": "pool", "teacher": "t/model", "text_anchors": "t/text.pt"}
    args = parser().parse_args(
        pretrain_argv(
            "cgd_mae", spec, "pool", "out", seed=3, on_corrupt="skip", inputs=inputs, target_views=4
        )  # fmt: skip
    )
    assert (args.name, json.loads(args.spec), args.images, args.out) == (
        "cgd_mae",
        spec,
        "pool",
        "out",
    )
    assert (args.seed, args.on_corrupt, args.target_views) == (3, "skip", 4)
    assert (args.teacher, args.text_anchors) == ("t/model", "t/text.pt")
    assert args.targets == args.teacher_checkpoint == ""
    bare = parser().parse_args(
        pretrain_argv("mae", spec, "pool", "out", seed=0, on_corrupt="error")
    )
    assert bare.target_views is None and bare.teacher == ""
