"""Workflow test: the whole DAG on the tiny config, from data to the executed report."""

import csv
import json
import re

import pytest
import timm
import torch
from test_workflow_data import TINY, snakemake

RUNS = ("scratch", "mae", "cgd_mae", "cgd_mae_online")


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
    result = snakemake(
        workdir, "--configfile", str(TINY), "--cores", "2", "all", "paper/report.html"
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def test_pretraining_outputs(built):
    metrics = json.loads((built / "results/teacher/clip_small/metrics.json").read_text())
    assert {"color_acc", "type_acc"} <= set(metrics)
    for run in RUNS[1:]:
        out = built / "results" / "pretrain" / run
        with open(out / "log.csv") as f:
            rows = list(csv.DictReader(f))
        assert [r["epoch"] for r in rows] == ["1", "2"]
        if run.startswith("cgd_mae"):
            assert {"sim", "kl"} <= set(rows[0])
        checkpoint = torch.load(out / "checkpoint.pth", weights_only=False)
        assert checkpoint["config"]["method"] == run.split("_online")[0]
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
