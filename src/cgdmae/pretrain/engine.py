"""The pre-training loop shared by every method: MAE's recipe, resumable and preemption-safe.

Recipe (facebookresearch/mae ``main_pretrain.py``): AdamW (0.9, 0.95) without decay on biases
and norms, lr = blr × effective batch / 256, per-step linear warmup then half-cycle cosine
(timm's scheduler), gradient accumulation; bf16 autocast and fused AdamW on CUDA.

Resume is exact: the sample order is a function of (seed, epoch), datasets derive their
augmentation from (seed, epoch, index), and the RNG state is checkpointed, so an interrupted
then resumed CPU run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from cgdmae.models import atomic_save, save_encoder
from cgdmae.pretrain.checkpoint import config_differences, rng_state, seed_everything, set_rng_state
from cgdmae.pretrain.distributed import DistEnv, any_rank, init_distributed, mean_over_ranks
from cgdmae.pretrain.methods.base import PretrainMethod

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again", which is what a retry after SIGTERM does
CHECKPOINT = "checkpoint.pth"
ENCODER = "encoder.pth"
LOG_CSV = "log.csv"


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint was written and the job should be retried to resume."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched."""


class ResumeMismatchError(RuntimeError):
    """A checkpoint exists in the output directory but was written under another config."""


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    blr: float = 1.5e-4
    lr: float | None = None
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    weight_decay: float = 0.05
    accum_iter: int = 1
    betas: tuple[float, float] = (0.9, 0.95)
    save_every: int = 20
    seed: int = 0
    num_workers: int = 0
    compile: bool = False
    precision: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    clip_grad: float | None = None
    device: str = "auto"


@dataclass
class TrainResult:
    epochs_run: int
    steps: int
    final_loss: float | None
    out_dir: Path


class EpochSampler(Sampler[int]):
    """This rank's share of a (seed, epoch)-seeded permutation, whole batches, from a batch on."""

    def __init__(self, n: int, batch_size: int, env: DistEnv, seed: int):
        self.n, self.batch_size, self.env, self.seed = n, batch_size, env, seed
        self.epoch, self.skip_batches = 0, 0

    def batches_per_epoch(self) -> int:
        return (self.n // self.env.world_size) // self.batch_size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=generator)[self.env.rank :: self.env.world_size]
        order = order[: self.batches_per_epoch() * self.batch_size]
        return iter(order[self.skip_batches * self.batch_size :].tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch() - self.skip_batches) * self.batch_size


class _SigtermFlag:
    """Records SIGTERM instead of dying, so the loop can checkpoint at the next step."""

    def __init__(self) -> None:
        self.raised = False
        self.previous = None

    def __enter__(self) -> _SigtermFlag:
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = None
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("SIGTERM received: checkpointing at the next step")
        self.raised = True

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def effective_lr(cfg: TrainConfig, world_size: int) -> float:
    if cfg.lr is not None:
        return cfg.lr
    return cfg.blr * cfg.batch_size * cfg.accum_iter * world_size / 256


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> CosineLRScheduler:
    """Per-step linear warmup from 0, then half-cycle cosine to min_lr (MAE's schedule)."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total - warmup),
        lr_min=cfg.min_lr,
        warmup_t=warmup,
        warmup_lr_init=0.0,
        warmup_prefix=True,
        cycle_limit=1,
        t_in_epochs=False,
    )


def mae_lr(step: int, cfg: TrainConfig, steps_per_epoch: int, base_lr: float) -> float:
    """MAE's ``adjust_learning_rate`` in fractional epochs, the reference for the scheduler."""
    epoch = step / steps_per_epoch
    if epoch < cfg.warmup_epochs:
        return base_lr * epoch / cfg.warmup_epochs
    progress = (epoch - cfg.warmup_epochs) / (cfg.epochs - cfg.warmup_epochs)
    return cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _autocast(env: DistEnv, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and env.device.type == "cuda")
    return torch.autocast(device_type=env.device.type, dtype=torch.bfloat16, enabled=use_bf16)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
    }


