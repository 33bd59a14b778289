"""The pre-training data path on one core: decode, crop, flip, normalise, per image.

    python -m cgdmae.bench.datapath --images 256 --width 500 --height 375 --img 224

Times ``PretrainDataset.__getitem__`` (what each loader worker runs) over random JPEGs of the
given size, in one process with one torch thread, for MAE's fresh RandomResizedCrop and for a
crop read from cached teacher targets; and says how many cores keep a GPU fed at ``--target``
img/s (5,500: CGD-MAE ViT-B/16 on one H100, docs/benchmarks.md). Photos of vehicles crawled
for a pool are typically 300-600 px wide, VeRi-776's crops about 200-400 px. The fresh-crop
loop runs again over the same images packed into tar shards (``cgdmae.data.shards``), to show
what reading through a shard costs per image, and with ``decode_draft`` (each JPEG decoded at
the largest 1/2^k at which its crop still spans the output).
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

from cgdmae.data import read_pool
from cgdmae.data.shards import pack_pool
from cgdmae.pretrain.data import PretrainDataset, TeacherTargets


def write_photos(folder: Path, n: int, width: int, height: int) -> list[Path]:
    """JPEGs (quality 90) with a photo's mix of smooth regions and texture: a random coarse
    image upsampled bicubically, plus mild noise (pure noise decodes far slower than photos)."""
    rng = np.random.default_rng(0)
    paths = []
    for k in range(n):
        coarse = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.int16)
        noisy = np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"{k:06d}.jpg")
        Image.fromarray(noisy).save(paths[-1], quality=90)
    return paths


def sharded_copy(paths: list[Path], tmp: Path, shards: int = 4) -> list[Path]:
    """The same images packed into tar shards, as paths through the shards."""
    pool = tmp / "pool"
    (pool / "images").mkdir(parents=True)
    rows = ["image,caption"]
    for path in paths:
        (pool / "images" / path.name).symlink_to(path)
        rows.append(f"images/{path.name},a car.")
    (pool / "captions.csv").write_text("\n".join(rows) + "\n")
    pack_pool(pool, tmp / "sharded", shards)
    return [record.path for record in read_pool(tmp / "sharded")]


def rate(dataset: PretrainDataset, passes: int) -> float:
    """Items per second over ``passes`` epochs of ``dataset`` (after one warm-up item)."""
    dataset[0]
    start, count = time.perf_counter(), 0
    for epoch in range(passes):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            dataset[index]
            count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--img", type=int, default=224)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--target", type=float, default=5500.0, help="img/s a GPU consumes")
    args = p.parse_args()
    torch.set_num_threads(1)
    size = (args.img, args.img)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_photos(Path(tmp), args.images, args.width, args.height)
        fresh = rate(PretrainDataset(paths, img_size=size), args.passes)
        draft = rate(PretrainDataset(paths, img_size=size, draft=True), args.passes)
        sharded = rate(PretrainDataset(sharded_copy(paths, Path(tmp)), img_size=size), args.passes)
        n = len(paths)
        crops = torch.tensor([[0, 0, args.height, args.width, 1]] * n, dtype=torch.int32)
        cached = TeacherTargets([str(q) for q in paths], crops.view(n, 1, 5),
                                torch.zeros(n, 1, 8, dtype=torch.float16))  # fmt: skip
        views = rate(PretrainDataset(paths, img_size=size, targets=cached), args.passes)
    print(json.dumps({
        "jpeg": f"{args.width}x{args.height}",
        "img": args.img,
        "fresh_crop_img_per_s_per_core": round(fresh, 1),
        "cached_view_img_per_s_per_core": round(views, 1),
        "fresh_crop_from_shards_img_per_s_per_core": round(sharded, 1),
        "fresh_crop_decode_draft_img_per_s_per_core": round(draft, 1),
        "cores_for_target": round(args.target / min(fresh, views), 1),
        "target_img_per_s": args.target,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
