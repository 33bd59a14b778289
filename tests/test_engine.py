"""The training engine: exact resume, SIGTERM and crash recovery, NaN stop, MAE's recipe, DDP."""

import csv
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from cgdmae.pretrain.methods.base import PretrainMethod
from cgdmae.training.checkpoint import CheckpointError, drop_optimizer_state, load_checkpoint
from cgdmae.training.distributed import DistEnv, EpochShardSampler
from cgdmae.training.engine import (
    EXIT_PREEMPTED,
    NonFiniteLossError,
    Preempted,
    ResumeMismatchError,
    TrainConfig,
    bench_step,
    build_optimizer,
    make_scheduler,
    peak_lr,
    scheduled_weight_decay,
    train,
)

TESTS = Path(__file__).resolve().parent
DIM, HIDDEN = 12, 8
# 16 samples, 2 per micro-batch, 2 micro-batches per step: 4 optimizer steps per epoch
CFG = dict(epochs=4, batch_size=2, accum_iter=2, blr=0.64, min_lr=1e-3, warmup_epochs=1.5, seed=3)
TIMING = ("img_per_s", "seconds")


class TinyMAE(nn.Module):
    """MAE-shaped: encoder keys (patch_embed, norm) and decoder keys (decoder_*)."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Linear(DIM, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN)
        self.decoder_pred = nn.Linear(HIDDEN, DIM)


class TinyMethod(PretrainMethod):
    """Masked linear autoencoder plus a distilled head, an EMA buffer and a frozen teacher."""

    frozen_prefixes = ("teacher.",)

    def __init__(self, init_seed: int = 0, mask_ratio: float = 0.5) -> None:
        super().__init__()
        torch.manual_seed(init_seed)
        self.model = TinyMAE()
        self.head = nn.Linear(HIDDEN, 4)
        self.register_buffer("ema", torch.zeros(HIDDEN, DIM))
        # the teacher comes from a file in real runs: the same whatever the student's init
        self.teacher = nn.Linear(DIM, 4).requires_grad_(False)
        self.teacher.weight.data = torch.linspace(-1, 1, 4 * DIM).reshape(4, DIM)
        self.teacher.bias.data.zero_()
        self.mask_ratio = mask_ratio

    def forward(self, batch):
        x = batch["image"]
        keep = (torch.rand(x.shape, device=x.device) >= self.mask_ratio).to(x.dtype)
        latent = self.model.norm(self.model.patch_embed(x * keep))
        rec = (self.model.decoder_pred(latent) - x).pow(2).mean()
        distill = (self.head(latent) - self.teacher(x)).pow(2).mean()
        return {"loss": rec + 0.5 * distill, "rec": rec.detach(), "distill": distill.detach()}

    def on_step_end(self, step, total_steps):
        self.ema.mul_(0.5).add_(self.model.patch_embed.weight.detach(), alpha=0.5)

    def encoder_state_dict(self):
        return {k: v.clone() for k, v in self.model.state_dict().items() if "decoder" not in k}


class Vectors(torch.utils.data.Dataset):
    """Fixed vectors plus 'augmentation' noise derived from (epoch, index), like the real sets.

    ``signal_at=(epoch, call)`` sends this process SIGTERM at that ``__getitem__`` call of that
    epoch; ``fail_at`` raises instead (a crash); ``nan_from`` returns NaN from that epoch on.
    """

    def __init__(self, n=17, signal_at=None, fail_at=None, nan_from=None, delay=0.0):
        self.data = torch.randn(n, DIM, generator=torch.Generator().manual_seed(0))
        self.signal_at, self.fail_at, self.nan_from, self.delay = (
            signal_at,
            fail_at,
            nan_from,
            delay,
        )
        self.epoch, self.calls = 0, 0

    def __len__(self):
        return len(self.data)

    def set_epoch(self, epoch):
        self.epoch, self.calls = epoch, 0

    def __getitem__(self, index):
        self.calls += 1
        time.sleep(self.delay)
        if (self.epoch, self.calls) == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        if (self.epoch, self.calls) == self.fail_at:
            raise RuntimeError("simulated crash")
        noise = torch.randn(DIM, generator=torch.Generator().manual_seed(1000 * self.epoch + index))
        image = self.data[index] + 0.1 * noise
        if self.nan_from is not None and self.epoch >= self.nan_from:
            image = image * float("nan")
        return {"image": image, "index": index}


def read_log(out: Path) -> list[dict[str, str]]:
    with open(out / "log.csv") as f:
        return list(csv.DictReader(f))


def without_timing(rows):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def assert_same_result(a: Path, b: Path) -> None:
    """Bit-identical model, method state, optimizer moments, encoder and logged values."""
    ca, cb = load_checkpoint(a / "checkpoint.pth"), load_checkpoint(b / "checkpoint.pth")
    for part in ("model", "method"):
        assert ca[part].keys() == cb[part].keys()
        for k in ca[part]:
            assert torch.equal(ca[part][k], cb[part][k]), (part, k)
    for sa, sb in zip(
        ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(
            sa["exp_avg_sq"], sb["exp_avg_sq"]
        )
    assert (ca["epoch"], ca["step"], ca["samples_seen"]) == (
        cb["epoch"],
        cb["step"],
        cb["samples_seen"],
    )
    ea = torch.load(a / "encoder.pth", weights_only=True)["model"]
    eb = torch.load(b / "encoder.pth", weights_only=True)["model"]
    assert all(torch.equal(ea[k], eb[k]) for k in ea) and ea.keys() == eb.keys()
    assert without_timing(read_log(a)) == without_timing(read_log(b))


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted reference run."""
    out = tmp_path_factory.mktemp("straight")
    train(TinyMethod(), Vectors(), TrainConfig(**CFG), out, config_snapshot={"mask_ratio": 0.5})
    return out


