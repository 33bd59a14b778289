"""The training engine: exact resume, SIGTERM checkpoint, NaN stop, MAE's lr schedule, logs."""

import csv
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from cgdmae.models import create_mae
from cgdmae.pretrain.engine import (
    EXIT_PREEMPTED,
    NonFiniteLossError,
    Preempted,
    ResumeMismatchError,
    TrainConfig,
    effective_lr,
    mae_lr,
    make_scheduler,
    train,
)
from cgdmae.pretrain.methods import method_class

ROOT = Path(__file__).resolve().parents[1]


class ImageSet(torch.utils.data.Dataset):
    def __init__(self, n: int = 24, size: int = 16):
        self.images = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"image": self.images[index], "index": index}


def make_method(seed: int = 0):
    torch.manual_seed(seed)
    model = create_mae(
        "tiny",
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=2,
        num_heads=2,
        decoder_dim=16,
        decoder_depth=1,
        decoder_heads=2,
        norm_pix_loss=True,
    )
    return method_class("mae")(model, mask_ratio=0.75)


CFG = dict(epochs=3, batch_size=4, blr=1e-3, warmup_epochs=1, accum_iter=2, save_every=1, seed=0)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path / "checkpoint.pth", weights_only=False)["model"]


def read_log(out: Path) -> list[dict[str, str]]:
    with open(out / "log.csv") as f:
        return list(csv.DictReader(f))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_interrupted_then_resumed_run_is_bit_identical(tmp_path):
    train(
        make_method(),
        ImageSet(),
        TrainConfig(**CFG),
        tmp_path / "straight",
        config_snapshot={"a": 1},
    )
    # mid-epoch (epoch 0 has 3 optimizer steps) and at an epoch boundary (after step 6)
    for stop in (2, 6):
        out = tmp_path / f"stopped_{stop}"
        with pytest.raises(Preempted):
            train(
                make_method(),
                ImageSet(),
                TrainConfig(**CFG),
                out,
                config_snapshot={"a": 1},
                stop_after_steps=stop,
            )
        saved = torch.load(out / "checkpoint.pth", weights_only=False)
        assert saved["step"] == stop
        # a fresh process would rebuild the method with another init: resume must overwrite it
        result = train(
            make_method(seed=123), ImageSet(), TrainConfig(**CFG), out, config_snapshot={"a": 1}
        )
        assert result.steps == 9
        assert_same_weights(tmp_path / "straight", out)
        rows = read_log(out)
        straight = read_log(tmp_path / "straight")
        assert [r["epoch"] for r in rows] == ["1", "2", "3"]
        assert [r["loss"] for r in rows] == [r["loss"] for r in straight]


def test_resume_refuses_a_changed_config(tmp_path):
    with pytest.raises(Preempted):
        train(
            make_method(),
            ImageSet(),
            TrainConfig(**CFG),
            tmp_path,
            config_snapshot={"mask_ratio": 0.75},
            stop_after_steps=1,
        )
    with pytest.raises(ResumeMismatchError, match="changed: mask_ratio"):
        train(
            make_method(),
            ImageSet(),
            TrainConfig(**CFG),
            tmp_path,
            config_snapshot={"mask_ratio": 0.9},
        )


def test_outputs_and_log(tmp_path):
    result = train(make_method(), ImageSet(), TrainConfig(**CFG), tmp_path)
    assert result.epochs_run == 3 and result.steps == 9
    rows = read_log(tmp_path)
    assert len(rows) == 3 and {"epoch", "step", "loss", "mae", "lr", "img_per_s", "seconds"} <= set(
        rows[0]
    )
    encoder = torch.load(tmp_path / "encoder.pth", weights_only=True)["model"]
    assert "blocks.0.attn.qkv.weight" in encoder and not any(
        k.startswith("decoder") for k in encoder
    )
    checkpoint = torch.load(tmp_path / "checkpoint.pth", weights_only=False)
    assert {"model", "optimizer", "epoch", "step", "rng", "config", "scaler"} <= set(checkpoint)
    assert not list(tmp_path.glob("*.tmp"))


