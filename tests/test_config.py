"""Config validation: defaults are filled, and every bad value is reported by its key."""

from pathlib import Path

import pytest
import yaml

from cgdmae.config import (
    ConfigError,
    ablation_runs,
    load_config,
    run_spec,
    targets_file,
    validate_config,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def default_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_embedded_default_is_valid():
    config = validate_config(default_config(), SCHEMA)
    assert config["synthetic"]["image_size"] == [64, 64]


def test_defaults_are_filled():
    config = validate_config({"synthetic": {"veri776": {}}}, SCHEMA)
    assert config["seed"] == 0
    assert config["synthetic"]["veri776"]["n_train_ids"] > 0
    assert config["synthetic"]["n_cameras"] == 20


def test_unknown_key_is_named_with_the_allowed_ones():
    config = default_config()
    config["synthetic"]["veri776"]["n_trian_ids"] = 3
    with pytest.raises(ConfigError) as err:
        validate_config(config, SCHEMA)
    message = str(err.value)
    assert "synthetic.veri776.n_trian_ids" in message
    assert "n_train_ids" in message  # what was expected


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="unknown config key 'sed'"):
        validate_config({"sed": 1}, SCHEMA)


def test_wrong_type_names_key():
    config = default_config()
    config["synthetic"]["pool"]["n_images"] = "many"
    with pytest.raises(ConfigError, match=r"synthetic\.pool\.n_images.*not of type 'integer'"):
        validate_config(config, SCHEMA)


def test_unknown_dataset_format_names_key():
    config = default_config()
    config["datasets"]["veri776"]["format"] = "veri"
    with pytest.raises(ConfigError, match=r"datasets\.veri776\.format"):
        validate_config(config, SCHEMA)


def test_on_corrupt_defaults_to_error_and_names_a_bad_value():
    config = default_config()
    assert validate_config(config, SCHEMA)["data"]["on_corrupt"] == "error"
    config["data"] = {"on_corrupt": "ignore"}
    with pytest.raises(ConfigError, match=r"data\.on_corrupt"):
        validate_config(config, SCHEMA)