@pytest.mark.parametrize(
    "signal_at, saved_epoch, saved_batch, saved_step",
    [
        ((1, 5), 1, 4, 6),  # mid-epoch, inside the second step's first micro-batch
        ((2, 4), 2, 2, 9),  # mid-epoch, in a step's last micro-batch
        ((0, 15), 1, 0, 4),  # during the epoch's last step: checkpoint at the epoch boundary
    ],
)
def test_sigterm_then_resume_is_bit_identical(
    straight, tmp_path, signal_at, saved_epoch, saved_batch, saved_step
):
    snapshot = {"mask_ratio": 0.5}
    with pytest.raises(Preempted, match="SIGTERM: checkpointed"):
        train(
            TinyMethod(),
            Vectors(signal_at=signal_at),
            TrainConfig(**CFG),
            tmp_path,
            config_snapshot=snapshot,
        )
    saved = load_checkpoint(tmp_path / "checkpoint.pth")
    assert (saved["epoch"], saved["batch_in_epoch"], saved["step"]) == (
        saved_epoch,
        saved_batch,
        saved_step,
    )
    assert saved["samples_seen"] == saved_step * 4
    assert not (tmp_path / "encoder.pth").exists()
    # a retried job rebuilds the method with whatever init: the resume must overwrite it all
    result = train(
        TinyMethod(init_seed=99), Vectors(), TrainConfig(**CFG), tmp_path, config_snapshot=snapshot
    )
    assert (result.epochs_run, result.steps) == (4, 16)
    assert_same_result(straight, tmp_path)