def test_zero_epochs_exports_the_initialisation(tmp_path):
    method = make_method()
    init = {k: v.clone() for k, v in method.model.state_dict().items()}
    train(method, ImageSet(), TrainConfig(**{**CFG, "epochs": 0}), tmp_path)
    encoder = torch.load(tmp_path / "encoder.pth", weights_only=True)["model"]
    assert torch.equal(encoder["blocks.1.mlp.fc1.weight"], init["blocks.1.mlp.fc1.weight"])


class NaNAfter(torch.utils.data.Dataset):
    def __init__(self, bad_from: int):
        self.base, self.bad_from = ImageSet(), bad_from

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        item = self.base[index]
        return {"image": item["image"] * float("nan")} if self.epoch >= self.bad_from else item

    def set_epoch(self, epoch):
        self.epoch = epoch


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 1, step 3 \(loss=nan"):
        train(make_method(), NaNAfter(bad_from=1), TrainConfig(**CFG), tmp_path)
    saved = torch.load(tmp_path / "checkpoint.pth", weights_only=False)
    assert saved["epoch"] == 1 and saved["step"] == 3
    assert all(torch.isfinite(v).all() for v in saved["model"].values())


def test_scheduler_reproduces_mae_formula():
    cfg = TrainConfig(
        epochs=10, batch_size=8, blr=1.5e-4, warmup_epochs=2, min_lr=1e-6, accum_iter=4
    )
    base = effective_lr(cfg, world_size=2)
    assert base == pytest.approx(1.5e-4 * 8 * 4 * 2 / 256)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=base)
    steps_per_epoch = 7
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    for step in range(0, 70, 3):
        scheduler.step_update(step)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(
            mae_lr(step, cfg, steps_per_epoch, base), rel=1e-9, abs=1e-12
        )
    assert mae_lr(14, cfg, steps_per_epoch, base) == pytest.approx(base)  # end of warmup
    assert mae_lr(70, cfg, steps_per_epoch, base) == pytest.approx(cfg.min_lr)
    assert math.isclose(mae_lr(0, cfg, steps_per_epoch, base), 0.0)


def test_no_weight_decay_on_biases_and_norms(tmp_path):
    from cgdmae.pretrain.distributed import init_distributed
    from cgdmae.pretrain.engine import _optimizer

    method = make_method()
    optimizer = _optimizer(method, TrainConfig(**CFG), 1e-3, init_distributed("cpu"))
    names = {id(p): n for n, p in method.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            one_d = p.ndim <= 1
            assert (group["weight_decay"] == 0) == one_d, names[id(p)]
    assert all(
        id(p) != id(method.model.pos_embed) for g in optimizer.param_groups for p in g["params"]
    )
    assert optimizer.defaults["betas"] == (0.9, 0.95)


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from test_engine import ImageSet, make_method, CFG
    from cgdmae.pretrain.engine import EXIT_PREEMPTED, Preempted, TrainConfig, train

    class Slow(ImageSet):
        def __getitem__(self, index):
            time.sleep(0.05)
            return super().__getitem__(index)

    try:
        train(make_method(), Slow(), TrainConfig(**{{**CFG, "epochs": 20}}), {out!r})
    except Preempted:
        sys.exit(EXIT_PREEMPTED)
    """
)


def test_sigterm_saves_a_checkpoint_and_exits_75(tmp_path):
    out = tmp_path / "run"
    script = SIGTERM_SCRIPT.format(tests=str(ROOT / "tests"), out=str(out))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    while not (out / "log.csv").exists() and time.time() < deadline:  # after the first epoch
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_PREEMPTED, stderr[-2000:]
    saved = torch.load(out / "checkpoint.pth", weights_only=False)
    assert saved["step"] >= 3
