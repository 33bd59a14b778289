"""Workflow test: the whole DAG on the tiny config, from data to the executed report."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml
from test_workflow_data import ROOT, TINY, snakemake

# run -> method
RUNS = {
    "scratch": "scratch",
    "mae": "mae",
    "cgd_mae": "cgd_mae",
    "cgd_mae_online": "cgd_mae",
    "person_mae": "person_mae",
    "person_vit": "person_vit",
    "mae_lite_distill": "mae_lite",
}
LOSS_TERMS = {"cgd_mae": {"sim", "kl"}, "person_mae": {"pixel", "feature"}}
LOSS_TERMS |= {"person_vit": {"dino", "mim"}, "mae_lite": {"mae", "distill"}}


def scheduled_jobs(dry_run_stdout: str) -> list[str]:
    """'rule: wildcards' of each job a dry run would execute."""
    jobs, rule = [], None
    for line in dry_run_stdout.splitlines():
        match = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if match:
            rule = match.group(1)
            jobs.append(rule)
        elif line.strip().startswith("wildcards:") and rule:
            jobs[-1] = f"{rule}: {line.strip().removeprefix('wildcards: ')}"
    return jobs


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("all")
    result = snakemake(  # as `make demo` runs it: every script through the warm server
        workdir, "--configfile", str(TINY), "--cores", "2", "all", "paper/report.html", warm=True
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def test_pretraining_outputs(built):
    metrics = json.loads((built / "results/teacher/clip_small/metrics.json").read_text())
    assert {"color_acc", "type_acc"} <= set(metrics)
    for run, method in list(RUNS.items())[1:]:
        out = built / "results" / "pretrain" / run
        with open(out / "log.csv") as f:
            rows = list(csv.DictReader(f))
        assert [r["epoch"] for r in rows] == ["1", "2"]
        assert LOSS_TERMS.get(method, {"loss"}) <= set(rows[0]), rows[0]
        checkpoint = torch.load(out / "checkpoint.pth", weights_only=False)
        assert checkpoint["config"]["method"] == method
        if method in ("cgd_mae", "mae_lite"):  # frozen teachers from elsewhere are not saved
            assert not any(k.startswith("teacher.") for k in checkpoint["method"])
    encoder = torch.load(built / "results/pretrain/mae/encoder.pth", weights_only=True)["model"]
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=0
    )
    vit.load_state_dict(encoder, strict=True)
    # the ablations added their runs; the base value reused the base run
    assert (built / "results/pretrain/mae@mask_ratio=0.5/encoder.pth").exists()
    assert not (built / "results/pretrain/mae@mask_ratio=0.75").exists()


def test_finetuning_tables_figures_and_report(built):
    for run in RUNS:
        for task, dataset in [("reid", "veri776"), ("reid", "vehicleid"), ("var", "veri776"),
                              ("vfr", "vfr"), ("vps", "vps")]:  # fmt: skip
            record = json.loads(
                (built / f"results/finetune/{run}/{task}/{dataset}/metrics.json").read_text()
            )
            encoder = built / f"results/pretrain/{run}/encoder.pth"
            assert (
                record["num_train"] > 0
                and record["encoder"] == str(encoder).split(str(built) + "/")[-1]
            )
    main = (built / "results/tables/main.md").read_text()
    assert all(f"| {run} |" in main for run in RUNS) and "VeRi-776 mAP" in main and "**" in main
    tex = (built / "results/tables/main.tex").read_text()
    assert r"\toprule" in tex and r"\textbf{" in tex and "% config hash: " in tex
    mask = (built / "results/tables/ablation_mask.md").read_text()
    assert "| mask_ratio=0.75 |" in mask and "| mask_ratio=0.5 |" in mask
    veri = json.loads((built / "results/finetune/mae/reid/veri776/metrics.json").read_text())
    assert f"{100 * veri['metrics']['test']['mAP']:.1f}" in mask  # the base row is the mae run
    curated = json.loads((built / "results/curation/curated_60/stats.json").read_text())
    assert curated["selected"] == 60 and curated["pool_images"] == 120
    assert (built / "results/pretrain/mae@dataset=curated_60/encoder.pth").exists()
    assert "| dataset=random_60 |" in (built / "results/tables/ablation_data_scale.md").read_text()
    for figure in (
        "curation_curated_60",
        "pretrain_loss",
        "reconstructions",
        "cmc",
        "ablation_mask",
        "ablation_lambda",
    ):
        assert (built / f"results/figures/{figure}.png").stat().st_size > 5000
    html = (built / "paper/report.html").read_text()
    assert "Downstream results" in html and "VeRi-776 mAP" in html and "data:image/png" in html


def test_nothing_to_do_after_a_full_run(built):
    again = snakemake(built, "--configfile", str(TINY), "-n", "all", "paper/report.html")
    assert again.returncode == 0 and scheduled_jobs(again.stdout) == [], again.stdout[-3000:]


def test_changed_hyperparameter_reruns_only_what_depends_on_it(built, tmp_path):
    changed = tmp_path / "changed.yaml"
    changed.write_text(TINY.read_text().replace("values: [0.75, 0.5]", "values: [0.75, 0.6]"))
    dry = snakemake(built, "--configfile", str(changed), "-n", "results/tables/ablation_mask.tex")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert sorted(scheduled_jobs(dry.stdout)) == [
        "finetune: run=mae@mask_ratio=0.6, task=reid, dataset=veri776",
        "pretrain: run=mae@mask_ratio=0.6",
        "table_ablation: name=mask",
    ], dry.stdout[-3000:]


def test_single_table_schedules_only_its_own_jobs(tmp_path):
    dry = snakemake(tmp_path, "--configfile", str(TINY), "-n", "results/tables/ablation_mask.tex")
    assert dry.returncode == 0, dry.stderr[-2000:]
    jobs = scheduled_jobs(dry.stdout)
    assert sorted(j for j in jobs if j.startswith(("pretrain", "finetune", "teacher"))) == [
        "finetune: run=mae, task=reid, dataset=veri776",
        "finetune: run=mae@mask_ratio=0.5, task=reid, dataset=veri776",
        "pretrain: run=mae",
        "pretrain: run=mae@mask_ratio=0.5",
    ], jobs


def test_mae_lite_teacher_run_is_an_input_of_its_student(tmp_path):
    dry = snakemake(
        tmp_path, "--configfile", str(TINY), "-n", "results/pretrain/mae_lite_distill/encoder.pth"
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    jobs = sorted(j for j in scheduled_jobs(dry.stdout) if j.startswith("pretrain"))
    assert jobs == ["pretrain: run=mae", "pretrain: run=mae_lite_distill"], jobs


def run(cmd, cwd, **kwargs):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{cmd}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def test_dvc_pull_rebuilds_without_training(built, tmp_path):
    """Push the tiny DAG's artifacts from one clone, pull them into a fresh one: `make pull`
    then `snakemake all` schedules no pre-training or fine-tuning job; changing a pre-training
    hyper-parameter afterwards does schedule that run."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.org"]
    origin, fresh, remote = tmp_path / "origin", tmp_path / "fresh", tmp_path / "remote"
    run(["git", "clone", "-q", str(ROOT), str(origin)], tmp_path)
    shutil.copy(TINY, origin / "tiny.yaml")
    # params.yaml names another config: the push records its lock for the one it pushed
    (origin / "params.yaml").write_text("configfile: config/config.yaml\n")
    for path in ("results", "paper/report.html"):
        source, target = built / path, origin / path
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    make = ["make", f"VENV={bin_dir.parent}", "-o", f"{bin_dir.parent}/.installed",
            "CONFIGFILE=tiny.yaml", f"DVC_REMOTE={remote}"]  # fmt: skip
    # the copied results predate this clone's scripts: mark them as built here
    run([sys.executable, "-m", "snakemake", "--configfile", "tiny.yaml", "--cores", "1",
         "--touch", "all"], origin, env=env)  # fmt: skip
    run([*make, "push"], origin, env=env)
    assert (origin / "params.yaml").read_text().endswith("configfile: tiny.yaml\n")
    lock = yaml.safe_load((origin / "dvc.lock").read_text())
    stage = lock["stages"]["pretrain"]
    assert "--configfile tiny.yaml" in stage["cmd"]
    assert "tiny.yaml" in [dep["path"] for dep in stage["deps"]]
    # dvc commit relinked the files (new mtimes): the pushing clone must still be up to date
    dry = run([sys.executable, "-m", "snakemake", "--configfile", "tiny.yaml", "-n", "all"],
              origin, env=env)  # fmt: skip
    assert scheduled_jobs(dry.stdout) == [], dry.stdout[-3000:]
    run([*git, "add", "-f", "dvc.lock", "params.yaml", "tiny.yaml"], origin)
    run([*git, "commit", "-qm", "artifacts of the tiny config"], origin)
    run(["git", "clone", "-q", str(origin), str(fresh)], tmp_path)
    run([*make, "pull"], fresh, env=env)
    assert (fresh / "results/pretrain/cgd_mae/encoder.pth").exists()
    dry = run([sys.executable, "-m", "snakemake", "--configfile", "tiny.yaml", "-n", "all",
               "paper/report.html"], fresh, env=env)  # fmt: skip
    assert not [j for j in scheduled_jobs(dry.stdout) if j.startswith(("pretrain", "finetune",
                "teacher", "curation"))], dry.stdout[-3000:]  # fmt: skip
    tiny = (fresh / "tiny.yaml").read_text()
    (fresh / "tiny.yaml").write_text(
        tiny.replace("epochs: 2\n  warmup_epochs: 1", "epochs: 3\n  warmup_epochs: 1")
    )
    dry = run([sys.executable, "-m", "snakemake", "--configfile", "tiny.yaml", "-n",
               "results/pretrain/mae/encoder.pth"], fresh, env=env)  # fmt: skip
    assert "pretrain: run=mae" in scheduled_jobs(dry.stdout), dry.stdout[-3000:]
    # an out-of-date DAG is not pushed: its dvc.lock would record stale artifacts
    stale = subprocess.run([*make, "push"], cwd=fresh, env=env, capture_output=True, text=True)
    assert stale.returncode != 0 and "results/ is out of date" in stale.stderr, stale.stderr
    # the tables' numbers are DVC metrics, and a commit's can be compared with another's
    dvc = [str(bin_dir / "dvc")]
    shown = json.loads(run([*dvc, "metrics", "show", "--json"], origin, env=env).stdout)
    shown = shown[""]["data"]
    main = json.loads((origin / "results/metrics/main.json").read_text())
    assert set(main) == set(RUNS) and main["mae"]["VeRi-776 mAP"] >= 0
    assert shown["results/metrics/main.json"]["data"] == main
    for name in ("data_scale", "mask", "lambda"):
        assert f"results/metrics/ablation_{name}.json" in shown
    plots = json.loads(run([*dvc, "plots", "show", "--json"], origin, env=env).stdout)["data"]
    loss = plots["results/figures/pretrain_loss.csv"][0]["content"]["data"]["values"]
    assert {point["run"] for point in loss} == set(RUNS) - {"scratch"}
    assert plots["results/figures/cmc.csv"][0]["content"]["data"]["values"]
    main["mae"]["VeRi-776 mAP"] += 1.5  # a second commit whose mAP differs
    (origin / "results/metrics/main.json").write_text(json.dumps(main))
    run([*dvc, "commit", "--force", "report"], origin, env=env)
    run([*git, "commit", "-qm", "a better mae", "dvc.lock"], origin)
    diff = run([*dvc, "metrics", "diff", "HEAD~1", "HEAD", "--json"], origin, env=env)
    changed = json.loads(diff.stdout)
    assert list(changed) == ["results/metrics/main.json"], changed
    assert list(changed["results/metrics/main.json"]) == ["mae.VeRi-776 mAP"]
    assert changed["results/metrics/main.json"]["mae.VeRi-776 mAP"]["diff"] == pytest.approx(1.5)