def test_synthetic_path_must_be_a_generated_dataset():
    config = default_config()
    config["datasets"]["veri776"]["path"] = "results/data/synthetic/veri"
    with pytest.raises(ConfigError, match=r"datasets\.veri776\.path"):
        validate_config(config, SCHEMA)


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: [1\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(path, SCHEMA)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", SCHEMA)


def test_run_overrides_are_merged_and_checked():
    from cgdmae.config import run_spec

    config = default_config()
    config["ablations"] = {}
    config["runs"] = {"mae": {"method": "mae", "overrides": {"mask_ratio": 0.9, "model.depth": 2}}}
    validate_config(config, SCHEMA)
    spec = run_spec(config, "mae")
    assert spec["mask_ratio"] == 0.9 and spec["model"]["depth"] == 2 and spec["method"] == "mae"
    assert config["pretrain"]["mask_ratio"] == 0.75  # defaults untouched

    config["runs"]["mae"]["overrides"] = {"mask_ratoi": 0.9}
    with pytest.raises(ConfigError, match=r"runs\.mae\.overrides\.mask_ratoi.*mask_ratio"):
        validate_config(config, SCHEMA)

    config["runs"]["mae"]["overrides"] = {"mask_ratio": 1.5}
    with pytest.raises(ConfigError, match=r"runs\.mae\.overrides.*mask_ratio.*1\.5"):
        validate_config(config, SCHEMA)


def test_optional_key_changes_only_the_runs_that_set_it():
    from cgdmae.config import OPTIONAL_PRETRAIN_KEYS, run_spec

    schema = yaml.safe_load(SCHEMA.read_text())["$defs"]["pretrain"]["properties"]
    assert set(OPTIONAL_PRETRAIN_KEYS) == {k for k, v in schema.items() if "default" not in v}
    config = default_config()
    before = run_spec(validate_config(default_config(), SCHEMA), "person_vit")
    config["runs"]["person_vit"]["overrides"]["weight_decay_end"] = 0.4
    validate_config(config, SCHEMA)
    assert run_spec(config, "person_vit") == {**before, "weight_decay_end": 0.4}
    assert "weight_decay_end" not in run_spec(config, "mae")  # mae's Snakemake params unchanged

    config["runs"]["person_vit"]["overrides"]["weight_decay_end"] = -1
    with pytest.raises(ConfigError, match=r"runs\.person_vit\.overrides.*weight_decay_end"):
        validate_config(config, SCHEMA)


def test_cgd_mae_run_needs_a_known_teacher():
    config = default_config()
    config["teachers"] = {}
    config["runs"] = {"cgd_mae": {"method": "cgd_mae"}}
    config["ablations"] = {}
    with pytest.raises(ConfigError, match=r"curation\.teacher.*'clip_small' is not in teachers"):
        validate_config(config, SCHEMA)
    config["curation"]["subsets"] = []
    with pytest.raises(ConfigError, match=r"runs\.cgd_mae: pretrain\.distill\.teacher.*clip_small"):
        validate_config(config, SCHEMA)


def test_ablation_naming_a_missing_run():
    config = default_config()
    config["ablations"] = {"mask": {"base": "cgd_mea", "axis": "mask_ratio", "values": [0.9]}}
    with pytest.raises(ConfigError, match=r"ablations\.mask\.base.*'cgd_mea' is not in runs"):
        validate_config(config, SCHEMA)


def test_ablation_axis_must_be_a_pretrain_key():
    config = default_config()
    config["ablations"] = {"mask": {"base": "cgd_mae", "axis": "mask_rato", "values": [0.9]}}
    with pytest.raises(
        ConfigError, match=r"ablations\.mask\.axis.*'mask_rato' is not a pretrain key"
    ):
        validate_config(config, SCHEMA)


def test_ablation_value_of_the_wrong_type_names_the_ablation():
    config = default_config()
    config["ablations"] = {"mask": {"base": "cgd_mae", "axis": "mask_ratio", "values": [2.0]}}
    with pytest.raises(ConfigError, match=r"ablations\.cgd_mae.*mask_ratio"):
        validate_config(config, SCHEMA)


def test_ablation_expands_into_named_runs_and_reuses_the_base():
    from cgdmae.config import ablation_runs, all_runs, run_spec

    config = default_config()
    config["ablations"] = {"mask": {"base": "cgd_mae", "axis": "mask_ratio", "values": [0.75, 0.9]}}
    validate_config(config, SCHEMA)
    assert ablation_runs(config, "mask") == [(0.75, "cgd_mae"), (0.9, "cgd_mae@mask_ratio=0.9")]
    assert "cgd_mae@mask_ratio=0.9" in all_runs(config)
    spec = run_spec(config, "cgd_mae@mask_ratio=0.9")
    assert spec["mask_ratio"] == 0.9 and spec["method"] == "cgd_mae"


def test_finetune_dataset_of_the_wrong_format_is_named():
    config = default_config()
    config["finetune"]["vps"]["datasets"] = ["veri776"]
    with pytest.raises(ConfigError, match=r"finetune\.vps\.datasets\.0.*format veri776"):
        validate_config(config, SCHEMA)


def test_paper_config_is_valid_and_holds_the_published_recipe():
    from cgdmae.config import all_runs

    config = load_config(ROOT / "config" / "paper.yaml", SCHEMA)
    spec = config["pretrain"]
    assert spec["model"]["size"] == "base" and spec["model"]["img_size"] == [224, 224]
    assert spec["epochs"] == 400 and spec["blr"] == 1.5e-4
    assert spec["batch_size"] * spec["accum_iter"] * spec["gpus"] == 4096
    assert "cgd_mae@mask_ratio=0.9" in all_runs(config)


def test_provenance_names_config_files_inside_the_workdir_relatively(tmp_path):
    from cgdmae.workflow import provenance_path

    inside = tmp_path / "config" / "config.yaml"
    assert provenance_path(inside, tmp_path) == "config/config.yaml"
    assert provenance_path(tmp_path / "x" / ".." / "config" / "c.yaml", tmp_path) == "config/c.yaml"
    assert provenance_path("/elsewhere/paper.yaml", tmp_path) == "/elsewhere/paper.yaml"


def resolved(spec: dict) -> tuple[float, int, int, float]:
    """(peak lr, effective batch, epochs, warm-up epochs) as the pre-training job resolves them."""
    from cgdmae.pretrain.run import train_config
    from cgdmae.training.engine import peak_lr

    cfg = train_config(spec, seed=0)
    world_size = spec["gpus"] * spec.get("nodes", 1)
    batch = cfg.batch_size * cfg.accum_iter * world_size
    return peak_lr(cfg, world_size), batch, cfg.epochs, cfg.warmup_epochs


# Each paper run's published recipe: (lr, effective batch, epochs, warm-up epochs); None where the
# paper does not say. MAE / CGD-MAE: blr 1.5e-4 at 256 × 8 accumulation × 2 GPUs = 4096 for 400
# epochs, 40 warm-up. PersonMAE: lr 1.2e-3, 100 epochs, 20 warm-up. PersonViT: 5e-4 × batch / 256
# "making sure not to exceed 0.002" (5e-4 × 2048 / 256 = 4e-3 without the cap), 10 warm-up.
# MAE-Lite: 1.5e-4 × batch / 256, 400 epochs, at MAE's batch. Scratch trains for 0 epochs.
PAPER_RECIPES = {
    "scratch": (None, None, 0, None),
    "mae": (2.4e-3, 4096, 400, 40),
    "cgd_mae": (2.4e-3, 4096, 400, 40),
    "mae_fixed_crops": (2.4e-3, 4096, 400, 40),  # the control: mae's recipe on fixed crops
    "person_mae": (1.2e-3, None, 100, 20),
    "person_vit": (0.002, None, None, 10),
    "mae_lite": (2.4e-3, 4096, 400, None),
    "mae_lite_distill": (2.4e-3, 4096, 400, None),
}


def test_every_paper_run_resolves_to_its_papers_lr_batch_and_epochs():
    from cgdmae.config import all_runs, run_spec

    config = load_config(ROOT / "config" / "paper.yaml", SCHEMA)
    rows = []
    for run in all_runs(config):
        base, _, ablated = run.partition("@")
        lr, batch, epochs, warmup = PAPER_RECIPES[base]
        axis, _, value = ablated.partition("=")
        if axis == "epochs":
            epochs = int(value)
        got = resolved(run_spec(config, run))
        rows.append((run, got))
        for name, want, have in zip(
            ("lr", "batch", "epochs", "warmup"), (lr, batch, epochs, warmup), got, strict=True
        ):
            if want is not None:
                assert have == pytest.approx(want), f"{run}: {name} {have}, the paper's {want}"
    assert {run for run, _ in rows} >= set(PAPER_RECIPES)


def test_max_lr_caps_the_scaled_lr_only_where_it_is_set():
    from cgdmae.config import run_spec

    config = load_config(ROOT / "config" / "paper.yaml", SCHEMA)
    vit = run_spec(config, "person_vit")
    assert vit["max_lr"] == 0.002
    assert resolved({**vit, "max_lr": None})[0] == pytest.approx(5e-4 * 2048 / 256)
    assert resolved({**vit, "max_lr": 1.0})[0] == pytest.approx(4e-3)  # a cap above: no change
    assert "max_lr" not in run_spec(config, "mae")  # runs without it keep their resolved spec

    config = default_config()
    config["runs"]["mae"] = {"method": "mae", "overrides": {"max_lr": 0}}
    with pytest.raises(ConfigError, match=r"runs\.mae\.overrides.*max_lr"):
        validate_config(config, SCHEMA)


# names from the config become path parts under results/ and Slurm job names


def write_config(tmp_path, config) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_run_name_that_climbs_out_of_results_fails_naming_the_key(tmp_path):
    config = default_config()
    config["runs"]["../x"] = {"method": "mae"}
    path = write_config(tmp_path, config)
    with pytest.raises(ConfigError) as err:
        load_config(path, SCHEMA)
    assert str(err.value).startswith(f"{path}: config key 'runs': the name '../x' is not allowed")


@pytest.mark.parametrize("section", ["runs", "datasets", "teachers", "ablations"])
@pytest.mark.parametrize("name", ["my run", ".hidden", "a..b", "a/b", "-rf", "x;y", "ünï"])
def test_unsafe_names_fail_naming_the_section_and_the_name(tmp_path, section, name):
    import re

    config = default_config()
    config[section][name] = next(iter(config[section].values()))
    with pytest.raises(ConfigError, match=rf"config key '{section}': the name '{re.escape(name)}'"):
        load_config(write_config(tmp_path, config), SCHEMA)


def test_safe_names_pass_and_the_schema_uses_the_code_pattern():
    from cgdmae.config import NAME_PATTERN

    config = default_config()
    config["runs"]["mae_v2.1-b"] = {"method": "mae"}
    config["datasets"]["VeRi_776.v2"] = dict(config["datasets"]["veri776"])
    validate_config(config, SCHEMA)
    schema = yaml.safe_load(SCHEMA.read_text())
    assert schema["$defs"]["name"]["pattern"] == NAME_PATTERN


@pytest.mark.parametrize("value", ["../../x", "a b", "x/y"])
def test_an_ablation_value_that_makes_an_unsafe_run_name_fails_naming_it(tmp_path, value):
    config = default_config()
    config["ablations"]["data_scale"]["values"] = ["pool", value]
    with pytest.raises(ConfigError, match=r"config key 'ablations\.data_scale\.values\.1'") as err:
        load_config(write_config(tmp_path, config), SCHEMA)
    assert f"cgd_mae@dataset={value}" in str(err.value)


def test_generated_ablation_run_names_are_accepted():
    from cgdmae.config import all_runs

    config = default_config()
    config["ablations"]["mask"] = {"base": "cgd_mae", "axis": "mask_ratio", "values": [0.5, 1e-5]}
    runs = all_runs(validate_config(config, SCHEMA))
    assert {"cgd_mae@mask_ratio=0.5", "cgd_mae@mask_ratio=1e-05"} <= set(runs)


@pytest.mark.parametrize(
    ("method", "key", "value"),
    [
        ("person_vit", "mask_ratio", 0.5),
        ("person_vit", "crop_scale", [0.5, 1.0]),
        ("person_vit", "model.decoder_depth", 2),
        ("scratch", "epochs", 100),
        ("scratch", "mask_ratio", 0.5),
    ],
)
def test_an_override_the_method_ignores_is_refused(method, key, value):
    config = default_config()
    config["ablations"] = {}
    config["runs"] = {"run": {"method": method, "overrides": {key: value}}}
    with pytest.raises(ConfigError, match=rf"runs\.run\.overrides\.{key}.*{method} ignores"):
        validate_config(config, SCHEMA)


def test_an_ablation_of_a_key_the_method_ignores_is_refused():
    config = default_config()
    config["ablations"] = {
        "mask": {"base": "person_vit", "axis": "mask_ratio", "values": [0.5, 0.75, 0.9]}
    }
    with pytest.raises(
        ConfigError, match=r"ablations\.mask\.axis.*person_vit.*ignores.*mask_ratio"
    ):
        validate_config(config, SCHEMA)
    config["ablations"]["mask"]["base"] = "mae"  # MAE reads it
    validate_config(config, SCHEMA)


def test_person_vit_trains_the_same_without_the_keys_it_is_said_to_ignore(tmp_path, monkeypatch):
    """The declaration is checked against the code: changing the keys declared ignored (those
    that leave the initialisation's random draw alone) changes neither the views nor the loss."""
    import copy

    import numpy as np
    import torch
    from PIL import Image
    from torch.utils.data import default_collate

    from cgdmae.config import run_spec
    from cgdmae.pretrain import run as pretrain_run
    from cgdmae.pretrain.cards import method_card

    config = load_config(ROOT / "tests" / "configs" / "tiny.yaml", SCHEMA)
    base = run_spec(config, "person_vit")
    changed = copy.deepcopy(base)
    changed |= {"mask_ratio": 0.3, "mask_strategy": "block", "crop_scale": [0.6, 0.9]}
    changed["model"]["norm_pix_loss"] = not base["model"]["norm_pix_loss"]
    assert {"mask_ratio", "mask_strategy", "crop_scale", "model.norm_pix_loss"} <= set(
        method_card("person_vit").ignored_keys
    )
    rng = np.random.default_rng(0)
    paths = []
    for k in range(4):
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(paths[-1])
    monkeypatch.setattr(pretrain_run, "image_paths", lambda images: paths)
    outcomes = []
    for spec in (base, changed):
        torch.manual_seed(0)
        method = pretrain_run.build_method(spec)
        data = pretrain_run.build_dataset(spec, "pool", seed=0)
        batch = default_collate([data[k] for k in range(4)])
        torch.manual_seed(1)
        outcomes.append((method.state_dict(), batch, method(batch)["loss"].detach()))
    (state_a, batch_a, loss_a), (state_b, batch_b, loss_b) = outcomes
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert all(torch.equal(batch_a[k], batch_b[k]) for k in batch_a)
    assert torch.equal(loss_a, loss_b)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("run", r"runs\.mae\.overrides\.warmup_epochs.*warmup_epochs 6 >= epochs 6"),
        ("pretrain", r"'pretrain\.warmup_epochs'.*warmup_epochs 8 >= epochs 6"),
        ("ablation", r"ablations \(mae@epochs=4\).*warmup_epochs 4 >= epochs 4"),
        ("finetune", r"finetune\.reid\.warmup_epochs.*10 >= epochs 10"),
    ],
)
def test_warmup_as_long_as_training_is_refused(where, expected):
    config = default_config()
    config["ablations"] = {}
    config["pretrain"] |= {"epochs": 6, "warmup_epochs": 1}
    if where == "run":
        config["runs"]["mae"]["overrides"] = {"warmup_epochs": 6}
    elif where == "pretrain":
        config["pretrain"]["warmup_epochs"] = 8
    elif where == "ablation":
        config["pretrain"]["warmup_epochs"] = 4
        config["runs"]["person_vit"]["overrides"]["epochs"] = 6
        config["ablations"] = {"ep": {"base": "mae", "axis": "epochs", "values": [6, 4]}}
    else:
        config["finetune"]["reid"] |= {"epochs": 10, "warmup_epochs": 10}
    with pytest.raises(ConfigError, match=expected):
        validate_config(config, SCHEMA)


