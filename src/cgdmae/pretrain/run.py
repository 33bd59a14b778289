"""One pre-training run from its resolved config spec: model, method, data, engine, outputs.

The engine works in ``<out>/work/``, which Snakemake does not know about, so a retried job
finds its checkpoint there (Snakemake deletes declared outputs before a job starts, and after
one it counts as failed). The finished files are hard-linked into ``<out>/`` and stay in
``work/``: a job that finishes training but is still marked failed (a time limit hit while it
was exiting) loses nothing, and its retry only re-exports.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from cgdmae.data import read_manifest, read_pool
from cgdmae.data.scan import corrupt_images
from cgdmae.models import create_mae
from cgdmae.pretrain.cards import method_card
from cgdmae.pretrain.data import TeacherTargets
from cgdmae.pretrain.methods import MethodInputs, PretrainMethod, method_class
from cgdmae.pretrain.methods.mae_lite import load_teacher_encoder
from cgdmae.training.checkpoint import (
    CheckpointError,
    drop_optimizer_state,
    load_checkpoint,
    seed_everything,
    set_aside_if_stale,
)
from cgdmae.training.engine import CHECKPOINT, ENCODER, LOG_CSV, TrainConfig, TrainResult, train

log = logging.getLogger(__name__)


def image_paths(images: str | Path) -> list[Path]:
    """A pool directory (captions.csv) or a curation manifest (.csv with a path column)."""
    images = Path(images)
    if images.suffix == ".csv":
        return read_manifest(images)
    return [r.path for r in read_pool(images)]


def training_images(images: str | Path, on_corrupt: str = "error") -> list[Path]:
    """:func:`image_paths` under ``data.on_corrupt``: with ``skip``, those that decode (the
    teacher-target job and the pre-training job drop the same ones, so their lists agree)."""
    paths = image_paths(images)
    skipped = set(corrupt_images(paths, on_corrupt, images))
    return [path for path in paths if path not in skipped]


def build_model(spec: dict[str, Any]):
    m = spec["model"]
    return create_mae(
        m["size"],
        img_size=tuple(m["img_size"]),
        patch_size=m["patch_size"],
        embed_dim=m["embed_dim"],
        depth=m["depth"],
        num_heads=m["num_heads"],
        decoder_dim=m["decoder_dim"],
        decoder_depth=m["decoder_depth"],
        decoder_heads=m["decoder_heads"],
        norm_pix_loss=m["norm_pix_loss"],
        mask_strategy=spec["mask_strategy"],
    )


def build_method(
    spec: dict[str, Any],
    teacher_dir: str | Path | None = None,
    teacher_checkpoint: str | Path | None = None,
    text_anchors: str | Path | None = None,
) -> PretrainMethod:
    """The method of ``spec['method']`` around a freshly initialised MAE, built by its class
    from the spec and the files its rule gives it (``MethodInputs``): cgd_mae's CLIP teacher
    directory and text anchors, MAE-Lite's teacher run checkpoint."""
    inputs = MethodInputs(teacher_dir, text_anchors, teacher_checkpoint)
    return method_class(spec["method"]).from_spec(build_model(spec), spec, inputs)


def load_mae_teacher(path: str | Path):
    """The frozen encoder of a finished run's ``checkpoint.pth``, built from the spec it saved.

    The checkpoint carries its own config, so a teacher pulled with ``dvc pull`` needs nothing
    else; a missing file fails here, before any training.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"MAE-Lite teacher checkpoint {path} does not exist: train the teacher run first "
            "(or `make pull` it)"
        )
    state = load_checkpoint(path)
    if not state["config"] or "model" not in state["config"]:
        raise CheckpointError(f"{path}: has no run config to build the teacher model from")
    try:
        return load_teacher_encoder(build_model(state["config"]), state["model"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def build_dataset(
    spec: dict[str, Any],
    images: str | Path,
    seed: int,
    targets: str | Path | None = None,
    target_views: int | None = None,
    on_corrupt: str = "error",
) -> Dataset:
    """The views the run's method trains on (its class's ``views``); with cached targets,
    the first ``target_views`` views of the store (all of them when ``None``)."""
    cached = TeacherTargets.load(targets) if targets else None
    if cached is not None and target_views is not None:
        cached = cached.first_views(target_views, targets)
    paths = training_images(images, on_corrupt)
    return method_class(spec["method"]).views(spec, paths, seed, cached, targets)


def train_config(spec: dict[str, Any], seed: int) -> TrainConfig:
    return TrainConfig(
        epochs=spec["epochs"] if method_card(spec["method"]).trains else 0,
        batch_size=spec["batch_size"],
        blr=spec["blr"],
        max_lr=spec.get("max_lr"),
        min_lr=spec["min_lr"],
        warmup_epochs=spec["warmup_epochs"],
        weight_decay=spec["weight_decay"],
        weight_decay_end=spec.get("weight_decay_end"),
        accum_iter=spec["accum_iter"],
        betas=tuple(spec["betas"]),
        clip_grad=spec["clip_grad"],
        save_every=spec["save_every"],
        seed=seed,
        num_workers=spec["num_workers"],
        compile=spec["compile"],
        precision=spec["precision"],
        max_steps=spec.get("max_steps"),
    )


def publish(source: Path, target: Path) -> None:
    """Make ``target`` the same file as ``source`` (hard link; a copy where links fail),
    replacing it atomically."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def run_pretraining(
    spec: dict[str, Any],
    images: str | Path,
    out_dir: str | Path,
    *,
    seed: int = 0,
    teacher_dir: str | Path | None = None,
    targets: str | Path | None = None,
    target_views: int | None = None,
    teacher_checkpoint: str | Path | None = None,
    text_anchors: str | Path | None = None,
    on_corrupt: str = "error",
) -> TrainResult:
    out_dir = Path(out_dir)
    work = out_dir / "work"
    set_aside_if_stale(work / CHECKPOINT, spec)
    seed_everything(seed)
    method = build_method(spec, teacher_dir, teacher_checkpoint, text_anchors)
    dataset = build_dataset(spec, images, seed, targets, target_views, on_corrupt)
    log.info("%s", dataset.crop_summary(train_config(spec, seed).epochs))
    result = train(method, dataset, train_config(spec, seed), work, config_snapshot=spec)
    if int(os.environ.get("RANK", 0)) == 0:
        drop_optimizer_state(work / CHECKPOINT)
        for name in (CHECKPOINT, LOG_CSV, ENCODER):
            publish(work / name, out_dir / name)
    return result
