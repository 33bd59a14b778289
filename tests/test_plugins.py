"""A pre-training method and a downstream task defined in this file alone, loaded through the
config's ``plugins:`` key, run through the whole tiny DAG (the Snakefile's validation, the
pre-training CLI in its own process, a fine-tuning job, the loss plot and the main table) with
no edit to the package. The file is its own plugin: ``register()`` below is what the DAG calls.
"""

import csv
import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from cgdmae.finetune import cards as task_cards
from cgdmae.finetune import tasks
from cgdmae.finetune.evaluate import evaluate_top1
from cgdmae.pretrain import cards as method_cards
from cgdmae.pretrain.methods import base
from cgdmae.pretrain.methods.mae import MAEMethod

METHOD, TASK = "mean_mae", "probe"


class MeanMatchingMAE(MAEMethod):
    """MAE plus a term of its own, weighted by its own config section's ``weight``."""

    def __init__(self, model, *, mask_ratio: float, weight: float):
        super().__init__(model, mask_ratio=mask_ratio)
        self.weight = weight

    @classmethod
    def settings(cls, spec):
        return {"mask_ratio": spec["mask_ratio"], "weight": spec["mean_mae"]["weight"]}

    def forward(self, batch):
        loss, _, _ = self.model(batch["image"], self.mask_ratio)
        latent, _, _ = self.model.forward_encoder(batch["image"], self.mask_ratio)
        mean = latent.mean().pow(2)
        return {"loss": loss + self.weight * mean, "mae": loss.detach(), "mean": mean.detach()}


class LinearProbe(tasks.FinetuneTask):
    """A linear classifier on the frozen encoder, on image-folder data."""

    def __init__(self, backbone, num_classes):
        super().__init__()
        self.model = tasks.ClassifierNet(backbone.requires_grad_(False), num_classes)

    @classmethod
    def read_data(cls, fmt, root, spec):
        return tasks.vfr_data(root)

    @classmethod
    def build(cls, backbone, data, spec):
        return cls(backbone, data.num_classes["classes"])

    def forward(self, batch):
        return {"loss": F.cross_entropy(self.model(batch["image"]), batch["label"])}

    @torch.no_grad()
    def predict(self, images):
        return self.model(images)

    def evaluate_protocol(self, test, data, loader, spec, device, seed):
        return evaluate_top1(self, test, loader, device)


def register():
    """The plugin's entry point: a card and a class for each."""
    section = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"weight": {"type": "number", "minimum": 0, "default": 0.5}},
    }
    method_cards.register_card(
        method_cards.MethodCard(METHOD, ("mae", "mean"), section=METHOD, section_schema=section)
    )
    base.register_method(METHOD)(MeanMatchingMAE)
    task_cards.register_task_card(
        task_cards.TaskCard(TASK, ("image_folder",), (("top1", "acc"),), "Probe")
    )
    tasks.register_task(TASK)(LinearProbe)


def plugin_config(tmp_path):
    from test_workflow_data import TINY

    config = yaml.safe_load(TINY.read_text())
    config["plugins"] = [__file__]
    config["runs"] = {"toy": {"method": METHOD, "overrides": {"mean_mae.weight": 2.0}}}
    config["ablations"] = {}
    config["pretrain"]["epochs"] = 1
    config["pretrain"]["warmup_epochs"] = 0
    finetune = {task: {"datasets": []} for task in ("reid", "var", "vfr", "vps")}
    finetune[TASK] = {**config["finetune"]["vfr"], "epochs": 1}
    config["finetune"] = {"gpus": 0, "runtime": 10, **finetune}
    config["curation"]["subsets"] = []
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_plugin_method_and_task_run_through_the_dag(tmp_path):
    from test_workflow_data import snakemake

    config = plugin_config(tmp_path)
    targets = ["results/tables/main.md", "results/figures/pretrain_loss.png"]
    result = snakemake(tmp_path, "--configfile", str(config), "--cores", "2", *targets)
    assert result.returncode == 0, result.stderr[-4000:]
    out = tmp_path / "results"
    with open(out / "pretrain/toy/log.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"loss", "mae", "mean"} <= set(rows[0])
    for row in rows:  # the section's weight (2.0, not the card's default 0.5) reached forward
        total = float(row["mae"]) + 2.0 * float(row["mean"])
        assert float(row["loss"]) == pytest.approx(total, rel=1e-4)
    record = json.loads((out / f"finetune/toy/{TASK}/vfr/metrics.json").read_text())
    assert set(record["metrics"]["test"]) == {"top1"}
    table = (out / "tables/main.md").read_text()
    assert "Probe acc" in table and "toy" in table
    dry = snakemake(tmp_path, "--configfile", str(config), "-n", *targets)
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_a_plugin_that_cannot_load_is_named_by_its_key(tmp_path, monkeypatch):
    from test_workflow_data import ROOT

    from cgdmae import plugins
    from cgdmae.config import ConfigError, validate_config

    monkeypatch.setattr(plugins, "_loaded", set())
    monkeypatch.delenv(plugins.ENV, raising=False)
    config = yaml.safe_load(plugin_config(tmp_path).read_text())
    schema = ROOT / "workflow/schemas/config.schema.yaml"
    config["plugins"] = ["no_such_module_here"]
    with pytest.raises(ConfigError, match=r"'plugins\.0' \('no_such_module_here'\): cannot import"):
        validate_config(config, schema)
    (tmp_path / "empty.py").write_text("X = 1\n")
    config["plugins"] = ["json", str(tmp_path / "empty.py")]
    with pytest.raises(ConfigError, match=r"'plugins\.0' \('json'\): it has no register\(\)"):
        validate_config(config, schema)


def test_a_plugin_is_loaded_into_the_registries_and_its_section_validated(tmp_path, monkeypatch):
    from test_workflow_data import ROOT

    from cgdmae import plugins
    from cgdmae.config import ConfigError, run_spec, task_names, validate_config

    monkeypatch.setattr(plugins, "_loaded", set())
    monkeypatch.setenv(plugins.ENV, "")  # restored after the test, whatever loading sets
    monkeypatch.setattr(method_cards, "_CARDS", method_cards._CARDS.copy())
    monkeypatch.setattr(base, "_METHODS", base._METHODS.copy())
    monkeypatch.setattr(task_cards, "_CARDS", task_cards._CARDS.copy())
    monkeypatch.setattr(tasks, "_TASKS", tasks._TASKS.copy())
    schema = ROOT / "workflow/schemas/config.schema.yaml"
    config = validate_config(yaml.safe_load(plugin_config(tmp_path).read_text()), schema)
    assert task_names()[-1] == TASK
    assert run_spec(config, "toy")["mean_mae"] == {"weight": 2.0}
    assert config["finetune"][TASK]["epochs"] == 1
    assert plugins.os.environ[plugins.ENV] == __file__  # what jobs will load
    bad = yaml.safe_load(plugin_config(tmp_path).read_text())
    bad["runs"]["toy"]["overrides"] = {"mean_mae.weight": -1}
    with pytest.raises(ConfigError, match=r"runs\.toy\.overrides.*mean_mae\.weight"):
        validate_config(bad, schema)
