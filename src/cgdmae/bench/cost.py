"""What ``snakemake all`` costs: FLOPs and GPU-hours of every GPU stage of a config's DAG.

    python -m cgdmae.bench.cost --config config/paper.yaml [--out FILE.md]

One row per job group of the DAG that ``all`` builds: the teacher's cached targets (a forward
of the CLIP teacher over each image × ``cache_views`` views), the curation embedding (one
teacher forward per pool image), each pre-training run (declared runs and ablation runs) and the
fine-tuning of each run (its tasks × datasets × seeds × epochs × train images).

FLOPs per image are counted by torch's FlopCounterMode on one forward of the real modules at the
configured shapes, on the CPU with random weights. A training step is 3× the forward of what is
trained plus 1× the forward of what is frozen (an EMA or distillation teacher inside a method,
counted by module); a frozen teacher's forward alone (targets, curation) is 1×. GPU-hours are
FLOPs ÷ (MFU × peak): by default 28 % of 989 TFLOP/s dense bf16, the MFU that compiled MAE
ViT-B/16 reached on one H200 (docs/benchmarks.md). Where a measured img/s applies to a run's exact
shape, a second column gives the GPU-hours at that rate.

Image counts are not read from the datasets (the config's paths may be placeholders): the pool's
size is ``--pool-images``, a curation subset's is its configured count or fraction of the pool,
and each fine-tuning dataset's train split is ``--finetune-images NAME=COUNT``. Not counted:
evaluation passes, the text anchors, k-means (docs/benchmarks.md: about an hour on 16 cores,
minutes on a GPU) and training a teacher here (``source: train``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from cgdmae.config import (
    SCHEMA,
    all_runs,
    cached_views,
    finetune_jobs,
    finetune_spec,
    load_config,
    run_spec,
    targets_file,
)
from cgdmae.curation.subsets import parse_subset, subset_size
from cgdmae.finetune.spec import split_recipe
from cgdmae.pretrain.cards import method_card
from cgdmae.teacher.clip import hub_offline, small_clip

PEAK_TFLOPS = 989.0  # H100 / H200 dense bf16
MFU = 0.28  # compiled MAE ViT-B/16 at 224 on one H200 (docs/benchmarks.md)
POOL_IMAGES = 1_000_000  # Automobile1M scale
TRAIN_IMAGES = {"veri776": 37_778, "vehicleid": 113_346, "veriwild": 277_797}
# Not public datasets the config names: assumptions, stated in the output.
ASSUMED_TRAIN_IMAGES = {"vfr": 8_144, "vps": 3_000}
# Classifier widths of the fine-tuning heads (their FLOPs are a rounding error next to the ViT).
HEAD_CLASSES = {"veri776": 576, "vehicleid": 13_164, "veriwild": 30_671, "vfr": 196, "vps": 13}
VAR_CLASSES = (10, 9)  # VeRi-776 colours, types

# Measured img/s per GPU (eager, compiled) on one H200, bf16 (docs/benchmarks.md, "On a GPU").
ANCHORS: dict[str, tuple[float | None, float | None]] = {
    "mae base 224x224 p16 dec512x8 mask0.75 random": (3_531, 4_916),
    "cgd_mae base 224x224 p16 dec512x8 mask0.75 random cached": (3_489, 4_901),
    "cgd_mae base 224x224 p16 dec512x8 mask0.75 random online": (1_237, None),
    "mae_lite base 224x224 p16 dec512x8 mask0.75 random": (3_544, 4_923),
}

# Keys of a method's section that weigh losses or schedule values but change no computation.
FLOP_NEUTRAL = {
    "lambda", "w_sim", "w_kl", "templates", "shift", "beta", "ema_momentum", "ema_ramp",
    "teacher_temp", "patch_temp", "temp_warmup", "lambda_dino", "lambda_mim",
    "freeze_last_layer", "distill_weight", "drop_path", "global_scale", "local_scale", "ratio",
    "mask_ratio", "mask_prob", "photometric",
}  # fmt: skip


# ---- counting -----------------------------------------------------------------------------------
def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch counts SDPA on the GPU's kernels only; on the CPU it runs this one
CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop}


@contextmanager
def mha_fastpath_off() -> Iterator[None]:
    """nn.MultiheadAttention's inference fast path is one fused op that torch does not count;
    the regular path runs the projections and SDPA, which it does."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def count_flops(fn: Callable[..., Any], *args: Any) -> tuple[float, dict[str, float]]:
    """Total FLOPs of one no-grad call, and the FLOPs attributed to each module by its path
    (attention included: CPU SDPA and nn.MultiheadAttention, which torch leaves out)."""
    counter = FlopCounterMode(display=False, depth=None, custom_mapping=CPU_ATTENTION)
    with counter, torch.no_grad(), mha_fastpath_off():
        fn(*args)
    by_module = {k: float(sum(v.values())) for k, v in counter.get_flop_counts().items()}
    return float(counter.get_total_flops()), by_module


