"""Pre-training throughput: img/s, step time and MFU of every method on one model and input.

    python -m cgdmae.bench.pretrain --model base --img 224 --batch 256 --teacher ViT-L-14
    python -m cgdmae.bench.pretrain --model tiny --embed-dim 128 --depth 4 --heads 4 --img 64 \
        --patch 8 --decoder 96 1 4 --batch 64 --teacher-dim 128          # the embedded default

Weights are random (timing only). FLOPs are counted by torch's FlopCounterMode on one forward
pass; a training step is taken as 3× the student's forward plus the online teacher's forward.
For the methods whose forward runs a frozen or EMA encoder itself (person_mae, person_vit,
distilled mae_lite) the count is 3× that whole forward, which over-counts the teacher's share.
Images are per sample: person_vit's two global views count as one image, as in a training epoch.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cgdmae.models import create_mae
from cgdmae.pretrain.methods import with_defaults
from cgdmae.training.engine import bench_step

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def forward_flops(fn, *args) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(*args)
    return float(counter.get_total_flops())


def train_flops_per_image(method, batch, clip_dim: int) -> float:
    """3× the student's forward, plus one teacher forward when the teacher runs online."""
    small = {k: v[:2] for k, v in batch.items()}
    student = (
        {**small, "teacher_embed": torch.zeros(2, clip_dim)} if method.name == "cgd_mae" else small
    )
    flops = 3 * forward_flops(method, student)
    if method.name == "cgd_mae" and method.teacher is not None and "teacher_embed" not in batch:
        flops += forward_flops(method.teacher.encode_image, torch.rand_like(small["image"]))
    return flops / 2


def peak_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((tf * 1e12 for key, tf in PEAK_BF16_TFLOPS.items() if key in name), None)


def seed_method_cases(mae, images: torch.Tensor, patch: int, local_views: int) -> dict:
    """person_mae, person_vit and mae_lite (alone and distilled from a second MAE) on ``images``."""
    import numpy as np

    from cgdmae.models import block_mask

    batch, _, height, width = images.shape
    grid = (height // patch, width // patch)
    local = (max(patch, height // 2 // patch * patch), max(patch, width // 2 // patch * patch))
    rng = np.random.default_rng(0)
    masks = [block_mask(grid, int(0.3 * grid[0] * grid[1]), rng) for _ in range(2 * batch)]
    masked = torch.from_numpy(np.stack(masks))
    return {
        "person_mae": (
            with_defaults("person_mae", mae()),
            {"image": images, "target": images.roll(1, -1), "shift": torch.ones(batch, 2)},
        ),
        f"person_vit {local_views}L": (
            with_defaults("person_vit", mae()),
            {
                "global_views": images[:, None].expand(-1, 2, -1, -1, -1).contiguous(),
                "global_masks": masked.view(batch, 2, *grid),
                "local_views": torch.randn(batch, local_views, 3, *local),
            },
        ),
        "mae_lite": (with_defaults("mae_lite", mae()), {"image": images}),
        "mae_lite distill": (with_defaults("mae_lite", mae(), mae()), {"image": images}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--embed-dim", type=int)
    parser.add_argument("--depth", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--img", type=int, nargs="+", default=[224])
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument(
        "--decoder", type=int, nargs=3, default=[512, 8, 16], metavar=("DIM", "DEPTH", "HEADS")
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--teacher",
        default=None,
        help="open_clip architecture for the online teacher (random weights)",
    )
    parser.add_argument(
        "--teacher-dim", type=int, default=768, help="CLIP embedding dim when no --teacher"
    )
    parser.add_argument("--local-views", type=int, default=2, help="person_vit's local views")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--precision", default="auto")
    parser.add_argument(
        "--methods", nargs="+", help="cases to time, by name or first word (default: all)"
    )
    args = parser.parse_args()
    size = (args.img[0], args.img[-1])
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def mae():
        return create_mae(args.model, img_size=size, patch_size=args.patch, embed_dim=args.embed_dim, depth=args.depth, num_heads=args.heads,
                          decoder_dim=args.decoder[0], decoder_depth=args.decoder[1], decoder_heads=args.decoder[2], norm_pix_loss=True)  # fmt: skip

    teacher = None
    if args.teacher:
        from cgdmae.teacher.clip import random_teacher

        teacher = random_teacher(args.teacher, device)
        clip_dim = teacher.embed_dim
    else:
        clip_dim = args.teacher_dim
    text = F.normalize(torch.randn(90, clip_dim), dim=-1)
    images = torch.randn(args.batch, 3, *size)
    cases = {
        "mae": (with_defaults("mae", mae()), {"image": images}),
        "cgd_mae cached": (
            with_defaults("cgd_mae", mae(), text, None),
            {
                "image": images,
                "teacher_embed": F.normalize(torch.randn(args.batch, clip_dim), dim=-1),
            },
        ),
    }
    if teacher is not None:
        cases["cgd_mae online"] = (
            with_defaults("cgd_mae", mae(), text, teacher),
            {"image": images},
        )
    cases |= seed_method_cases(mae, images, args.patch, args.local_views)
    if args.methods:
        cases = {
            k: v for k, v in cases.items() if k in args.methods or k.split()[0] in args.methods
        }
    peak = peak_flops()
    print(
        f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, model {args.model}, input {size}, batch {args.batch}, teacher {args.teacher}"
    )
    results = {}
    for name, (method, batch) in cases.items():
        flops = train_flops_per_image(method.to("cpu"), batch, clip_dim)
        timing = bench_step(
            method,
            batch,
            steps=args.steps,
            warmup=args.warmup,
            precision=args.precision,
            compile=args.compile,
        )
        mfu = timing["img_per_s"] * flops / peak if peak else None
        results[name] = {**timing, "train_gflops_per_img": flops / 1e9, "mfu": mfu}
        mfu_text = f", MFU {100 * mfu:.1f}%" if mfu is not None else ""
        print(
            f"{name:>15}: {timing['img_per_s']:9.1f} img/s, {timing['step_ms']:8.1f} ms/step, {flops / 1e9:7.2f} GFLOP/img/step{mfu_text}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