def test_crash_resumes_from_the_last_checkpoint_without_duplicate_log_rows(straight, tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(
            TinyMethod(), Vectors(fail_at=(3, 6)), TrainConfig(**{**CFG, "save_every": 2}), tmp_path
        )
    assert [r["epoch"] for r in read_log(tmp_path)] == ["1", "2", "3"]
    assert load_checkpoint(tmp_path / "checkpoint.pth")["epoch"] == 2
    # save_every and num_workers may change on resume: they do not change the result
    train(
        TinyMethod(), Vectors(), TrainConfig(**{**CFG, "save_every": 1, "num_workers": 1}), tmp_path
    )
    assert [r["epoch"] for r in read_log(tmp_path)] == ["1", "2", "3", "4"]
    assert_same_result(straight, tmp_path)


SIGTERM_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_engine import CFG, TinyMethod, Vectors
from cgdmae.training.engine import EXIT_PREEMPTED, Preempted, TrainConfig, train

try:
    train(TinyMethod(), Vectors(delay=0.05), TrainConfig(**CFG), {out!r})
except Preempted:
    sys.exit(EXIT_PREEMPTED)
"""


def test_external_sigterm_exits_75_and_the_resume_is_bit_identical(straight, tmp_path):
    script = SIGTERM_SCRIPT.format(tests=str(TESTS), out=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "log.csv").exists() and time.time() < deadline:  # epoch 1 is done
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_PREEMPTED, stderr[-2000:]
    assert "SIGTERM received" in stderr
    assert 4 <= load_checkpoint(tmp_path / "checkpoint.pth")["step"] < 16
    train(TinyMethod(), Vectors(), TrainConfig(**CFG), tmp_path)
    assert_same_result(straight, tmp_path)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(**{**CFG, "save_every": 1})
    with pytest.raises(
        NonFiniteLossError,
        match=r"non-finite loss at epoch 2, step 5 \(micro-batch 1 of the epoch\): loss=nan, rec=nan, distill=nan",
    ):
        train(TinyMethod(), Vectors(nan_from=1), cfg, tmp_path)
    saved = load_checkpoint(tmp_path / "checkpoint.pth")
    assert (saved["epoch"], saved["step"]) == (1, 4)
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    assert not (tmp_path / "encoder.pth").exists()
    assert len(read_log(tmp_path)) == 1


def test_resume_refuses_another_configuration(straight, tmp_path):
    shutil.copytree(straight, tmp_path, dirs_exist_ok=True)

    def resume(cfg, snapshot):
        train(TinyMethod(), Vectors(), TrainConfig(**cfg), tmp_path, config_snapshot=snapshot)

    with pytest.raises(ResumeMismatchError, match=r"configuration \(epochs: 4 -> 5\)"):
        resume({**CFG, "epochs": 5}, {"mask_ratio": 0.5})
    with pytest.raises(ResumeMismatchError, match=r"batch_size: 2 -> 4"):
        resume({**CFG, "batch_size": 4}, {"mask_ratio": 0.5})
    with pytest.raises(ResumeMismatchError, match=r"mask_ratio: 0.5 -> 0.75"):
        resume(CFG, {"mask_ratio": 0.75})


def test_outputs_checkpoint_layout_and_log(straight):
    assert sorted(p.name for p in straight.iterdir()) == [
        "checkpoint.pth",
        "encoder.pth",
        "log.csv",
    ]
    saved = load_checkpoint(straight / "checkpoint.pth")
    assert set(saved["model"]) == set(TinyMethod().model.state_dict())
    assert set(saved["method"]) == {"head.weight", "head.bias", "ema"}  # no model., no teacher.
    assert set(saved["rng"]) == {"python", "numpy", "torch", "cuda"} and saved["scaler"] is None
    assert saved["config"] == {"mask_ratio": 0.5} and saved["train_config"]["world_size"] == 1
    encoder = torch.load(straight / "encoder.pth", weights_only=True)["model"]
    assert set(encoder) == {"patch_embed.weight", "patch_embed.bias", "norm.weight", "norm.bias"}

    rows = read_log(straight)
    assert list(rows[0]) == [
        "epoch",
        "step",
        "loss",
        "rec",
        "distill",
        "lr",
        "img_per_s",
        "seconds",
    ]
    assert [int(r["step"]) for r in rows] == [4, 8, 12, 16]
    for row in rows:
        assert float(row["loss"]) == pytest.approx(float(row["rec"]) + 0.5 * float(row["distill"]))
    # the logged lr is the epoch's mean of MAE's per-step schedule
    base = 0.64 * 2 * 2 / 256
    for epoch, row in enumerate(rows):
        steps = range(4 * epoch, 4 * epoch + 4)
        expected = sum(mae_lr(s / 4, base, 1e-3, 1.5, 4) for s in steps) / 4
        assert float(row["lr"]) == pytest.approx(expected, rel=1e-12)


def test_zero_epochs_exports_the_initialisation(tmp_path):
    method = TinyMethod()
    init = method.encoder_state_dict()
    result = train(method, Vectors(), TrainConfig(**{**CFG, "epochs": 0}), tmp_path)
    assert (result.epochs_run, result.steps, result.final_loss) == (0, 0, None)
    encoder = torch.load(tmp_path / "encoder.pth", weights_only=True)["model"]
    assert all(torch.equal(encoder[k], init[k]) for k in init)
    assert (tmp_path / "log.csv").read_text() == "epoch,step\n"
    assert load_checkpoint(tmp_path / "checkpoint.pth")["epoch"] == 0


def test_bad_sizes_and_settings_are_named(tmp_path):
    with pytest.raises(
        ValueError, match=r"batch_size × accum_iter × processes = 4 images, the dataset has 3"
    ):
        train(TinyMethod(), Vectors(n=3), TrainConfig(**CFG), tmp_path)
    with pytest.raises(ValueError, match=r"TrainConfig.precision must be one of auto, bf16, fp32"):
        TrainConfig(**{**CFG, "precision": "fp16"})
    with pytest.raises(ValueError, match=r"TrainConfig.accum_iter must be >= 1"):
        TrainConfig(**{**CFG, "accum_iter": 0})


def mae_lr(epoch: float, lr: float, min_lr: float, warmup_epochs: float, epochs: int) -> float:
    """facebookresearch/mae ``util/lr_sched.adjust_learning_rate``, written out independently."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    progress = (epoch - warmup_epochs) / (epochs - warmup_epochs)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@pytest.mark.parametrize("warmup_epochs", [0, 2, 1.5, 10])
def test_scheduler_reproduces_mae_formula(warmup_epochs):
    cfg = TrainConfig(
        epochs=10, batch_size=8, accum_iter=4, warmup_epochs=warmup_epochs, min_lr=1e-6
    )
    base = peak_lr(cfg, world_size=2)
    assert base == pytest.approx(1.5e-4 * 8 * 4 * 2 / 256)
    assert peak_lr(TrainConfig(epochs=1, batch_size=8, lr=3e-4), world_size=2) == 3e-4
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=base)
    steps_per_epoch = 7
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    for step in range(10 * steps_per_epoch):
        if step:
            scheduler.step_update(step)
        expected = mae_lr(step / steps_per_epoch, base, 1e-6, warmup_epochs, 10)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12, abs=1e-15)


