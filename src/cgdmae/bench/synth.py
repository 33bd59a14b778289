"""Benchmark the synthetic world: images per second on one core, render only and with JPEG.

python -m cgdmae.bench.synth --size 64 --n 2000
"""

from __future__ import annotations

import argparse
import io
import os
import time

import numpy as np

from cgdmae.data.synth.world import SynthWorld


def measure(size: tuple[int, int], n: int, encode: bool, seed: int = 0) -> float:
    world = SynthWorld(seed)
    rng = np.random.default_rng(seed)
    identities = world.sample_identities(64, rng)
    world.render(identities[0], 0, rng, size)  # warm the background cache
    start = time.perf_counter()
    for k in range(n):
        render = world.render(identities[k % len(identities)], k % len(world.cameras), rng, size)
        if encode:
            render.image.save(io.BytesIO(), format="JPEG", quality=90)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[64], help="height [width]")
    parser.add_argument("--n", type=int, default=2000, help="images to render")
    args = parser.parse_args()
    size = (args.size[0], args.size[-1])
    print(f"synthetic world, {size[0]}x{size[1]}, {args.n} images, pid {os.getpid()} (one core)")
    for encode in (False, True):
        label = "render + JPEG" if encode else "render"
        print(f"{label:>14}: {measure(size, args.n, encode):8.0f} img/s")


if __name__ == "__main__":
    main()
