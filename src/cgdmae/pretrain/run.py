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

from cgdmae.data import read_manifest, read_pool
from cgdmae.data.scan import corrupt_images
from cgdmae.models import create_mae
from cgdmae.pretrain.data import PretrainDataset, TeacherTargets
from cgdmae.pretrain.methods import PretrainMethod, method_class
from cgdmae.pretrain.methods.mae_lite import load_teacher_encoder
from cgdmae.pretrain.views import CrossRegionDataset, MultiCropDataset
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
    """The method of ``spec['method']`` around a freshly initialised MAE.

    ``teacher_dir`` is cgd_mae's CLIP teacher and ``text_anchors`` its cached KL anchors;
    ``teacher_checkpoint`` is MAE-Lite's frozen MAE (another run's ``checkpoint.pth``).
    """
    model = build_model(spec)
    method, mask_ratio = spec["method"], spec["mask_ratio"]
    cls = method_class(method)
    if method in ("mae", "scratch"):
        return cls(model, mask_ratio=mask_ratio)
    if method == "person_mae":
        cfg = spec["person_mae"]
        return cls(
            model,
            mask_ratio=mask_ratio,
            lam=cfg["lambda"],
            beta=cfg["beta"],
            ema_momentum=tuple(cfg["ema_momentum"]),
            ema_ramp=cfg["ema_ramp"],
            feature_depth=cfg["feature_depth"],
        )
    if method == "person_vit":
        cfg = spec["person_vit"]
        return cls(
            model,
            out_dim=cfg["out_dim"],
            hidden_dim=cfg["hidden_dim"],
            bottleneck_dim=cfg["bottleneck_dim"],
            norm_last_layer=cfg["norm_last_layer"],
            teacher_temp=tuple(cfg["teacher_temp"]),
            patch_temp=tuple(cfg["patch_temp"]),
            temp_warmup=cfg["temp_warmup"],
            ema_momentum=cfg["ema_momentum"],
            lambda_dino=cfg["lambda_dino"],
            lambda_mim=cfg["lambda_mim"],
            freeze_last_layer=cfg["freeze_last_layer"],
            drop_path=cfg["drop_path"],
        )
    if method == "mae_lite":
        cfg = spec["mae_lite"]
        teacher = None
        if cfg["teacher_run"] is not None:
            if teacher_checkpoint is None:
                raise ValueError(
                    f"mae_lite.teacher_run is {cfg['teacher_run']!r} but no teacher checkpoint "
                    "was given"
                )
            teacher = load_mae_teacher(teacher_checkpoint)
        return cls(model, teacher, mask_ratio=mask_ratio, distill_weight=cfg["distill_weight"])
    return build_cgd_mae(model, spec, teacher_dir, text_anchors)


def build_cgd_mae(
    model, spec: dict[str, Any], teacher_dir: str | Path | None, text_anchors: str | Path | None
) -> PretrainMethod:
    """CGD-MAE around ``model``. The KL anchors come from ``text_anchors`` (the teacher_text
    rule's file) when given; the teacher itself is loaded only for online targets."""
    from cgdmae.teacher.clip import attribute_prompts, load_teacher, load_text_anchors

    distill = spec["distill"]
    online = distill["targets"] == "online"
    if teacher_dir is None and (online or text_anchors is None):
        raise ValueError("cgd_mae needs a teacher directory (online targets or no text anchors)")
    # on the CPU: the engine moves the method to this rank's device (not every rank's GPU 0)
    teacher = load_teacher(teacher_dir, "cpu") if online or text_anchors is None else None
    if text_anchors is not None:
        text = load_text_anchors(text_anchors, distill["templates"])
    else:
        text = teacher.encode_text(attribute_prompts(distill["templates"]))
    return method_class("cgd_mae")(
        model,
        text,
        teacher if online else None,
        mask_ratio=spec["mask_ratio"],
        lam=distill["lambda"],
        w_sim=distill["w_sim"],
        w_kl=distill["w_kl"],
        student_feature=distill["student_feature"],
    )


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
) -> PretrainDataset:
    """The views each method trains on: MAE crops, cross-region pairs or multi-crop; with cached
    targets, the first ``target_views`` views of the store (all of them when ``None``)."""
    paths = training_images(images, on_corrupt)
    img_size = tuple(spec["model"]["img_size"])
    if spec["method"] == "person_mae":
        return CrossRegionDataset(
            paths,
            img_size=img_size,
            scale=tuple(spec["crop_scale"]),
            max_shift=spec["person_mae"]["shift"],
            seed=seed,
        )
    if spec["method"] == "person_vit":
        cfg = spec["person_vit"]
        return MultiCropDataset(
            paths,
            img_size=img_size,
            patch_size=spec["model"]["patch_size"],
            local_size=tuple(cfg["local_size"]),
            local_views=cfg["local_views"],
            global_scale=tuple(cfg["global_scale"]),
            local_scale=tuple(cfg["local_scale"]),
            ratio=tuple(cfg["ratio"]),
            mask_ratio=tuple(cfg["mask_ratio"]),
            mask_prob=cfg["mask_prob"],
            photometric=cfg["photometric"],
            seed=seed,
        )
    cached = TeacherTargets.load(targets) if targets else None
    if cached is not None and target_views is not None:
        cached = cached.first_views(target_views, targets)
    return PretrainDataset(
        paths,
        img_size=img_size,
        scale=tuple(spec["crop_scale"]),
        seed=seed,
        targets=cached,
        targets_file=targets,
    )


def train_config(spec: dict[str, Any], seed: int) -> TrainConfig:
    return TrainConfig(
        epochs=0 if spec["method"] == "scratch" else spec["epochs"],
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
