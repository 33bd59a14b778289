"""Workflow test: teacher, cached targets and every pre-training method on the tiny config."""

import csv
import json

import timm
import torch
from test_workflow_data import TINY, snakemake


def test_pretraining_runs_end_to_end(tmp_path):
    targets = [
        f"results/pretrain/{run}/encoder.pth"
        for run in ("scratch", "mae", "cgd_mae", "cgd_mae_online")
    ]
    result = snakemake(
        tmp_path,
        "--configfile",
        str(TINY),
        "--cores",
        "2",
        *targets,
        "results/figures/pretrain_loss.png",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((tmp_path / "results/teacher/clip_small/metrics.json").read_text())
    assert {"color_acc", "type_acc"} <= set(metrics)
    for run in ("mae", "cgd_mae", "cgd_mae_online"):
        out = tmp_path / "results" / "pretrain" / run
        with open(out / "log.csv") as f:
            rows = list(csv.DictReader(f))
        assert [r["epoch"] for r in rows] == ["1", "2"]
        if run.startswith("cgd_mae"):
            assert {"sim", "kl"} <= set(rows[0])
        checkpoint = torch.load(out / "checkpoint.pth", weights_only=False)
        assert checkpoint["config"]["method"] == run.split("_online")[0]
        assert not any(k.startswith("teacher.") for k in checkpoint["method"])
    encoder = torch.load(tmp_path / "results/pretrain/mae/encoder.pth", weights_only=True)["model"]
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=0
    )
    vit.load_state_dict(encoder, strict=True)
    assert (tmp_path / "results/figures/pretrain_loss.pdf").exists()
    # changing one run's hyper-parameter reruns that run only
    changed = tmp_path / "changed.yaml"
    changed.write_text(
        TINY.read_text().replace(
            "mae: {method: mae}", "mae: {method: mae, overrides: {mask_ratio: 0.5}}"
        )
    )
    dry = snakemake(tmp_path, "--configfile", str(changed), "-n", *targets)
    assert dry.returncode == 0, dry.stderr[-2000:]
    scheduled = [line.strip() for line in dry.stdout.splitlines() if "wildcards: run=" in line]
    assert scheduled == ["wildcards: run=mae"], dry.stdout[-3000:]
