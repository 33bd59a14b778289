"""The pre-training loop shared by every method: MAE's recipe, resumable and preemption-safe.

Recipe (facebookresearch/mae ``main_pretrain.py`` and ``engine_pretrain.py``): AdamW with betas
(0.9, 0.95) and no weight decay on biases and 1-D parameters (timm's param groups);
lr = blr × effective batch / 256; per optimizer step, linear warmup then half-cycle cosine to
``min_lr`` (timm's ``CosineLRScheduler``, which matches MAE's ``adjust_learning_rate`` when
given the warmup and cosine lengths in fractional steps); gradient accumulation with DDP's
``no_sync`` on the micro-batches that do not step. bf16 autocast and fused AdamW on CUDA.

Resume is exact: the sample order is a function of (seed, epoch), datasets derive their
augmentation from (seed, epoch, index), the checkpoint holds each rank's RNG state and the
position within the epoch, so on CPU an interrupted then resumed run ends bit-identical to an
uninterrupted one.

Preemption: on SIGTERM the loop finishes the current optimizer step, writes a checkpoint and
raises :class:`Preempted`; the workflow script turns it into exit status ``EXIT_PREEMPTED``
(75, EX_TEMPFAIL) so the scheduler retries the job, which then resumes. torchrun gives its
workers 30 s after forwarding SIGTERM, so a step must take less than that.

Checkpoint ``epoch`` counts completed epochs (the 0-based epoch to continue with) and
``batch_in_epoch`` the micro-batches of that epoch already trained; ``log.csv`` numbers epochs
from 1.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import signal
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from cgdmae.files import atomic_write
from cgdmae.training.checkpoint import (
    CheckpointError,
    config_differences,
    load_resumable,
    previous_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from cgdmae.training.distributed import (
    EpochShardSampler,
    any_rank,
    barrier,
    gather_objects,
    init_distributed,
    mean_over_ranks,
)


class Trainable(Protocol):
    """What the engine drives, both sides alike: a pre-training method
    (``cgdmae.pretrain.methods``) or a fine-tuning task (``cgdmae.finetune.tasks``), each an
    ``nn.Module`` with these members.

    ``model`` holds what the checkpoint saves, minus the submodules named by
    ``frozen_prefixes`` (weights that come from elsewhere, such as a frozen teacher).
    ``forward(batch)`` returns scalar tensors, ``loss`` the one back-propagated and the others
    logged. ``exports_encoder`` says whether ``encoder_state_dict()`` is written as
    encoder.pth; a module with ``optimizer_groups(weight_decay, layer_decay)`` brings its own
    parameter groups.
    """

    model: nn.Module
    frozen_prefixes: tuple[str, ...]

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]: ...

    def on_step_end(self, step: int, total_steps: int) -> None: ...


log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again", which is what a retry after SIGTERM does
CHECKPOINT = "checkpoint.pth"
ENCODER = "encoder.pth"
LOG_CSV = "log.csv"
PRECISIONS = ("auto", "bf16", "fp32")
OPTIMIZERS = ("adamw", "sgd")
# settings a resumed run may change: they decide where or how fast it runs, or where it stops
FREE_ON_RESUME = ("save_every", "num_workers", "compile", "device", "max_steps")


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint was written and a retried job resumes from it."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched."""