def frozen_prefixes(module: nn.Module) -> list[str]:
    """Paths of the outermost submodules with parameters, all of them frozen."""
    frozen: list[str] = []
    for name, sub in module.named_modules():
        params = list(sub.parameters())
        if not name or not params or any(p.requires_grad for p in params):
            continue
        if not any(name.startswith(f + ".") for f in frozen):
            frozen.append(name)
    return frozen


def flops_under(by_module: Mapping[str, float], prefix: str) -> float:
    """FLOPs inside the module at ``prefix``: the outermost counted paths under it, summed
    (the module itself may not have been called, e.g. when its blocks are run one by one)."""
    inside = [k for k in by_module if k == prefix or k.startswith(prefix + ".")]
    outermost = [k for k in inside if not any(k.startswith(o + ".") for o in inside)]
    return sum(by_module[k] for k in outermost)


def train_step_flops(module: nn.Module, *args: Any) -> tuple[float, float]:
    """(FLOPs of one training step, FLOPs of the whole forward): 3× the trained part's forward
    plus 1× the frozen submodules' forward."""
    total, by_module = count_flops(module, *args)
    root = type(module).__name__
    frozen = sum(flops_under(by_module, f"{root}.{p}") for p in frozen_prefixes(module))
    return 3 * (total - frozen) + frozen, total


# ---- models -------------------------------------------------------------------------------------
def on_meta(count: Callable[[], float]) -> float:
    """``count()`` with modules and inputs on the meta device (shapes only: fast, no memory);
    again on the CPU when the forward needs real values (block masks, ``.item()``)."""
    try:
        with torch.device("meta"):
            return count()
    except (RuntimeError, NotImplementedError):
        return count()


def teacher_clip(spec: Mapping[str, Any]) -> nn.Module:
    """The teacher's open_clip model with random weights, on the default device: a named
    architecture for a pretrained teacher, the configured small CLIP for one trained here."""
    import open_clip

    if spec["source"] == "pretrained":
        with hub_offline():
            device = torch.get_default_device()
            return open_clip.create_model(spec["name"], pretrained=None, device=device)
    return small_clip(spec["model"])


@cache
def teacher_forward(spec_json: str) -> tuple[float, int]:
    """(FLOPs of one image through the teacher's image tower at its resolution, embedding dim)."""
    dims = []

    def count() -> float:
        clip = teacher_clip(json.loads(spec_json)).eval()
        size = clip.visual.image_size
        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        dims.append(int(clip.visual.output_dim))
        return count_flops(clip.encode_image, torch.randn(1, 3, *size))[0]

    return on_meta(count), dims[-1]


def teacher_cost(config: Mapping[str, Any], name: str) -> tuple[float, int]:
    return teacher_forward(json.dumps(config["teachers"][name], sort_keys=True))


