"""One fine-tuning job: (pre-training run, task, dataset) → ``metrics.json``.

Training goes through the pre-training engine (same resume, SIGTERM checkpoint and log.csv)
in ``<out>/work/``, which Snakemake does not declare, so a retried job resumes. The metrics
file records what produced it: the task config, the encoder's SHA-256, the image counts and
the wall time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from cgdmae.data import RandomIdentitySampler
from cgdmae.data.scan import decoding_workers, without_corrupt
from cgdmae.files import dataset_fingerprint, file_sha256, write_json
from cgdmae.finetune.backbone import load_vit
from cgdmae.finetune.cards import task_card
from cgdmae.finetune.data import TaskData
from cgdmae.finetune.tasks import FinetuneTask, init_head, task_class
from cgdmae.training.checkpoint import seed_everything, set_aside_if_stale
from cgdmae.training.engine import CHECKPOINT, TrainConfig, TrainResult, train

log = logging.getLogger(__name__)


def read_task_data(task: str, dataset: dict[str, Any], spec: dict[str, Any]) -> TaskData:
    """A dataset's records for ``task``, after checking the task reads its format."""
    fmt, root = dataset["format"], dataset["path"]
    if fmt not in task_card(task).formats:
        raise ValueError(f"task {task} cannot use a {fmt} dataset ({root})")
    return task_class(task).read_data(fmt, root, spec)


def build_task(task: str, data: TaskData, spec: dict[str, Any], backbone) -> FinetuneTask:
    """The task module (its class builds it), with the optimizer recipe of its config."""
    module = task_class(task).build(backbone, data, spec)
    if spec.get("head_init_std") is not None:
        for name in module.head_names:
            init_head(getattr(module.model, name), spec["head_init_std"])
    module.decay_rule = spec.get("param_groups", "mae")
    module.bias_lr_factor = spec.get("bias_lr_factor", 1.0)
    module.nesterov = spec.get("nesterov", True)
    return module


def pk_sampler(pids: list[int], spec: dict[str, Any], seed: int) -> RandomIdentitySampler:
    """TransReID's P×K identity sampler for ``batch_size`` = P × ``instances``.

    P is capped at the number of training identities (a small or synthetic dataset with fewer
    ids than P still trains, on P' × K batches, with a warning), so every epoch has a batch.
    """
    k = spec["instances"]
    if spec["batch_size"] % k:
        raise ValueError(
            f"finetune.reid.batch_size={spec['batch_size']} is not a multiple of "
            f"instances={k} (a batch is P ids × K images)"
        )
    ids = len(set(pids))
    p = spec["batch_size"] // k
    if p > ids:
        log.warning(
            "batch_size %d = %d ids × %d, but the training set has %d ids: %d × %d per batch",
            spec["batch_size"], p, k, ids, ids, k,
        )  # fmt: skip
        p = ids
    return RandomIdentitySampler(pids, p, k, seed)


def eval_autocast(task: str, device: torch.device) -> torch.dtype | None:
    """The autocast type of the test pass: bf16 on CUDA (MAE's ``evaluate`` runs under
    autocast), or none (fp32) for a task that tests in fp32 (ReID, as TransReID)."""
    return torch.bfloat16 if task_class(task).test_autocast and device.type == "cuda" else None


def finetune_config(spec: dict[str, Any], seed: int, batch_size: int | None = None) -> TrainConfig:
    """The engine's settings; ``batch_size`` replaces the spec's (a capped P×K batch).

    With ``blr`` the lr is MAE's scaled one, blr × batch / 256 (the engine's rule), else ``lr``.
    """
    blr = {"blr": spec["blr"]} if spec.get("blr") is not None else {}
    return TrainConfig(
        epochs=spec["epochs"],
        batch_size=batch_size or spec["batch_size"],
        lr=None if blr else spec["lr"],
        **blr,
        min_lr=spec["min_lr"],
        warmup_epochs=spec["warmup_epochs"],
        weight_decay=spec["weight_decay"],
        optimizer=spec["optimizer"],
        betas=(0.9, 0.999),
        layer_decay=spec["layer_decay"],
        save_every=spec["save_every"],
        seed=seed,
        num_workers=spec["num_workers"],
        precision=spec["precision"],
        max_steps=spec.get("max_steps"),
    )


