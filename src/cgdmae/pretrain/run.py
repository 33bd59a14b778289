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
from cgdmae.models import create_mae
from cgdmae.pretrain.checkpoint import seed_everything, set_aside_if_stale
from cgdmae.pretrain.data import PretrainDataset, TeacherTargets
from cgdmae.pretrain.engine import CHECKPOINT, ENCODER, LOG_CSV, TrainConfig, TrainResult, train
from cgdmae.pretrain.methods import PretrainMethod, method_class

log = logging.getLogger(__name__)


def image_paths(images: str | Path) -> list[Path]:
    """A pool directory (captions.csv) or a curation manifest (.csv with a path column)."""
    images = Path(images)
    if images.suffix == ".csv":
        return read_manifest(images)
    return [r.path for r in read_pool(images)]


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


def build_method(spec: dict[str, Any], teacher_dir: str | Path | None = None) -> PretrainMethod:
    """The method of ``spec['method']`` around a freshly initialised MAE."""
    model = build_model(spec)
    if spec["method"] in ("mae", "scratch"):
        return method_class(spec["method"])(model, mask_ratio=spec["mask_ratio"])
    from cgdmae.pretrain.teacher import attribute_prompts, load_teacher

    distill = spec["distill"]
    if teacher_dir is None:
        raise ValueError("cgd_mae needs a teacher directory")
    teacher = load_teacher(teacher_dir)
    text = teacher.encode_text(attribute_prompts(distill["templates"]))
    return method_class("cgd_mae")(
        model,
        text,
        teacher if distill["targets"] == "online" else None,
        mask_ratio=spec["mask_ratio"],
        lam=distill["lambda"],
        w_sim=distill["w_sim"],
        w_kl=distill["w_kl"],
        student_feature=distill["student_feature"],
    )


def train_config(spec: dict[str, Any], seed: int) -> TrainConfig:
    return TrainConfig(
        epochs=0 if spec["method"] == "scratch" else spec["epochs"],
        batch_size=spec["batch_size"],
        blr=spec["blr"],
        min_lr=spec["min_lr"],
        warmup_epochs=spec["warmup_epochs"],
        weight_decay=spec["weight_decay"],
        accum_iter=spec["accum_iter"],
        save_every=spec["save_every"],
        seed=seed,
        num_workers=spec["num_workers"],
        compile=spec["compile"],
        precision=spec["precision"],
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
) -> TrainResult:
    out_dir = Path(out_dir)
    work = out_dir / "work"
    set_aside_if_stale(work / CHECKPOINT, spec)
    seed_everything(seed)
    method = build_method(spec, teacher_dir)
    cached = TeacherTargets.load(targets) if targets else None
    dataset = PretrainDataset(
        image_paths(images),
        img_size=tuple(spec["model"]["img_size"]),
        scale=tuple(spec["crop_scale"]),
        seed=seed,
        targets=cached,
        targets_file=targets,
    )
    result = train(method, dataset, train_config(spec, seed), work, config_snapshot=spec)
    if int(os.environ.get("RANK", 0)) == 0:
        for name in (CHECKPOINT, LOG_CSV, ENCODER):
            publish(work / name, out_dir / name)
    return result