def dino_weight_decay(base: float, final: float, total_steps: int) -> list[float]:
    """DINO's ``utils.cosine_scheduler`` without warm-up, written out independently."""
    return [
        final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / total_steps))
        for i in range(total_steps)
    ]


def test_weight_decay_schedule_follows_dino_and_resumes_exactly(tmp_path):
    cfg = {**CFG, "weight_decay": 0.04, "weight_decay_end": 0.4}
    expected = dino_weight_decay(0.04, 0.4, 16)
    got = [scheduled_weight_decay(TrainConfig(**cfg), s, 16) for s in range(16)]
    assert got == pytest.approx(expected, rel=1e-12)
    assert scheduled_weight_decay(TrainConfig(**CFG), 7, 16) == 0.05  # no end: constant

    straight = tmp_path / "straight"
    train(TinyMethod(), Vectors(), TrainConfig(**cfg), straight)
    rows = read_log(straight)
    for epoch, row in enumerate(rows):  # the epoch's mean of the per-step values
        mean = sum(expected[4 * epoch : 4 * epoch + 4]) / 4
        assert float(row["weight_decay"]) == pytest.approx(mean, rel=1e-12)
    groups = load_checkpoint(straight / "checkpoint.pth")["optimizer"]["param_groups"]
    # after the last step the decayed groups sit at the end value; biases and norms stay at 0
    assert sorted(g["weight_decay"] for g in groups) == pytest.approx([0.0, 0.4])

    constant = tmp_path / "constant"
    train(TinyMethod(), Vectors(), TrainConfig(**{**cfg, "weight_decay_end": None}), constant)
    weights = [load_checkpoint(p / "checkpoint.pth")["model"] for p in (straight, constant)]
    # the schedule reaches the optimizer update
    assert not torch.equal(weights[0]["patch_embed.weight"], weights[1]["patch_embed.weight"])

    resumed = tmp_path / "resumed"
    with pytest.raises(Preempted):
        train(TinyMethod(), Vectors(signal_at=(2, 4)), TrainConfig(**cfg), resumed)
    train(TinyMethod(init_seed=99), Vectors(), TrainConfig(**cfg), resumed)
    assert_same_result(straight, resumed)

    with pytest.raises(ValueError, match=r"weight_decay_end needs weight_decay > 0"):
        TrainConfig(**{**cfg, "weight_decay": 0.0})