@pytest.mark.parametrize(
    "name", ["config/config.yaml", "tests/configs/tiny.yaml", "config/paper.yaml"]
)
def test_shipped_configs_have_warmups_shorter_than_training(name):
    from cgdmae.config import all_runs, run_spec

    config = load_config(ROOT / name, SCHEMA)
    for run in all_runs(config):
        spec = run_spec(config, run)
        assert spec["method"] == "scratch" or spec["warmup_epochs"] < spec["epochs"], run


@pytest.mark.parametrize("values", [[0.5, 0.75, 0.5], [1, 1.0]])
def test_duplicate_ablation_values_are_refused(values):
    config = default_config()
    config["ablations"] = {"mask": {"base": "mae", "axis": "mask_ratio", "values": values}}
    if values == [1, 1.0]:
        config["ablations"]["mask"]["axis"] = "distill.lambda"
        config["ablations"]["mask"]["base"] = "cgd_mae"
    with pytest.raises(ConfigError, match=rf"ablations\.mask\.values\.{len(values) - 1}.*twice"):
        validate_config(config, SCHEMA)


def test_readme_states_the_kl_direction_the_code_computes():
    import torch

    from cgdmae.pretrain.methods.cgd_mae import text_kl_loss

    generator = torch.Generator().manual_seed(0)
    student, teacher = (
        torch.randn(5, 8, generator=generator),
        torch.randn(5, 8, generator=generator),
    )
    text = torch.nn.functional.normalize(torch.randn(7, 8, generator=generator), dim=-1)

    def log_probs(x):
        logits = 100 * torch.nn.functional.normalize(x, dim=-1) @ text.T
        return torch.log_softmax(logits, dim=-1)

    log_s, log_t = log_probs(student), log_probs(teacher)
    teacher_first = (log_t.exp() * (log_t - log_s)).sum(-1).mean()
    student_first = (log_s.exp() * (log_s - log_t)).sum(-1).mean()
    got = text_kl_loss(student, teacher, text)
    assert got == pytest.approx(teacher_first.item(), rel=1e-4)
    assert got != pytest.approx(student_first.item(), rel=1e-2)
    readme = (ROOT / "config" / "README.md").read_text()
    assert "`L_kl` = KL(P_t ‖ P_s)" in readme and "KL(P_s ‖ P_t) between" not in readme


