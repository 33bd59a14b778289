"""cgdmae.bench.cost on the tiny workflow config: rows, FLOPs and GPU-hours."""

from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from cgdmae.bench import cost
from cgdmae.config import all_runs, load_config, run_spec
from cgdmae.pretrain.run import build_method

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
POOL = 120


@pytest.fixture(scope="module")
def config():
    return load_config(TINY, cost.SCHEMA)


@pytest.fixture(scope="module")
def rows(config):
    return cost.cost_rows(config, pool_images=POOL)


def pretrain_rows(rows):
    return {r.name.split(" (")[0]: r for r in rows if r.stage == "pre-training"}


def test_one_pretraining_row_per_run_including_ablation_runs(config, rows):
    runs = list(all_runs(config))
    assert any("@" in run for run in runs)
    assert "cgd_mae@distill.lambda=0.0" in runs
    assert list(pretrain_rows(rows)) == runs
    stages = {r.stage for r in rows}
    assert stages == {"teacher targets", "curation embedding", "pre-training", "fine-tuning"}


def test_scratch_costs_nothing(rows):
    scratch = pretrain_rows(rows)["scratch"]
    assert scratch.images == 0 and scratch.flops == 0
    assert scratch.gpu_hours(cost.MFU, cost.PEAK_TFLOPS) == 0


def test_mae_step_is_three_forwards_counted_by_flop_counter_mode(config, rows):
    spec = run_spec(config, "mae")
    method = build_method(spec).train()
    images = torch.randn(2, 3, *spec["model"]["img_size"])
    # the math kernel runs attention as matmuls, which FlopCounterMode counts on the CPU
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter, torch.no_grad():
        method({"image": images})
    forward = counter.get_total_flops() / len(images)
    mae = pretrain_rows(rows)["mae"]
    assert mae.images == POOL * spec["epochs"]
    assert mae.flops / mae.images == pytest.approx(3 * forward, rel=1e-9)


def test_frozen_teacher_forward_counts_once(config, rows):
    """Distilled mae_lite: 3× its own forward plus 1× the frozen MAE's, less than 3× both."""
    spec = run_spec(config, "mae_lite_distill")
    method = cost.pretrain_method(config, spec)
    batch = cost.pretrain_batch(spec)
    total, by_module = cost.count_flops(method, batch)
    teacher = cost.flops_under(by_module, "MAELiteMethod.teacher")
    assert 0 < teacher < total
    row = pretrain_rows(rows)["mae_lite_distill"]
    n = len(batch["image"])
    assert row.flops / row.images == pytest.approx((3 * (total - teacher) + teacher) / n)


def test_gpu_hours_are_flops_over_mfu_times_peak(rows):
    for row in rows:
        hours = row.gpu_hours(0.4, 500.0)
        assert hours == pytest.approx(row.flops / (0.4 * 500.0e12) / 3600)
    total = sum(r.flops for r in rows)
    assert total > 0


def test_cli_writes_the_markdown_table(config, tmp_path):
    out = tmp_path / "cost.md"
    text = cost.main(
        ["--config", str(TINY), "--pool-images", str(POOL), "--mfu", "0.5",
         "--peak-tflops", "100", "--finetune-images", "vps=10", "--out", str(out)]
    )  # fmt: skip
    assert out.read_text() == text
    assert "50% MFU × 100 TFLOP/s" in text
    table = [line for line in text.splitlines() if line.startswith("| pre-training |")]
    assert len(table) == len(all_runs(config))
    assert "vps 10" in text and "on one 8-GPU node" in text


def test_seed_spread_table_gives_each_columns_std_over_seeds_and_range_of_means():
    from cgdmae.bench.seed_spread import markdown

    rows = [{"column": "VFR top-1", "values": {"a": [10.0, 12.0, 14.0], "b": [20.0, 20.0, 20.0]}}]
    table = markdown(rows, [0, 1, 2]).splitlines()
    assert table[0].startswith("| column | a (seeds 0, 1, 2) | b (seeds 0, 1, 2) |")
    # std of a is 2, of b 0 (mean 1.00); the means are 12 and 20 (range 8.00)
    assert table[2] == "| VFR top-1 | 10.0 / 12.0 / 14.0 | 20.0 / 20.0 / 20.0 | 1.00 | 8.00 |"