def test_optimizer_groups_follow_mae(tmp_path):
    method = TinyMethod()
    optimizer = build_optimizer(method, TrainConfig(**CFG), 1e-3, torch.device("cpu"))
    names = {id(p): n for n, p in method.named_parameters()}
    grouped = {names[id(p)]: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert grouped == {
        "model.patch_embed.weight": 0.05,
        "model.decoder_pred.weight": 0.05,
        "head.weight": 0.05,
        "model.patch_embed.bias": 0.0,
        "model.norm.weight": 0.0,
        "model.norm.bias": 0.0,
        "model.decoder_pred.bias": 0.0,
        "head.bias": 0.0,
    }
    assert optimizer.defaults["betas"] == (0.9, 0.95)
    method.teacher.weight.requires_grad_(True)
    with pytest.raises(ValueError, match=r"TinyMethod.teacher.weight is under a frozen prefix"):
        build_optimizer(method, TrainConfig(**CFG), 1e-3, torch.device("cpu"))


def test_sampler_shards_by_rank_and_skips_seen_batches():
    def indices(rank, world_size, skip=0, epoch=1):
        env = DistEnv(rank, world_size, rank, torch.device("cpu"))
        sampler = EpochShardSampler(21, batch_size=2, accum_iter=2, env=env, seed=3)
        sampler.set_epoch(epoch, skip_batches=skip)
        assert len(sampler) == len(list(sampler))
        return list(sampler)

    single = indices(0, 1)
    assert len(single) == 20 and len(set(single)) == 20  # 5 whole steps of 4
    ranks = [indices(r, 2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 8 and not set(ranks[0]) & set(ranks[1])
    assert indices(0, 1, skip=3) == single[6:]
    assert indices(0, 1) == single and indices(0, 1, epoch=2) != single


def test_bench_step_trains_and_times():
    method = TinyMethod()
    before = method.model.patch_embed.weight.clone()
    timing = bench_step(method, {"image": torch.randn(6, DIM)}, steps=3, warmup=1, precision="fp32")
    assert not torch.equal(before, method.model.patch_embed.weight)
    assert timing["img_per_s"] == pytest.approx(6 * 1000 / timing["step_ms"])


DDP_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_engine import CFG, TinyMethod, Vectors
from cgdmae.training.engine import TrainConfig, train

train(TinyMethod(mask_ratio=0.0), Vectors(n=16), TrainConfig(**{{**CFG, "epochs": 2}}), {out!r})
"""


def test_two_rank_ddp_matches_one_process_with_the_same_effective_batch(tmp_path):
    """2 ranks × batch 2 take the same steps as 1 process × batch 4 (gloo, no_sync, accum)."""
    script = tmp_path / "ddp.py"
    script.write_text(
        textwrap.dedent(DDP_SCRIPT.format(tests=str(TESTS), out=str(tmp_path / "ddp")))
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = tmp_path / "single"
    cfg = TrainConfig(**{**CFG, "epochs": 2, "batch_size": 4})
    train(TinyMethod(mask_ratio=0.0), Vectors(n=16), cfg, single)
    ddp, one = (
        load_checkpoint(tmp_path / "ddp" / "checkpoint.pth"),
        load_checkpoint(single / "checkpoint.pth"),
    )
    assert ddp["train_config"]["world_size"] == 2 and ddp["step"] == one["step"] == 4
    assert ddp["samples_seen"] == one["samples_seen"] == 32
    assert len(ddp["rng_ranks"]) == 2 and not torch.equal(
        ddp["rng_ranks"][0]["torch"], ddp["rng_ranks"][1]["torch"]
    )
    for k, v in one["model"].items():
        torch.testing.assert_close(ddp["model"][k], v, rtol=1e-5, atol=1e-6)
    assert float(read_log(tmp_path / "ddp")[-1]["loss"]) == pytest.approx(
        float(read_log(single)[-1]["loss"]), rel=1e-5
    )


def test_step_cap_stops_mid_epoch_and_matches_the_uncapped_run_up_to_there(straight, tmp_path):
    """A rehearsal's max_steps: 6 of 16 steps, the schedule still that of 4 epochs, so the
    capped run's first epoch and its first steps are the uncapped run's."""
    result = train(TinyMethod(), Vectors(), TrainConfig(**CFG, max_steps=6), tmp_path,
                   config_snapshot={"mask_ratio": 0.5})  # fmt: skip
    assert (result.steps, result.epochs_run) == (6, 1)  # one whole epoch and 2 steps of the next
    rows, reference = read_log(tmp_path), read_log(straight)
    assert [r["step"] for r in rows] == ["4", "6"]  # epoch 2 logged over its 2 steps
    assert without_timing(rows)[0] == without_timing(reference)[0]
    saved = load_checkpoint(tmp_path / "checkpoint.pth")
    assert (saved["step"], saved["epoch"], saved["batch_in_epoch"]) == (6, 1, 4) and (
        tmp_path / "encoder.pth"
    ).is_file()
    again = train(TinyMethod(), Vectors(), TrainConfig(**CFG, max_steps=6), tmp_path,
                  config_snapshot={"mask_ratio": 0.5})  # fmt: skip
    assert again.steps == 6 and len(read_log(tmp_path)) == 2  # a rerun trains no further
    # lifting the cap resumes the same run (a cap decides where it stops, not what it trains)
    train(
        TinyMethod(), Vectors(), TrainConfig(**CFG), tmp_path, config_snapshot={"mask_ratio": 0.5}
    )
    resumed, reference_state = (load_checkpoint(d / "checkpoint.pth") for d in (tmp_path, straight))
    assert resumed["step"] == reference_state["step"] == 16
    for k, v in reference_state["model"].items():
        assert torch.equal(resumed["model"][k], v), k


def test_a_finished_jobs_checkpoint_drops_the_optimizer_and_still_reexports(tmp_path):
    """What a pre-training job leaves: weights and progress without AdamW's moments (a third
    of the size, no previous checkpoint); its retry only re-exports, and continuing it is
    refused with the file named, not resumed with a fresh optimizer."""
    snapshot, capped = {"mask_ratio": 0.5}, TrainConfig(**{**CFG, "save_every": 1}, max_steps=6)
    train(TinyMethod(), Vectors(), capped, tmp_path, config_snapshot=snapshot)
    checkpoint = tmp_path / "checkpoint.pth"
    full = checkpoint.stat().st_size
    drop_optimizer_state(checkpoint)
    saved = load_checkpoint(checkpoint)
    assert saved["optimizer"] is None and saved["step"] == 6 and checkpoint.stat().st_size < full
    assert not (tmp_path / "checkpoint.prev.pth").exists()
    (tmp_path / "encoder.pth").unlink()
    again = train(TinyMethod(), Vectors(), capped, tmp_path, config_snapshot=snapshot)
    assert again.steps == 6 and (tmp_path / "encoder.pth").is_file()
    with pytest.raises(CheckpointError, match=r"checkpoint\.pth: holds no optimizer state"):
        train(TinyMethod(), Vectors(), TrainConfig(**CFG), tmp_path, config_snapshot=snapshot)


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(straight, tmp_path):
    """The last two checkpoints are kept while a run trains: an unreadable latest one is set
    aside and the run resumes from the one before, ending bit-identical to the straight run;
    the previous checkpoint is removed once the run is complete."""
    snapshot = {"mask_ratio": 0.5}
    capped = TrainConfig(**{**CFG, "save_every": 1}, max_steps=12)  # ends with epoch 3 of 4
    train(TinyMethod(), Vectors(), capped, tmp_path, config_snapshot=snapshot)
    latest, previous = tmp_path / "checkpoint.pth", tmp_path / "checkpoint.prev.pth"
    assert (load_checkpoint(latest)["epoch"], load_checkpoint(previous)["epoch"]) == (3, 2)
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated, as by a failed copy
    train(TinyMethod(), Vectors(), TrainConfig(**{**CFG, "save_every": 1}), tmp_path,
          config_snapshot=snapshot)  # fmt: skip
    done, reference = load_checkpoint(latest), load_checkpoint(straight / "checkpoint.pth")
    assert done["step"] == 16 and not previous.exists()
    assert len(list(tmp_path.glob("checkpoint.corrupt-*.pth"))) == 1
    for k, v in reference["model"].items():
        assert torch.equal(done["model"][k], v), k