def test_cached_targets_follow_the_run_that_uses_them():
    """The targets file is keyed on the run's dataset, size and crop scale: a run cropping
    otherwise gets its own file, runs cropping alike share one (the most views any of them
    uses: a run with fewer reads the first ones), and the MAE control on fixed crops
    (cached_crops) trains on exactly cgd_mae's views."""
    config = default_config()
    config["ablations"] = {}
    config["runs"] |= {
        "cgd_small": {"method": "cgd_mae", "overrides": {"model.img_size": [32, 32]}},
        "cgd_scale": {"method": "cgd_mae", "overrides": {"crop_scale": [0.5, 1.0]}},
        "cgd_k1": {"method": "cgd_mae", "overrides": {"cache_views": 1}},
        "cgd_small_k8": {
            "method": "cgd_mae",
            "overrides": {"cache_views": 8, "model.img_size": [32, 32]},
        },
        "cgd_lam": {"method": "cgd_mae", "overrides": {"distill.lambda": 0.5}},
        "mae_fixed": {"method": "mae", "overrides": {"cached_crops": "clip_small"}},
        "cgd_online": {"method": "cgd_mae", "overrides": {"distill.targets": "online"}},
    }
    config = validate_config(config, SCHEMA)
    files = {run: targets_file(config, run_spec(config, run)) for run in config["runs"]}
    assert files["cgd_mae"] == "results/teacher/clip_small/targets/pool/k4_64x64_s0.2-1.pt"
    assert files["cgd_small"] == files["cgd_small_k8"]
    assert files["cgd_small"].endswith("/pool/k8_32x32_s0.2-1.pt")
    assert files["cgd_scale"].endswith("/pool/k4_64x64_s0.5-1.pt")
    assert files["cgd_lam"] == files["mae_fixed"] == files["cgd_mae"] == files["cgd_k1"]
    assert files["cgd_online"] is None and files["mae"] is None


