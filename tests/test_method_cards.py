"""A method is its card (what the config, the workflow and the report know) and its class (the
model, the loss, the views): a toy method defined here alone trains through the config and
the pre-training CLI, and shows up in the loss terms, with no edit to the package."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from cgdmae.config import ConfigError, run_spec, validate_config
from cgdmae.pretrain import cards
from cgdmae.pretrain.cards import MethodCard, method_card, register_card
from cgdmae.pretrain.methods import base
from cgdmae.pretrain.methods.mae import MAEMethod

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


class MeanMatchingMAE(MAEMethod):
    """MAE plus a second term: the latent's mean pulled to zero (a stand-in for any new
    objective)."""

    def forward(self, batch):
        loss, _, _ = self.model(batch["image"], self.mask_ratio)
        latent, _, _ = self.model.forward_encoder(batch["image"], self.mask_ratio)
        mean = latent.mean().pow(2)
        return {"loss": loss + mean, "mae": loss.detach(), "mean": mean.detach()}


@pytest.fixture
def toy_method(monkeypatch):
    """Registered for one test: the registries are copies that the test leaves behind."""
    monkeypatch.setattr(cards, "_CARDS", cards._CARDS.copy())
    monkeypatch.setattr(base, "_METHODS", base._METHODS.copy())
    register_card(MethodCard("mean_mae", ("mae", "mean"), ignored_keys=("cache_views",)))
    base.register_method("mean_mae")(type("MeanMAE", (MeanMatchingMAE,), {}))
    return "mean_mae"


def tiny_config(runs):
    config = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    config["runs"], config["ablations"] = runs, {}
    return validate_config(config, SCHEMA)


def test_a_method_defined_in_a_test_trains_through_the_config_and_the_cli(toy_method, tmp_path):
    from cgdmae.pretrain.cli import main
    from cgdmae.report.figures import loss_terms

    config = tiny_config({"toy": {"method": toy_method, "overrides": {"mask_ratio": 0.5}}})
    spec = run_spec(config, "toy") | {"epochs": 1, "batch_size": 4}
    assert spec["method"] == toy_method and not {"distill", "person_vit"} & set(spec)
    pool = tmp_path / "pool"
    (pool / "images").mkdir(parents=True)
    rows = ["image,caption"]
    for i in range(8):
        pixels = torch.rand(40, 40, 3, generator=torch.Generator().manual_seed(i)) * 255
        Image.fromarray(pixels.to(torch.uint8).numpy()).save(pool / f"images/{i}.jpg")
        rows.append(f"images/{i}.jpg,a red sedan.")
    (pool / "captions.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    argv = ["--name=toy", f"--spec={json.dumps(spec)}", f"--images={pool}", f"--out={out}"]
    assert main(argv) == 0
    header = (out / "log.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "mae", "mean"} <= set(header)
    assert (out / "encoder.pth").exists()
    assert loss_terms()[-1] == "mean"  # its loss curve gets a line


def test_a_cards_ignored_key_is_refused_and_an_unknown_method_named(toy_method):
    with pytest.raises(ConfigError, match=r"runs\.toy\.overrides\.cache_views.*ignores"):
        tiny_config({"toy": {"method": toy_method, "overrides": {"cache_views": 2}}})
    with pytest.raises(ConfigError, match=r"runs\.x\.method.*'nope'.*known methods: .*mean_mae"):
        tiny_config({"x": {"method": "nope"}})


def test_every_registered_method_has_a_card_and_the_cards_read_the_spec():
    from cgdmae.pretrain.methods import available_methods

    assert sorted(c.name for c in cards.method_cards()) == available_methods()
    config = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    config = validate_config(config, SCHEMA)
    cgd = run_spec(config, "cgd_mae")
    assert method_card("cgd_mae").clip_teacher_of(cgd) == cgd["distill"]["teacher"]
    assert method_card("mae").clip_teacher_of(run_spec(config, "mae")) is None
    lite = run_spec(config, "mae_lite_distill")
    assert method_card("mae_lite").teacher_run_of(lite) == lite["mae_lite"]["teacher_run"]
    assert not method_card("scratch").trains and not method_card("person_vit").reconstructs