def mean_metrics(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise mean of nested metric dicts (numbers and lists of numbers) over seeds."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: mean_metrics([r[k] for r in runs]) for k in first}
    return np.mean(np.asarray(runs, dtype=float), axis=0).tolist()


def finetune_once(
    task: str,
    data: TaskData,
    dataset: dict[str, Any],
    encoder: str | Path,
    model_cfg: dict[str, Any],
    spec: dict[str, Any],
    work: Path,
    seed: int,
) -> tuple[dict[str, Any], TrainResult, torch.device]:
    """Train one seed in ``work`` (resuming from its checkpoint) and evaluate it."""
    size = tuple(spec["img_size"])
    snapshot = {"task": task, "dataset": dataset, "model": model_cfg, "spec": spec, "seed": seed}
    set_aside_if_stale(work / CHECKPOINT, snapshot)
    seed_everything(seed)
    cls = task_class(task)
    stride = spec.get("stride") if cls.strided else None
    backbone = load_vit(encoder, model_cfg, size, spec["drop_path"], spec["pool"], stride)
    module = build_task(task, data, spec, backbone)
    sampler, batch_size = None, None
    if task_card(task).pk_batch:
        sampler = pk_sampler([r.label for r in data.train], spec, seed)
        batch_size = sampler.p * sampler.k
    train_set = cls.train_set(data.train, size, spec)
    result = train(module, train_set, finetune_config(spec, seed, batch_size), work,
                   config_snapshot=snapshot, sampler=sampler)  # fmt: skip
    device = next(module.parameters()).device
    module.eval()

    def loader(records: list[Any]) -> DataLoader:
        return DataLoader(
            cls.test_set(records, size, spec),
            batch_size=spec["eval_batch_size"],
            num_workers=spec["num_workers"],
        )

    dtype = eval_autocast(task, device)
    with torch.autocast(device.type, dtype or torch.bfloat16, enabled=dtype is not None):
        metrics = module.evaluate(data, loader, spec, device, seed)
    return metrics, result, device


def usable_data(data: TaskData, on_corrupt: str, where: str | Path) -> tuple[TaskData, int]:
    """``data`` under ``data.on_corrupt`` (a ReID query or gallery image, a class image or a
    segmentation pair that does not decode is left out with ``skip``), and how many were."""

    def files(record: Any) -> list[Path]:
        return [record.image, record.mask] if hasattr(record, "mask") else [record.path]

    def keep(records: list[Any]) -> tuple[list[Any], int]:
        kept, dropped = without_corrupt(records, files, on_corrupt, where, decoding_workers())
        return kept, len(dropped)

    train, skipped = keep(data.train)
    test = {}
    for protocol, split in data.test.items():
        parts = [keep(list(part)) for part in (split if isinstance(split, tuple) else (split,))]
        skipped += sum(n for _, n in parts)
        test[protocol] = tuple(p for p, _ in parts) if isinstance(split, tuple) else parts[0][0]
    return replace(data, train=train, test=test), skipped


def run_finetune(
    task: str,
    dataset: dict[str, Any],
    encoder: str | Path,
    model_cfg: dict[str, Any],
    spec: dict[str, Any],
    out: str | Path,
    *,
    seeds: Sequence[int] = (0,),
    on_corrupt: str = "error",
) -> dict[str, Any]:
    """Fine-tune ``encoder`` on ``dataset`` for ``task`` once per seed, evaluate, and write
    ``out`` (metrics.json): the mean over seeds under ``metrics``, each seed's under
    ``per_seed``; ``skipped_images`` counts the items ``data.on_corrupt: skip`` left out."""
    started = time.time()
    out = Path(out)
    data, skipped = usable_data(read_task_data(task, dataset, spec), on_corrupt, dataset["path"])
    per_seed, results = {}, []
    for seed in seeds:
        work = out.parent / "work" / f"seed{seed}"
        metrics, result, device = finetune_once(
            task, data, dataset, encoder, model_cfg, spec, work, seed
        )
        per_seed[str(seed)] = metrics
        results.append(result)
    record = {
        "task": task,
        "dataset": dataset,
        "metrics": mean_metrics(list(per_seed.values())),
        "per_seed": per_seed,
        "seeds": list(seeds),
        "config": spec,
        "model": model_cfg,
        "encoder": str(encoder),
        "encoder_sha256": file_sha256(encoder),
        "dataset_fingerprint": dataset_fingerprint(dataset["path"]),
        "num_train": len(data.train),
        "skipped_images": skipped,
        "num_test": data.num_test,
        "epochs": results[0].epochs_run,
        "final_loss": [r.final_loss for r in results],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "wall_seconds": round(time.time() - started, 1),
    }
    write_json(out, record)
    # the resumable state has served its purpose: a ViT-B's is ~1 GB per job (76 jobs in the
    # paper); each seed's log.csv stays beside the metrics
    for seed in seeds:
        (out.parent / "work" / f"seed{seed}" / CHECKPOINT).unlink(missing_ok=True)
    log.info("%s on %s: %s", task, dataset["path"], record["metrics"])
    return record