@pytest.mark.parametrize(
    ("method", "overrides", "match"),
    [
        ("mae", {"cache_views": 2}, r"runs\.x: pretrain\.cache_views.*fresh crop"),
        ("mae", {"cached_crops": "nope"}, r"cached_crops.*'nope'"),
        (
            "person_vit",
            {"cached_crops": "clip_small"},
            r"person_vit ignores pretrain\.cached_crops",
        ),
        ("cgd_mae", {"cached_crops": "clip_small"}, r"cgd_mae ignores pretrain\.cached_crops"),
    ],
)
def test_fixed_view_settings_that_change_nothing_are_refused(method, overrides, match):
    config = default_config()
    config["ablations"] = {}
    config["runs"] = {"mae": {"method": "mae"}, "cgd_mae": {"method": "cgd_mae"},
                      "x": {"method": method, "overrides": overrides}}  # fmt: skip
    with pytest.raises(ConfigError, match=match):
        validate_config(config, SCHEMA)


def test_cache_views_ablation_maps_the_teachers_count_to_the_base_run():
    config = default_config()
    config["ablations"] = {
        "views": {"base": "cgd_mae", "axis": "cache_views", "values": [1, 4],
                  "tasks": ["reid/veri776"]},
        "targets": {"base": "cgd_mae", "axis": "distill.targets", "values": ["cached", "online"],
                    "tasks": ["reid/veri776"]},
    }  # fmt: skip
    config = validate_config(config, SCHEMA)
    assert ablation_runs(config, "views") == [(1, "cgd_mae@cache_views=1"), (4, "cgd_mae")]
    assert ablation_runs(config, "targets")[1] == ("online", "cgd_mae@distill.targets=online")
    assert run_spec(config, "cgd_mae@cache_views=1")["cache_views"] == 1