class ResumeMismatchError(RuntimeError):
    """The output directory holds a checkpoint written under a different configuration."""


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int  # per GPU (per process)
    blr: float = 1.5e-4
    lr: float | None = None  # absolute lr; overrides blr when set
    max_lr: float | None = None  # cap on the scaled lr (PersonViT: 5e-4 × batch / 256, <= 0.002)
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    weight_decay: float = 0.05
    # DINO/iBOT: cosine from weight_decay to this over training, on decayed parameters only
    weight_decay_end: float | None = None
    accum_iter: int = 1
    betas: tuple[float, float] = (0.9, 0.95)
    save_every: int = 20
    seed: int = 0
    num_workers: int = 0
    compile: bool = False
    precision: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    clip_grad: float | None = None
    device: str = "auto"
    optimizer: str = "adamw"  # adamw (MAE, ViT fine-tuning) or sgd (BoT ReID recipes)
    momentum: float = 0.9  # sgd only
    layer_decay: float | None = None  # BEiT/MAE layer-wise lr decay (needs group_matcher)
    # a rehearsal's cap: stop after this many optimizer steps (the schedule still spans epochs)
    max_steps: int | None = None

    def __post_init__(self) -> None:
        minimums = {
            "epochs": 0,
            "num_workers": 0,
            "batch_size": 1,
            "accum_iter": 1,
            "save_every": 1,
        }
        if self.max_steps is not None:
            minimums["max_steps"] = 1
        for name, minimum in minimums.items():
            if getattr(self, name) < minimum:
                raise ValueError(
                    f"TrainConfig.{name} must be >= {minimum}, got {getattr(self, name)}"
                )
        if self.warmup_epochs < 0:
            raise ValueError(f"TrainConfig.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.max_lr is not None and self.max_lr <= 0:
            raise ValueError(f"TrainConfig.max_lr must be > 0, got {self.max_lr}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"TrainConfig.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"TrainConfig.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.weight_decay_end is not None and self.weight_decay <= 0:
            raise ValueError(
                "TrainConfig.weight_decay_end needs weight_decay > 0: the schedule applies to "
                f"the parameter groups that decay, got weight_decay={self.weight_decay}"
            )
        self.betas = tuple(self.betas)


@dataclass
class TrainResult:
    epochs_run: int
    steps: int
    final_loss: float | None
    out_dir: Path


@dataclass
class Progress:
    """Where training stands; saved in the checkpoint so a resume continues from there."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    samples_seen: int = 0
    # sums over the running epoch's micro-batches of each logged value (mean over ranks)
    epoch_sums: dict[str, float] = field(default_factory=dict)
    log_rows: list[dict[str, Any]] = field(default_factory=list)


def peak_lr(cfg: TrainConfig, world_size: int) -> float:
    """MAE's linear scaling rule: blr × effective batch / 256, at most ``max_lr`` when set,
    unless an absolute lr is given."""
    if cfg.lr is not None:
        return cfg.lr
    scaled = cfg.blr * cfg.batch_size * cfg.accum_iter * world_size / 256
    return scaled if cfg.max_lr is None else min(scaled, cfg.max_lr)


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> CosineLRScheduler:
    """MAE's schedule in optimizer steps; fractional lengths keep a fractional warmup exact."""
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_epochs * steps_per_epoch
    return CosineLRScheduler(
        optimizer,
        t_initial=max(total - warmup, 1),  # warmup >= epochs: the cosine is never reached
        lr_min=cfg.min_lr,
        warmup_t=warmup,
        warmup_lr_init=0.0,
        warmup_prefix=True,
        cycle_limit=1,
        t_in_epochs=False,
    )


def scheduled_weight_decay(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The weight decay for optimizer step ``step``: constant, or DINO's per-step cosine from
    ``weight_decay`` to ``weight_decay_end`` (no warm-up), which lets the late, small-lr phase
    regularise more."""
    if cfg.weight_decay_end is None or total_steps <= 0:
        return cfg.weight_decay
    done = min(step / total_steps, 1.0)
    span = cfg.weight_decay - cfg.weight_decay_end
    return cfg.weight_decay_end + 0.5 * span * (1 + math.cos(math.pi * done))


def set_weight_decay(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set the decay of the decayed groups; biases and norms (weight_decay 0) stay at 0.

    timm's schedulers set a field on every group, so they cannot schedule weight decay.
    """
    for group in optimizer.param_groups:
        if group["weight_decay"] > 0:
            group["weight_decay"] = value


def build_optimizer(
    method: Trainable, cfg: TrainConfig, lr: float, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW or SGD over trainable parameters; biases and 1-D parameters (norms) without decay.

    With ``layer_decay`` the groups come from timm's ``param_groups_layer_decay`` (the module
    must define ``group_matcher``); their ``lr_scale`` is applied by timm's scheduler. A method
    with ``optimizer_groups(weight_decay, layer_decay)`` supplies its own groups instead, and
    one with a ``nesterov`` attribute chooses SGD's Nesterov momentum (default on).
    """
    for name, param in method.named_parameters():
        if name.startswith(method.frozen_prefixes) and param.requires_grad:
            raise ValueError(
                f"{type(method).__name__}.{name} is under a frozen prefix but requires grad"
            )
    if hasattr(method, "optimizer_groups"):  # the method's own recipe (fine-tuning tasks)
        groups = method.optimizer_groups(cfg.weight_decay, cfg.layer_decay)
    elif cfg.layer_decay is not None:
        groups = param_groups_layer_decay(method, cfg.weight_decay, layer_decay=cfg.layer_decay)
    else:
        groups = param_groups_weight_decay(method, cfg.weight_decay)  # skips frozen params
    if cfg.optimizer == "sgd":
        nesterov = getattr(method, "nesterov", True)
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=nesterov)
    return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, fused=device.type == "cuda")


def _method_state(method: Trainable) -> dict[str, torch.Tensor]:
    """The method's own state: not the MAE (saved as 'model'), not frozen weights from elsewhere."""
    skip = ("model.", *method.frozen_prefixes)
    return {k: v for k, v in method.state_dict().items() if not k.startswith(skip)}


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
    }


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = ["epoch", "step"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))


class _SigtermFlag:
    """Records SIGTERM instead of dying, so the loop can checkpoint at the next step."""

    def __init__(self) -> None:
        self.raised = False
        self.previous: Any = None

    def __enter__(self) -> _SigtermFlag:
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: the caller handles signals
            self.previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM received: checkpointing after the current step")
        self.raised = True

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


class _EpochKeys(Sampler):
    """A sampler's indices as (epoch, index) keys, the epoch its ``set_epoch`` set: the dataset
    reads the epoch from the key, so workers that persist across epochs (and never see
    ``set_epoch``) draw the right views."""

    def __init__(self, sampler: EpochShardSampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.sampler.epoch
        return ((epoch, index) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class _Run:
    """One call of :func:`train`: the objects a step needs and the progress to checkpoint."""

    def __init__(
        self,
        method: Trainable,
        dataset: Dataset,
        cfg: TrainConfig,
        out_dir: Path,
        config_snapshot: dict[str, Any] | None,
        sampler: EpochShardSampler | None,
    ) -> None:
        self.env = init_distributed(cfg.device)
        self.method, self.dataset, self.cfg, self.out_dir = method, dataset, cfg, out_dir
        self.config_snapshot = config_snapshot
        self.checkpoint_path = out_dir / CHECKPOINT
        self.sampler = sampler or EpochShardSampler(
            len(dataset), cfg.batch_size, cfg.accum_iter, self.env, cfg.seed
        )
        if cfg.epochs > 0 and self.sampler.steps_per_epoch == 0:
            needed = cfg.batch_size * cfg.accum_iter * self.env.world_size
            raise ValueError(
                f"one optimizer step needs batch_size × accum_iter × processes = {needed} images, "
                f"the dataset has {len(dataset)}"
            )
        method.to(self.env.device)
        self.optimizer = build_optimizer(
            method, cfg, peak_lr(cfg, self.env.world_size), self.env.device
        )
        self.scheduler = make_scheduler(self.optimizer, cfg, self.sampler.steps_per_epoch)
        self.total_steps = cfg.epochs * self.sampler.steps_per_epoch
        self.progress = Progress()
        self._persistent_loader: DataLoader | None = None
        self.partial_row: dict[str, float] | None = None  # a mid-epoch step cap's log row
        seed_everything(cfg.seed + self.env.rank)  # distinct masking noise on each rank
        if self.checkpoint_path.exists() or previous_checkpoint(self.checkpoint_path).exists():
            self._resume()
        self.step_module: torch.nn.Module = method
        if self.env.distributed:
            cuda = self.env.device.type == "cuda"
            self.step_module = torch.nn.parallel.DistributedDataParallel(
                method, device_ids=[self.env.local_rank] if cuda else None
            )
        if cfg.compile:
            self.step_module = torch.compile(self.step_module)

    def _train_config(self) -> dict[str, Any]:
        return {**asdict(self.cfg), "world_size": self.env.world_size}

    def _resume(self) -> None:
        saved = load_resumable(self.checkpoint_path)  # None: it was unusable, set aside
        if saved is None:
            return

        def binding(train_config: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in train_config.items() if k not in FREE_ON_RESUME}

        diffs = config_differences(binding(saved["train_config"]), binding(self._train_config()))
        diffs += config_differences(saved["config"] or {}, self.config_snapshot or {})
        if diffs:
            raise ResumeMismatchError(
                f"{self.checkpoint_path} was written under another configuration "
                f"({'; '.join(diffs)}); restore that configuration, or move the checkpoint "
                "away to start over"
            )
        self.method.model.load_state_dict(saved["model"])
        expected = set(_method_state(self.method))
        if set(saved["method"]) != expected:
            raise ResumeMismatchError(
                f"{self.checkpoint_path}: 'method' holds {sorted(saved['method'])}, "
                f"{type(self.method).__name__} expects {sorted(expected)}"
            )
        self.method.load_state_dict(saved["method"], strict=False)
        self.progress = Progress(**{f.name: saved[f.name] for f in fields(Progress)})
        if saved["optimizer"] is not None:
            self.optimizer.load_state_dict(saved["optimizer"])
        elif self.progress.epoch < self.cfg.epochs and not self.capped:
            raise CheckpointError(
                f"{self.checkpoint_path}: holds no optimizer state (it was written at the end of "
                "a finished job) and cannot continue training; move it away to start over"
            )
        self.schedule(self.progress.step)
        set_rng_state(saved["rng_ranks"][self.env.rank])
        log.info(
            "resumed from %s: %d epoch(s) and %d micro-batch(es) done, step %d",
            self.checkpoint_path,
            self.progress.epoch,
            self.progress.batch_in_epoch,
            self.progress.step,
        )

    def schedule(self, step: int) -> None:
        """Set the learning rate and weight decay of optimizer step ``step``."""
        self.scheduler.step_update(step)
        set_weight_decay(self.optimizer, scheduled_weight_decay(self.cfg, step, self.total_steps))

    def save(self) -> None:
        """Checkpoint the current progress (a collective: every rank calls it, rank 0 writes)."""
        rng_ranks = gather_objects(rng_state(), self.env)
        if self.env.is_main:
            save_checkpoint(
                {
                    "model": self.method.model.state_dict(),
                    "method": _method_state(self.method),
                    "optimizer": self.optimizer.state_dict(),
                    "scaler": None,  # bf16 autocast needs no loss scaling
                    **asdict(self.progress),
                    "rng": rng_ranks[0],
                    "rng_ranks": rng_ranks,
                    "config": self.config_snapshot,
                    "train_config": self._train_config(),
                },
                self.checkpoint_path,
            )
        barrier(self.env)  # no rank exits (and lets torchrun kill rank 0) before the write

    def _mean_sums(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        return {k: float(v) for k, v in mean_over_ranks(sums, self.env).items()}

    def epoch_loader(self, epoch: int) -> DataLoader:
        """This epoch's loader. A dataset that reads the epoch from its keys (``epoch_in_index``)
        gets (epoch, index) keys and one loader whose workers persist across epochs; any other
        gets a loader per epoch, whose workers are seeded from (seed, epoch, rank) (its
        augmentations draw from the workers' torch RNG)."""
        cfg, env = self.cfg, self.env
        persistent = cfg.num_workers > 0 and getattr(self.dataset, "epoch_in_index", False)
        self.sampler.set_epoch(epoch, skip_batches=self.progress.batch_in_epoch)
        if persistent and self._persistent_loader is not None:
            return self._persistent_loader
        loader = DataLoader(
            self.dataset,
            batch_size=cfg.batch_size,
            sampler=_EpochKeys(self.sampler) if persistent else self.sampler,
            num_workers=cfg.num_workers,
            pin_memory=env.device.type == "cuda",
            drop_last=True,
            persistent_workers=persistent,
            # worker seeds drawn without advancing the global RNG
            generator=torch.Generator().manual_seed(
                int(np.random.SeedSequence([cfg.seed, epoch, env.rank]).generate_state(1)[0])
            ),
        )
        if persistent:
            self._persistent_loader = loader
        return loader

    def train_epoch(self, epoch: int, sigterm: _SigtermFlag) -> None:
        cfg, env, progress = self.cfg, self.env, self.progress
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        loader = self.epoch_loader(epoch)
        images_per_batch = cfg.batch_size * env.world_size
        # running sums of the logged values, continued from the checkpoint on a mid-epoch resume
        zero = torch.zeros((), dtype=torch.float64, device=env.device)
        sums = {k: zero + v for k, v in progress.epoch_sums.items()}
        started, images = time.perf_counter(), 0
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=None if env.is_main else True,
            leave=False,
        )
        self.step_module.train()
        for batch in bar:
            steps_now = (progress.batch_in_epoch + 1) % cfg.accum_iter == 0
            no_sync = env.distributed and not steps_now
            with self.step_module.no_sync() if no_sync else nullcontext():
                with _autocast(env.device, cfg.precision):
                    terms = self.step_module(_to_device(batch, env.device))
                loss_value = terms["loss"].item()
                if not math.isfinite(loss_value):
                    self._raise_non_finite(epoch, terms)
                (terms["loss"] / cfg.accum_iter).backward()
            sums["lr"] = sums.get("lr", zero) + self.optimizer.param_groups[0]["lr"]
            if cfg.weight_decay_end is not None:  # the value applied to the decayed groups
                wd = max(g["weight_decay"] for g in self.optimizer.param_groups)
                sums["weight_decay"] = sums.get("weight_decay", zero) + wd
            for k, v in terms.items():
                sums[k] = sums.get(k, zero) + v.detach().double()
            progress.batch_in_epoch += 1
            images += images_per_batch
            if not steps_now:
                continue
            if cfg.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(self.method.parameters(), cfg.clip_grad)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            progress.step += 1
            progress.samples_seen += images_per_batch * cfg.accum_iter
            self.schedule(progress.step)
            self.method.on_step_end(progress.step, self.total_steps)
            rate = images / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{rate:.0f}", refresh=False)
            last_step = progress.batch_in_epoch == self.sampler.batches_per_epoch
            if self.capped and not last_step:
                self._stop_mid_epoch(epoch, sums, images, time.perf_counter() - started)
                return
            if not last_step and any_rank(sigterm.raised, env):
                progress.epoch_sums = self._mean_sums(sums)
                self.save()
                raise Preempted(
                    f"SIGTERM: checkpointed epoch {epoch + 1}, step {progress.step} "
                    f"in {self.checkpoint_path}"
                )
        self._finish_epoch(epoch, self._mean_sums(sums), images, time.perf_counter() - started)

    def _raise_non_finite(self, epoch: int, terms: dict[str, torch.Tensor]) -> None:
        values = ", ".join(f"{k}={v.item():.6g}" for k, v in terms.items())
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch + 1}, step {self.progress.step + 1} "
            f"(micro-batch {self.progress.batch_in_epoch + 1} of the epoch): {values}; "
            f"the last good checkpoint, {self.checkpoint_path}, is left as it was"
        )

    def _epoch_row(
        self, epoch: int, sums: dict[str, float], images: int, seconds: float
    ) -> dict[str, float]:
        """The log row of the epoch's micro-batches so far: means of the logged values."""
        batches = max(self.progress.batch_in_epoch, 1)
        sums = dict(sums)
        schedule = {k: sums.pop(k) / batches for k in ("lr", "weight_decay") if k in sums}
        row = {"epoch": epoch + 1, "step": self.progress.step}
        row |= {k: v / batches for k, v in sums.items()}
        return row | schedule | {"img_per_s": images / max(seconds, 1e-9), "seconds": seconds}

    def _stop_mid_epoch(
        self, epoch: int, sums: dict[str, torch.Tensor], images: int, seconds: float
    ) -> None:
        """The step cap inside an epoch: checkpoint it as a SIGTERM would (mid-epoch, so a run
        resumed without the cap continues exactly), and log the partial epoch's row."""
        self.progress.epoch_sums = self._mean_sums(sums)
        self.save()
        self.partial_row = self._epoch_row(epoch, self.progress.epoch_sums, images, seconds)
        if self.env.is_main:
            _write_log(self.out_dir / LOG_CSV, [*self.progress.log_rows, self.partial_row])

    def _finish_epoch(
        self, epoch: int, sums: dict[str, float], images: int, seconds: float
    ) -> None:
        progress = self.progress
        row = self._epoch_row(epoch, sums, images, seconds)
        progress.log_rows.append(row)
        progress.epoch, progress.batch_in_epoch, progress.epoch_sums = epoch + 1, 0, {}
        log.info(
            "epoch %d/%d: %s",
            epoch + 1,
            self.cfg.epochs,
            ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"),
        )
        if self.env.is_main:
            _write_log(self.out_dir / LOG_CSV, progress.log_rows)
        if self._checkpoints_this_epoch_end():
            self.save()

    def _checkpoints_this_epoch_end(self) -> bool:
        """Whether :meth:`_finish_epoch` checkpoints the epoch just finished (save_every, last)."""
        done = self.progress.epoch
        return done % self.cfg.save_every == 0 or done == self.cfg.epochs

    @property
    def capped(self) -> bool:
        """The step cap is reached (every rank steps in lockstep, so all agree)."""
        return self.cfg.max_steps is not None and self.progress.step >= self.cfg.max_steps

    def run(self) -> TrainResult:
        cfg, progress = self.cfg, self.progress
        with _SigtermFlag() as sigterm:
            for epoch in range(progress.epoch, cfg.epochs):
                if self.capped:
                    break
                self.train_epoch(epoch, sigterm)
                if self.capped:
                    log.info("stopped at the step cap (%d steps)", progress.step)
                    if progress.batch_in_epoch == 0 and not self._checkpoints_this_epoch_end():
                        self.save()  # (a cap inside an epoch saved there)
                    break
                more = epoch + 1 < cfg.epochs
                if more and any_rank(sigterm.raised, self.env):
                    if not self._checkpoints_this_epoch_end():
                        self.save()
                    raise Preempted(
                        f"SIGTERM: checkpointed the end of epoch {epoch + 1} in "
                        f"{self.checkpoint_path}"
                    )
        if cfg.epochs == 0:
            self.save()
        if self.env.is_main and progress.epoch == cfg.epochs:  # complete: no fallback needed
            previous_checkpoint(self.checkpoint_path).unlink(missing_ok=True)
        if self.env.is_main and progress.batch_in_epoch == 0:  # a mid-epoch cap logged its row
            _write_log(self.out_dir / LOG_CSV, progress.log_rows)
        if self.env.is_main and getattr(self.method, "exports_encoder", True):
            encoder = {"model": self.method.encoder_state_dict()}
            atomic_write(self.out_dir / ENCODER, lambda f: torch.save(encoder, f))
        rows = [*progress.log_rows, *([self.partial_row] if self.partial_row else [])]
        final_loss = rows[-1].get("loss") if rows else None
        return TrainResult(progress.epoch, progress.step, final_loss, self.out_dir)


def train(
    method: Trainable,
    dataset: Dataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    config_snapshot: dict[str, Any] | None = None,
    sampler: EpochShardSampler | None = None,
) -> TrainResult:
    """Train ``method`` on ``dataset``, writing checkpoint.pth, log.csv and encoder.pth.

    ``method`` is any module with the :class:`Trainable` interface (``model``,
    ``forward(batch)``, ``on_step_end``, ``frozen_prefixes``); fine-tuning tasks set
    ``exports_encoder = False``. ``sampler`` replaces the default shuffled order (e.g. the
    P×K identity sampler); it needs ``set_epoch(epoch, skip_batches)`` (keeping ``epoch``),
    ``batches_per_epoch`` and ``steps_per_epoch`` like :class:`EpochShardSampler`.

    Resumes from ``out_dir/checkpoint.pth`` when it exists (one that cannot be loaded is set
    aside and the run starts over); ``config_snapshot`` (the run's resolved config) is stored
    in the checkpoint and must match on resume. Raises
    :class:`Preempted` after a SIGTERM checkpoint, :class:`NonFiniteLossError` on a NaN/inf
    loss and :class:`ResumeMismatchError` when the checkpoint belongs to another configuration.
    """
    return _Run(method, dataset, cfg, Path(out_dir), config_snapshot, sampler).run()


def bench_step(
    method: Trainable,
    batch: dict[str, Any],
    *,
    steps: int = 20,
    warmup: int = 5,
    precision: str = "auto",
    compile: bool = False,
) -> dict[str, float]:
    """Throughput of the training step alone on a fixed batch: img/s and ms per step.

    The same step as :func:`train` (autocast, AdamW, optional ``torch.compile``), timed after
    ``warmup`` steps with CUDA synchronised, so data loading and logging are left out.
    """
    cfg = TrainConfig(
        epochs=1,
        batch_size=len(next(v for v in batch.values() if torch.is_tensor(v))),
        precision=precision,
    )
    env = init_distributed()
    method.to(env.device).train()
    step_module = torch.compile(method) if compile else method
    optimizer = build_optimizer(method, cfg, 1e-4, env.device)
    batch = _to_device(batch, env.device)
    cuda = env.device.type == "cuda"

    def one_step() -> None:
        with _autocast(env.device, cfg.precision):
            loss = step_module(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        one_step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"img_per_s": cfg.batch_size * steps / elapsed, "step_ms": 1000 * elapsed / steps}
