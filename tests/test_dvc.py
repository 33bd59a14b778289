"""DVC used the DVC way: code in the stages' deps, the tables' numbers as metrics, the curves
as plots, and `make pull` stopping with one line when the remote cannot be read."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cgdmae.report.figures import loss_frame, save_data
from cgdmae.report.tables import Column, Table, table_metrics, write_metrics

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
CODE = {"src/cgdmae", "workflow", "Snakefile", "${configfile}"}


@pytest.mark.parametrize("stage", ["data", "pretrain", "finetune", "report"])
def test_every_stage_depends_on_the_code(stage):
    deps = set(DVC_YAML["stages"][stage]["deps"])
    assert deps >= CODE, CODE - deps
    # the schema and the rule files sit inside workflow/, the table templates in paper/
    assert (ROOT / "workflow/schemas/config.schema.yaml").is_file()
    if stage == "report":
        assert {"paper/templates", "paper/report.ipynb"} <= deps


def outputs_of_stages():
    outs = []
    for stage in DVC_YAML["stages"].values():
        outs += [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]]
    return outs


def test_metrics_and_plots_are_declared_inside_versioned_outputs():
    """`dvc metrics diff <rev>` reads an old commit's metrics from the cache: they must lie in
    an output DVC versions, and be written by the rules that dvc.yaml names."""
    outs = outputs_of_stages()
    rules = "".join(p.read_text() for p in (ROOT / "workflow/rules").glob("*.smk"))
    assert DVC_YAML["metrics"] == ["results/metrics"]
    assert "results/metrics" in outs
    assert 'json="results/metrics/main.json"' in rules
    assert 'json="results/metrics/ablation_{name}.json"' in rules
    plots = {next(iter(p)): next(iter(p.values())) for p in DVC_YAML["plots"]}
    assert set(plots) == {"results/figures/pretrain_loss.csv", "results/figures/cmc.csv"}
    for path, spec in plots.items():
        assert any(path.startswith(out + "/") for out in outs), path
        assert f'csv="{path}"' in rules
        template = json.loads((ROOT / spec["template"]).read_text())
        assert "<DVC_METRIC_DATA>" in json.dumps(template)


def test_table_metrics_are_the_tables_numbers(tmp_path):
    columns = [
        Column("reid", "veri776", "mAP", "VeRi-776 mAP"),
        Column("vfr", "vfr", "top1", "VFR top-1"),
    ]
    table = Table(
        "c", "run", columns, [("mae", [[50.0, 52.0], []]), ("cgd_mae", [[61.25], [70.0]])]
    )
    path = write_metrics(table, tmp_path / "results/metrics/main.json")
    assert (
        json.loads(path.read_text())
        == table_metrics(table)
        == {
            "mae": {"VeRi-776 mAP": 51.0, "VeRi-776 mAP std": 1.4142},
            "cgd_mae": {"VeRi-776 mAP": 61.25, "VFR top-1": 70.0},
        }
    )


def test_loss_curve_data_is_long_format(tmp_path):
    (tmp_path / "mae.csv").write_text("epoch,loss,img_per_s\n1,0.9,10\n2,0.7,11\n")
    (tmp_path / "cgd.csv").write_text("epoch,loss,mae,sim,kl,img_per_s\n1,3,1,1.5,0.5,9\n")
    (tmp_path / "scratch.csv").write_text("epoch,loss\n")
    logs = {run: tmp_path / f"{run}.csv" for run in ("mae", "cgd", "scratch")}
    path = save_data(loss_frame(logs), tmp_path / "pretrain_loss.csv")
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["run", "epoch", "term", "value"]
    assert set(frame.run) == {"mae", "cgd"}
    cgd = frame[frame.run == "cgd"].set_index("term").value.to_dict()
    assert cgd == {"loss": 3, "mae": 1, "sim": 1.5, "kl": 0.5}


def make_pull(repo, *args):
    venv = Path(sys.executable).parent.parent
    return subprocess.run(
        ["make", "-f", str(ROOT / "Makefile"), f"VENV={venv}", "-o", f"{venv}/.installed",
         "pull", *args],
        cwd=repo, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip


@pytest.fixture
def dvc_repo(tmp_path):
    repo = tmp_path / "clone"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc = [str(Path(sys.executable).parent / "dvc")]
    subprocess.run([*dvc, "init", "-q"], cwd=repo, check=True)
    remote = tmp_path / "elsewhere" / "cgdmae-dvc-remote"
    subprocess.run([*dvc, "remote", "add", "-d", "local", str(remote)], cwd=repo, check=True)
    return repo, remote


def test_make_pull_without_a_reachable_remote_names_it_in_one_line(dvc_repo, tmp_path):
    repo, remote = dvc_repo
    result = make_pull(repo)
    assert result.returncode != 0
    assert "Everything is up to date" not in result.stdout + result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith("make pull: ") and str(remote) in first, result.stderr
    assert "make pull DVC_REMOTE=" in first
    # pointing it elsewhere names the new URL, which is what was tried
    other = tmp_path / "also-missing"
    result = make_pull(repo, f"DVC_REMOTE={other}")
    assert result.returncode != 0 and str(other) in result.stderr.splitlines()[0], result.stderr


def test_the_remote_check_passes_for_a_remote_that_exists(dvc_repo):
    repo, remote = dvc_repo
    remote.mkdir(parents=True)
    check = [sys.executable, "-m", "cgdmae.dvc_remote"]
    result = subprocess.run(check, cwd=repo, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "remote", "remove", "local"],
                   cwd=repo, check=True)  # fmt: skip
    result = subprocess.run(check, cwd=repo, capture_output=True, text=True)
    assert result.returncode == 1 and "no DVC remote is configured" in result.stderr