def pretrain_batch(spec: Mapping[str, Any], n: int = 1) -> dict[str, torch.Tensor]:
    """A batch of ``n`` samples shaped as the method's dataset makes them."""
    h, w = spec["model"]["img_size"]
    image = torch.randn(n, 3, h, w)
    if spec["method"] == "person_mae":
        return {"image": image, "target": torch.randn(n, 3, h, w), "shift": torch.ones(n, 2)}
    if spec["method"] == "person_vit":
        cfg, patch = spec["person_vit"], spec["model"]["patch_size"]
        return {
            "global_views": torch.randn(n, 2, 3, h, w),
            "global_masks": torch.zeros(n, 2, h // patch, w // patch, dtype=torch.bool),
            "local_views": torch.randn(n, cfg["local_views"], 3, *cfg["local_size"]),
        }
    return {"image": image}


def pretrain_method(config: Mapping[str, Any], spec: dict[str, Any]) -> nn.Module:
    """The run's method around a fresh MAE, as the pretrain rule builds it; cgd_mae takes random
    text anchors of the teacher's width, and a distilled mae_lite a fresh teacher-run model."""
    from cgdmae.pretrain.methods import method_class
    from cgdmae.pretrain.run import build_method, build_model

    card = method_card(spec["method"])
    cls = method_class(card.name)
    if card.clip_teacher:
        distill = spec[card.section]
        _, clip_dim = teacher_cost(config, distill["teacher"])
        text = nn.functional.normalize(torch.randn(90, clip_dim), dim=-1)
        return cls(build_model(spec), text, None, **cls.settings(spec))
    teacher_run = card.teacher_run_of(spec)
    if teacher_run is not None:
        teacher = build_model(run_spec(config, teacher_run))
        return cls(build_model(spec), teacher, **cls.settings(spec))
    return build_method(spec)


def flop_key(config: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
    """What a run's step FLOPs depend on: method, model, masking and the method's section."""
    card = method_card(spec["method"])
    key: dict[str, Any] = {k: spec[k] for k in ("method", "model", "mask_ratio", "mask_strategy")}
    key["section"] = {
        k: v for k, v in spec.get(card.section, {}).items() if k not in FLOP_NEUTRAL
    }  # fmt: skip
    if card.clip_teacher:
        key["teacher"] = config["teachers"][card.clip_teacher_of(spec)]
    if card.teacher_run_of(spec) is not None:
        key["teacher_model"] = run_spec(config, card.teacher_run_of(spec))["model"]
    return json.dumps(key, sort_keys=True)


def pretrain_flops(config: Mapping[str, Any], spec: dict[str, Any], cache_: dict) -> float:
    """FLOPs of one image in one training step of the run (teacher forward included when its
    targets are computed online)."""
    key = flop_key(config, spec)
    if key not in cache_:
        card = method_card(spec["method"])
        clip_dim = None
        if card.clip_teacher:
            _, clip_dim = teacher_cost(config, card.clip_teacher_of(spec))

        def count() -> float:
            method = pretrain_method(config, spec).train()
            batch = pretrain_batch(spec)
            n = len(next(iter(batch.values())))
            if clip_dim is not None:
                batch["teacher_embed"] = nn.functional.normalize(torch.randn(n, clip_dim), dim=-1)
            return train_step_flops(method, batch)[0] / n

        flops = on_meta(count)
        if card.clip_teacher and not card.cached_targets(spec):  # the teacher on every crop
            flops += teacher_cost(config, card.clip_teacher_of(spec))[0]
        cache_[key] = flops
    return cache_[key]


def finetune_net(task: str, dataset: str, model_cfg: Mapping[str, Any], spec: Mapping[str, Any]):
    """The fine-tuning network of a task (random weights), as cgdmae.finetune builds it."""
    from timm.models.vision_transformer import VisionTransformer

    from cgdmae.finetune.backbone import encoder_architecture, set_patch_stride
    from cgdmae.finetune.tasks import (
        UPERNET_CHANNELS,
        AttributeNet,
        ClassifierNet,
        ReidNet,
        SegmenterNet,
    )

    backbone = VisionTransformer(
        img_size=tuple(spec["img_size"]),
        patch_size=model_cfg["patch_size"],
        num_classes=0,
        global_pool=spec.get("pool", "token"),
        **encoder_architecture(dict(model_cfg)),
    )
    classes = HEAD_CLASSES.get(dataset, 1000)
    if task == "reid":
        if spec.get("stride"):  # TransReID*'s overlapping patches: more tokens
            set_patch_stride(backbone, spec["stride"])
        return ReidNet(backbone, classes)
    if task == "var":
        return AttributeNet(backbone, *VAR_CLASSES)
    if task == "vfr":
        return ClassifierNet(backbone, classes)
    return SegmenterNet(backbone, classes, spec.get("head_channels", UPERNET_CHANNELS))


def finetune_flops(
    task: str, dataset: str, model_cfg: Mapping[str, Any], spec: Mapping[str, Any], cache_: dict
) -> float:
    """FLOPs of one image in one fine-tuning step: 3× the forward (everything trains)."""
    key = json.dumps(
        [
            task,
            HEAD_CLASSES.get(dataset),
            model_cfg,
            spec["img_size"],
            spec.get("pool"),
            spec.get("stride"),
            spec.get("head_channels"),
        ],  # fmt: skip
        sort_keys=True,
    )
    if key not in cache_:

        def count() -> float:
            net = finetune_net(task, dataset, model_cfg, spec).eval()
            return count_flops(net, torch.randn(1, 3, *spec["img_size"]))[0]

        cache_[key] = 3 * on_meta(count)
    return cache_[key]


# ---- the DAG ------------------------------------------------------------------------------------
@dataclass
class Row:
    stage: str
    name: str
    jobs: int
    images: int  # images × epochs (× views, × seeds) processed
    flops: float  # total FLOPs
    anchor_img_per_s: float | None = None

    @property
    def gflop_per_image(self) -> float:
        return self.flops / self.images / 1e9 if self.images else 0.0

    def gpu_hours(self, mfu: float, peak_tflops: float) -> float:
        return self.flops / (mfu * peak_tflops * 1e12) / 3600

    @property
    def anchor_hours(self) -> float | None:
        if self.anchor_img_per_s is None:
            return None
        return self.images / self.anchor_img_per_s / 3600


def anchor_key(spec: Mapping[str, Any]) -> str:
    """The shape a measured img/s applies to: ``mae base 224x224 p16 dec512x8 mask0.75 random``
    (+ ``cached``/``online`` for cgd_mae, ``distill`` for a distilled mae_lite)."""
    m = spec["model"]
    key = (
        f"{spec['method']} {m['size']} {m['img_size'][0]}x{m['img_size'][1]} "
        f"p{m['patch_size']} dec{m['decoder_dim']}x{m['decoder_depth']} "
        f"mask{spec['mask_ratio']:g} {spec['mask_strategy']}"
    )
    card = method_card(spec["method"])
    if card.clip_teacher:
        key += f" {spec[card.section]['targets']}"
    if method_card(spec["method"]).teacher_run_of(spec) is not None:
        key += " distill"
    if spec["method"] == "person_vit":
        key += f" local{spec['person_vit']['local_views']}"
    return key


def anchor_rate(
    spec: Mapping[str, Any], anchors: Mapping[str, tuple[float | None, float | None]]
) -> float | None:
    """The measured img/s per GPU for the run's shape: the compiled one when it compiles."""
    eager, compiled = anchors.get(anchor_key(spec), (None, None))
    return compiled if spec.get("compile") and compiled is not None else eager


class ImageCounts:
    """Image counts by dataset name: pools from ``pool_images``, curation subsets as their
    configured size, the others from ``train_images``."""

    def __init__(
        self, config: Mapping[str, Any], pool_images: int, train_images: Mapping[str, int]
    ):
        self.config, self.pool_images, self.train_images = config, pool_images, train_images

    def __call__(self, name: str) -> int:
        curation = self.config["curation"]
        if name in curation["subsets"]:
            kind, amount = parse_subset(name)
            pool = self(curation["dataset"])
            return pool if kind == "full" else subset_size(amount, pool)
        if self.config["datasets"].get(name, {}).get("format") == "pool":
            return self.pool_images
        if name not in self.train_images:
            raise SystemExit(
                f"no image count for dataset {name!r}: pass --finetune-images {name}=N"
            )
        return self.train_images[name]


def steps_cap(images: int, max_steps: int | None, per_step: int) -> int:
    """Images processed under a rehearsal's ``limits.max_steps`` (optimizer steps per job)."""
    return images if max_steps is None else min(images, max_steps * per_step)


def cost_rows(
    config: dict[str, Any],
    pool_images: int = POOL_IMAGES,
    train_images: Mapping[str, int] | None = None,
    anchors: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> list[Row]:
    """The rows of the cost table of ``config`` (validated, as load_config returns it)."""
    count = ImageCounts(
        config, pool_images, {**TRAIN_IMAGES, **ASSUMED_TRAIN_IMAGES, **(train_images or {})}
    )
    anchors = ANCHORS if anchors is None else anchors
    runs = all_runs(config)
    specs = {run: run_spec(config, run) for run in runs}
    rows = []

    # cached teacher targets: one store per teacher, dataset and crop setting, with the most
    # views any run reads from it (cgdmae.config.targets_file)
    stores: dict[str, dict[str, Any]] = {}
    for spec in specs.values():
        views = cached_views(config, spec)
        if views is not None:
            held = stores.setdefault(targets_file(config, spec), views)
            held["views"] = max(held["views"], views["views"])
    for _, job in sorted(stores.items()):
        teacher, dataset, views = job["teacher"], job["dataset"], job["views"]
        images = count(dataset) * views
        rows.append(
            Row("teacher targets", f"{teacher} on {dataset} × {views} view{'s' * (views > 1)}", 1, images,
                images * teacher_cost(config, teacher)[0])
        )  # fmt: skip

    curation = config["curation"]
    if curation["subsets"]:
        images = count(curation["dataset"])
        rows.append(
            Row("curation embedding", f"{curation['teacher']} on {curation['dataset']}", 1,
                images, images * teacher_cost(config, curation["teacher"])[0])
        )  # fmt: skip

    flop_cache: dict[str, float] = {}
    for run, spec in specs.items():
        epochs = spec["epochs"] if method_card(spec["method"]).trains else 0
        world = max(spec["gpus"], 1) * spec.get("nodes", 1)
        per_step = spec["batch_size"] * spec["accum_iter"] * world
        images = steps_cap(count(spec["dataset"]) * epochs, spec.get("max_steps"), per_step)
        flops = pretrain_flops(config, spec, flop_cache)
        rows.append(
            Row("pre-training", f"{run} ({spec['method']}, {spec['dataset']}, {epochs} ep)", 1,
                images, images * flops, anchor_rate(spec, anchors))
        )  # fmt: skip

    seeds = len(config["seeds"])
    by_run: dict[str, Row] = {}
    for run, task, dataset in finetune_jobs(config, list(runs)):
        spec = finetune_spec(config, task, dataset)
        per_seed = steps_cap(count(dataset) * spec["epochs"], spec.get("max_steps"),
                             spec["batch_size"] * max(config["finetune"]["gpus"], 1))  # fmt: skip
        flops = finetune_flops(split_recipe(task)[0], dataset, specs[run]["model"], spec,
                               flop_cache)  # fmt: skip
        row = by_run.setdefault(run, Row("fine-tuning", run, 0, 0, 0.0))
        row.jobs += seeds
        row.images += seeds * per_seed
        row.flops += seeds * per_seed * flops
    for run, row in by_run.items():
        tasks = sorted({f"{t}/{d}" for r, t, d in finetune_jobs(config, [run])})
        row.name = f"{run} ({', '.join(tasks)} × {seeds} seed{'s' * (seeds > 1)})"
        rows.append(row)
    return rows


# ---- the table ----------------------------------------------------------------------------------
def _num(value: float, digits: int = 1) -> str:
    """1 decimal (or ``digits``) from 1 up, 3 significant digits below, so tiny runs show."""
    if value == 0 or abs(value) >= 1:
        return f"{value:,.{digits}f}"
    return f"{value:.3g}"


def render(
    rows: Sequence[Row],
    *,
    mfu: float,
    peak_tflops: float,
    header: Sequence[str] = (),
    gpus_per_node: int = 8,
) -> str:
    """The table as Markdown, with the assumptions above it and the totals below it."""
    lines = [*header, ""] if header else []
    lines += [
        "| stage | job(s) | jobs | images × epochs | GFLOP/img | PFLOP | GPU-h at MFU | GPU-h at measured img/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]  # fmt: skip
    for r in rows:
        anchor = r.anchor_hours
        anchor_text = (
            f"{_num(anchor)} ({r.anchor_img_per_s:,.0f} img/s)" if anchor is not None else "–"
        )
        lines.append(
            f"| {r.stage} | {r.name} | {r.jobs} | {r.images:,} | {_num(r.gflop_per_image)} | "
            f"{_num(r.flops / 1e15)} | {_num(r.gpu_hours(mfu, peak_tflops))} | {anchor_text} |"
        )
    total_flops = sum(r.flops for r in rows)
    hours = sum(r.gpu_hours(mfu, peak_tflops) for r in rows)
    stages = dict.fromkeys(r.stage for r in rows)
    lines.append(
        f"| **total** | | {sum(r.jobs for r in rows)} | {sum(r.images for r in rows):,} | | "
        f"**{_num(total_flops / 1e15)}** | **{_num(hours)}** | |"
    )
    lines += ["", "By stage: " + "; ".join(
        f"{s} {_num(sum(r.gpu_hours(mfu, peak_tflops) for r in rows if r.stage == s))} GPU-h"
        for s in stages
    ) + "."]  # fmt: skip
    lines.append(
        f"Total: **{_num(hours, 0)} GPU-hours** ({_num(total_flops / 1e18, 2)} EFLOP); on one "
        f"{gpus_per_node}-GPU node at perfect scaling **{_num(hours / gpus_per_node / 24)} days**."
    )
    return "\n".join(lines) + "\n"


def header_lines(
    config_path: str,
    pool_images: int,
    train_images: Mapping[str, int],
    mfu: float,
    peak_tflops: float,
    seeds: int,
) -> list[str]:
    assumed = ", ".join(f"{k} {v:,}" for k, v in train_images.items() if k in ASSUMED_TRAIN_IMAGES)
    public = ", ".join(
        f"{k} {v:,}" for k, v in train_images.items() if k not in ASSUMED_TRAIN_IMAGES
    )
    return [
        f"Cost of `snakemake all` for {config_path} (`python -m cgdmae.bench.cost`).",
        "",
        f"- GPU-hours = FLOPs ÷ ({mfu:.0%} MFU × {peak_tflops:,.0f} TFLOP/s dense bf16 peak); "
        "28% is what compiled MAE ViT-B/16 at 224 reached on one H200 (docs/benchmarks.md).",
        "- FLOPs/image: FlopCounterMode on one forward at the configured shapes; a training step "
        "is 3× the trained forward + 1× frozen forwards (EMA/distillation teachers); "
        "teacher targets and curation embeddings are 1× the teacher's image tower.",
        f"- Images: pool {pool_images:,} (curated subsets: their configured count or fraction "
        f"of it); fine-tuning train splits: {public}; assumed (no public split named): "
        f"{assumed or 'none'}; {seeds} fine-tuning seed{'s' * (seeds > 1)}.",
        "- Not counted: evaluation passes, text anchors, k-means, data loading; multi-GPU jobs "
        "are counted in GPU-hours (perfect scaling).",
    ]


def _pairs(values: Sequence[str], option: str) -> dict[str, float]:
    out = {}
    for value in values:
        name, sep, number = value.rpartition("=")
        if not sep or not name:
            raise SystemExit(f"{option} {value!r}: expected NAME=NUMBER")
        out[name] = float(number.replace(",", "").replace("_", ""))
    return out


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a workflow config (config/paper.yaml)")
    parser.add_argument("--schema", default=str(SCHEMA), help="the config schema")
    parser.add_argument(
        "--pool-images", type=int, default=POOL_IMAGES,
        help=f"images in the pre-training pool (default {POOL_IMAGES:,}, Automobile1M scale)",
    )  # fmt: skip
    parser.add_argument(
        "--finetune-images", action="append", default=[], metavar="NAME=COUNT",
        help="train images of a dataset (default: " + ", ".join(
            f"{k} {v:,}" for k, v in {**TRAIN_IMAGES, **ASSUMED_TRAIN_IMAGES}.items()
        ) + "; VAR uses its dataset's, veri776); repeat per dataset",
    )  # fmt: skip
    parser.add_argument("--mfu", type=float, default=MFU, help=f"achieved MFU (default {MFU})")
    parser.add_argument(
        "--peak-tflops", type=float, default=PEAK_TFLOPS,
        help=f"the GPU's dense bf16 peak (default {PEAK_TFLOPS:g}, H100/H200)",
    )  # fmt: skip
    parser.add_argument(
        "--img-per-s-anchor", action="append", default=[], metavar="SHAPE=IMG_PER_S",
        help="a measured img/s per GPU for a run shape, e.g. 'mae base 224x224 p16 dec512x8 "
        "mask0.75 random=4916' (defaults: docs/benchmarks.md's H200 rows)",
    )  # fmt: skip
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--out", help="also write the table as Markdown to this file")
    args = parser.parse_args(argv)

    config = load_config(args.config, args.schema)
    train_images = {**TRAIN_IMAGES, **ASSUMED_TRAIN_IMAGES}
    train_images |= {
        k: int(v) for k, v in _pairs(args.finetune_images, "--finetune-images").items()
    }
    anchors = dict(ANCHORS)
    anchors |= {k: (v, v) for k, v in _pairs(args.img_per_s_anchor, "--img-per-s-anchor").items()}
    torch.manual_seed(0)
    rows = cost_rows(config, args.pool_images, train_images, anchors)
    used = {k: v for k, v in train_images.items() if k in config["datasets"]}
    text = render(
        rows,
        mfu=args.mfu,
        peak_tflops=args.peak_tflops,
        header=header_lines(args.config, args.pool_images, used, args.mfu, args.peak_tflops,
                            len(config["seeds"])),
        gpus_per_node=args.gpus_per_node,
    )  # fmt: skip
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return text


if __name__ == "__main__":
    main()
