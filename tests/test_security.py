"""Files pulled from a shared remote are read as data: a pickle payload in a checkpoint never runs.

The payload is a real checkpoint with one extra object whose ``__reduce__`` would create a
marker file when unpickled. Every loader of checkpoint.pth (the engine's resume, the staleness
check each job runs first, the report's reconstructions) must refuse it, name the file, and
never create the marker.
"""

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_engine import CFG, TinyMethod, Vectors, assert_same_result, read_log

from cgdmae.config import run_spec, validate_config
from cgdmae.report.reconstruct import reconstruct
from cgdmae.training.checkpoint import CheckpointError, load_checkpoint, set_aside_if_stale
from cgdmae.training.engine import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
REFUSED = r"checkpoint\.pth: refused by a weights-only load: it needs (io|builtins)\.open"


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appearing means code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def planted(tmp_path) -> tuple[Path, Path]:
    """(out_dir holding a one-epoch run whose checkpoint.pth carries a payload, the marker)."""
    out, marker = tmp_path / "run", tmp_path / "marker"
    train(TinyMethod(), Vectors(), TrainConfig(**{**CFG, "epochs": 1}), out)
    path = out / "checkpoint.pth"
    state = torch.load(path, weights_only=True)
    state["scaler"] = Payload(marker)
    torch.save(state, path)
    return out, marker


def test_the_payload_would_run_if_unpickled(planted, tmp_path):
    """The control: an unrestricted load of the planted file does create the marker."""
    out, marker = planted
    copy = tmp_path / "copy.pth"
    shutil.copyfile(out / "checkpoint.pth", copy)
    code = f"import torch; torch.load({str(copy)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert marker.exists()


def test_loading_the_planted_checkpoint_is_refused_naming_the_file(planted):
    out, marker = planted
    with pytest.raises(CheckpointError, match=REFUSED) as err:
        load_checkpoint(out / "checkpoint.pth")
    assert str(out / "checkpoint.pth") in str(err.value)
    assert not marker.exists()


def test_reconstructions_refuse_the_planted_checkpoint(planted):
    out, marker = planted
    tiny = validate_config(yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text()), SCHEMA)
    with pytest.raises(CheckpointError, match=REFUSED):
        reconstruct(out / "checkpoint.pth", run_spec(tiny, "mae"), [])
    assert not marker.exists()


def test_staleness_check_sets_the_planted_checkpoint_aside(planted, caplog):
    out, marker = planted
    path = out / "checkpoint.pth"
    with caplog.at_level(logging.WARNING, logger="cgdmae.training.checkpoint"):
        set_aside_if_stale(path, config={})
    assert not marker.exists() and not path.exists()
    [aside] = out.glob("checkpoint.corrupt-*.pth")
    assert f"{path}: refused by a weights-only load" in caplog.text
    assert f"kept it as {aside}, starting over" in caplog.text


def test_resume_sets_the_planted_checkpoint_aside_and_starts_over(planted, tmp_path, caplog):
    """The retried job does not fail again: it trains from scratch, as an untouched run would."""
    out, marker = planted
    with caplog.at_level(logging.WARNING, logger="cgdmae.training.checkpoint"):
        train(TinyMethod(), Vectors(), TrainConfig(**CFG), out)
    assert not marker.exists()
    assert f"{out / 'checkpoint.pth'}: refused by a weights-only load" in caplog.text
    assert len(list(out.glob("checkpoint.corrupt-*.pth"))) == 1
    straight = tmp_path / "straight"
    train(TinyMethod(), Vectors(), TrainConfig(**CFG), straight)
    assert [row["epoch"] for row in read_log(out)] == ["1", "2", "3", "4"]
    assert_same_result(out, straight)


def test_no_source_file_loads_with_weights_only_false():
    sources = [p for p in (ROOT / "src").rglob("*.py") if "weights_only=False" in p.read_text()]
    assert sources == []
