"""Teacher-target caching throughput: the whole loop against the teacher's forward alone.

    python -m cgdmae.bench.teacher_targets --teacher ViT-L-14 --images 512 --views 4

``cache_teacher_targets`` decodes, crops and resizes every view in the main process and feeds
the teacher in batches (under bf16 autocast on a GPU). The gap between its views/s and the
teacher's forward alone (same batch size, in fp32 and in bf16) is what a data path with
workers, or shards, can win back. Images are random JPEGs written to a temp folder; weights
are random (timing only).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cgdmae.teacher.clip import random_teacher
from cgdmae.teacher.targets import cache_teacher_targets


def write_images(folder: Path, n: int, size: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for k in range(n):
        path = folder / f"{k:06d}.jpg"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
            path, quality=90
        )
        paths.append(path)
    return paths


def forward_rate(teacher, batch: int, img: int, steps: int, bf16: bool) -> float:
    device = teacher.mean.device
    images = torch.rand(batch, 3, img, img, device=device)
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        for _ in range(2):
            teacher.encode_image(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            teacher.encode_image(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="ViT-L-14")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=256, help="stored image side, px")
    parser.add_argument("--img", type=int, default=224, help="the student's crop size")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = random_teacher(args.teacher, device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.images, args.size)
        start = time.perf_counter()
        cache_teacher_targets(teacher, paths, Path(tmp) / "targets.pt", views=args.views,
                              img_size=(args.img, args.img), scale=(0.2, 1.0), seed=0,
                              batch_size=args.batch)  # fmt: skip
        loop = args.images * args.views / (time.perf_counter() - start)
    fp32 = forward_rate(teacher, args.batch, args.img, args.steps, bf16=False)
    bf16 = forward_rate(teacher, args.batch, args.img, args.steps, bf16=True)
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "teacher": args.teacher, "loop_views_per_s": loop,
              "forward_fp32_views_per_s": fp32, "forward_bf16_views_per_s": bf16,
              "loop_share_of_bf16_forward": loop / bf16}  # fmt: skip
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