def _method_state(method: PretrainMethod) -> dict[str, torch.Tensor]:
    """Everything but the MAE model (saved as 'model') and frozen weights that come from elsewhere."""
    skip = ("model.", *method.frozen_prefixes)
    return {k: v for k, v in method.state_dict().items() if not k.startswith(skip)}


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    fd, tmp = tempfile.mkstemp(prefix=".log.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns or ["epoch"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _optimizer(
    method: PretrainMethod, cfg: TrainConfig, lr: float, env: DistEnv
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; frozen teachers must have ``requires_grad=False``."""
    for name, param in method.named_parameters():
        if name.startswith(method.frozen_prefixes) and param.requires_grad:
            raise ValueError(f"{name} is under a frozen prefix but requires grad")
    # timm's helper skips frozen params and exempts biases and 1-D params (norms) from decay
    groups = param_groups_weight_decay(method, cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, fused=env.device.type == "cuda")


def _load_method_state(method: PretrainMethod, saved: dict[str, torch.Tensor], path: Path) -> None:
    expected = set(_method_state(method))
    if set(saved) != expected:
        raise ResumeMismatchError(
            f"{path} holds method state {sorted(saved)} but {method.name} expects {sorted(expected)}"
        )
    method.load_state_dict(saved, strict=False)


def train(
    method: PretrainMethod,
    dataset: Dataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    config_snapshot: dict[str, Any] | None = None,
    stop_after_steps: int | None = None,
) -> TrainResult:
    """Train ``method`` on ``dataset`` into ``out_dir`` (checkpoint.pth, log.csv, encoder.pth).

    Resumes from ``out_dir/checkpoint.pth`` when present. ``stop_after_steps`` simulates a
    preemption after that many optimizer steps (used by tests and the benchmark).
    """
    out_dir = Path(out_dir)
    env = init_distributed(cfg.device)
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed + env.rank)
    method.to(env.device)
    sampler = EpochSampler(len(dataset), cfg.batch_size, env, cfg.seed)
    steps_per_epoch = sampler.batches_per_epoch() // cfg.accum_iter
    if cfg.epochs > 0 and steps_per_epoch == 0:
        raise ValueError(
            f"pre-training needs at least batch_size × accum_iter × GPUs = "
            f"{cfg.batch_size * cfg.accum_iter * env.world_size} images, the dataset has {len(dataset)}"
        )
    base_lr = effective_lr(cfg, env.world_size)
    optimizer = _optimizer(method, cfg, base_lr, env)
    scheduler = make_scheduler(optimizer, cfg, max(1, steps_per_epoch))
    state = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "log_rows": [], "epoch_sums": {}}

    checkpoint_path = out_dir / CHECKPOINT
    if checkpoint_path.exists():
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        diffs = config_differences(saved.get("config"), config_snapshot)
        if diffs:
            raise ResumeMismatchError(
                f"{checkpoint_path} was written with a different config (changed: {', '.join(diffs)}); "
                "move it away to start over"
            )
        method.model.load_state_dict(saved["model"])
        _load_method_state(method, saved["method"], checkpoint_path)
        optimizer.load_state_dict(saved["optimizer"])
        state = {k: saved[k] for k in state}
        set_rng_state(saved["rng"])
        log.info(
            "resumed from %s at epoch %d, step %d", checkpoint_path, state["epoch"], state["step"]
        )

    model_for_step: torch.nn.Module = method
    if env.distributed:
        device_ids = [env.local_rank] if env.device.type == "cuda" else None
        model_for_step = torch.nn.parallel.DistributedDataParallel(method, device_ids=device_ids)
    if cfg.compile:
        model_for_step = torch.compile(model_for_step)

    def save(epoch: int, batch_in_epoch: int) -> None:
        if not env.is_main:
            return
        atomic_save(
            {
                "model": method.model.state_dict(),
                "method": _method_state(method),
                "optimizer": optimizer.state_dict(),
                "scaler": None,  # bf16 autocast needs no loss scaling
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "step": state["step"],
                "log_rows": state["log_rows"],
                "epoch_sums": state["epoch_sums"],
                "rng": rng_state(),
                "config": config_snapshot,
                "train_config": asdict(cfg),
            },
            checkpoint_path,
        )

    final_loss = None
    with _SigtermFlag() as sigterm:
        for epoch in range(state["epoch"], cfg.epochs):
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            sampler.epoch, sampler.skip_batches = epoch, state["batch_in_epoch"]
            loader = DataLoader(
                dataset,
                batch_size=cfg.batch_size,
                sampler=sampler,
                num_workers=cfg.num_workers,
                pin_memory=env.device.type == "cuda",
                drop_last=True,
                persistent_workers=False,
                # its own generator: the global RNG (masking noise) must not see the loader
                generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch),
            )
            sums: dict[str, float] = dict(state["epoch_sums"]) if state["batch_in_epoch"] else {}
            started, images = time.perf_counter(), 0
            bar = tqdm(
                loader,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                disable=None if env.is_main else True,
                leave=False,
            )
            model_for_step.train()
            batch_index = state["batch_in_epoch"]
            for batch in bar:
                batch = _to_device(batch, env.device)
                last_micro = (batch_index + 1) % cfg.accum_iter == 0
                sync_context = (
                    model_for_step.no_sync()
                    if env.distributed and not last_micro
                    else nullcontext()
                )
                with sync_context, _autocast(env, cfg.precision):
                    terms = model_for_step(batch)
                loss = terms["loss"]
                if not torch.isfinite(loss):
                    values = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
                    raise NonFiniteLossError(
                        f"non-finite loss at epoch {epoch}, step {state['step']} ({values}); "
                        f"stopping with the last good checkpoint {checkpoint_path} untouched"
                    )
                with sync_context:
                    (loss / cfg.accum_iter).backward()
                batch_index += 1
                images += batch["image"].shape[0] * env.world_size
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(mean_over_ranks(v.detach().float(), env))
                sums["_batches"] = sums.get("_batches", 0.0) + 1
                if last_micro:
                    if cfg.clip_grad:
                        torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.clip_grad)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    state["step"] += 1
                    scheduler.step_update(state["step"])
                    method.on_step_end(state["step"], cfg.epochs * steps_per_epoch)
                    rate = images / max(time.perf_counter() - started, 1e-9)
                    bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{rate:.0f}")
                    stop = sigterm.raised or (
                        stop_after_steps is not None and state["step"] >= stop_after_steps
                    )
                    if any_rank(stop, env):
                        state["epoch_sums"] = sums
                        save(epoch, batch_index)
                        raise Preempted(
                            f"preempted at epoch {epoch}, step {state['step']}; checkpoint {checkpoint_path}"
                        )
            seconds = time.perf_counter() - started
            n = max(sums.pop("_batches", 1.0), 1.0)
            row = {"epoch": epoch + 1, "step": state["step"]}
            row.update({k: v / n for k, v in sums.items()})
            row.update(
                {
                    "lr": optimizer.param_groups[0]["lr"],
                    "img_per_s": images / max(seconds, 1e-9),
                    "seconds": seconds,
                }
            )
            final_loss = row.get("loss")
            state["log_rows"].append(row)
            state.update(epoch=epoch + 1, batch_in_epoch=0, epoch_sums={})
            log.info(
                "epoch %d/%d: %s",
                epoch + 1,
                cfg.epochs,
                ", ".join(f"{k}={v:.4g}" for k, v in row.items()),
            )
            if env.is_main:
                _write_log(out_dir / LOG_CSV, state["log_rows"])
            if (epoch + 1) % cfg.save_every == 0 or epoch + 1 == cfg.epochs:
                save(epoch + 1, 0)
    if env.is_main:
        if cfg.epochs == 0 or not checkpoint_path.exists():
            save(cfg.epochs, 0)
        if not (out_dir / LOG_CSV).exists():
            _write_log(out_dir / LOG_CSV, state["log_rows"])
        save_encoder(method.encoder_state_dict(), out_dir / ENCODER)
    return TrainResult(state["epoch"], state["step"], final_loss, out_dir)


def bench_step(
    method: PretrainMethod,
    batch: dict[str, Any],
    *,
    steps: int = 20,
    warmup: int = 5,
    precision: str = "auto",
    compile: bool = False,
) -> dict[str, float]:
    """Training-step throughput on a fixed batch: img/s and ms per step (CUDA-synchronised)."""
    env = init_distributed()
    method.to(env.device).train()
    step_fn: torch.nn.Module = torch.compile(method) if compile else method
    optimizer = _optimizer(method, TrainConfig(epochs=1, batch_size=1), 1e-4, env)
    batch = _to_device(batch, env.device)

    def one_step() -> None:
        with _autocast(env, precision):
            loss = step_fn(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        one_step()
    if env.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    if env.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    n = batch["image"].shape[0]
    return {"img_per_s": n * steps / elapsed, "step_ms": 1000 * elapsed / steps}
