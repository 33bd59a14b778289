"""Curation at scale: hierarchical k-means + balanced sampling on random embeddings.

    python -m cgdmae.bench.curation --n 100000 --dim 768 --levels 1000 100 --threads 2

Prints wall time and peak memory of each stage as JSON. The embeddings are random (the cost of
k-means does not depend on the data), float32 in memory as the curation stage holds them.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import faiss
import numpy as np
import torch

from cgdmae.curation.kmeans import hierarchical_kmeans
from cgdmae.curation.sampling import hierarchical_sample


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--levels", type=int, nargs="+", default=[1000, 100])
    parser.add_argument("--sample-sizes", type=int, nargs="+", default=[50, 5])
    parser.add_argument("--n-iter", type=int, default=50)
    parser.add_argument("--resampling-steps", type=int, nargs="+", default=[10],
                        help="per level, or one number for all")  # fmt: skip
    parser.add_argument("--target", type=float, default=0.25, help="fraction of n to select")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", default="faiss")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    x = np.random.default_rng(0).standard_normal((args.n, args.dim), dtype=np.float32)
    steps = args.resampling_steps[0] if len(args.resampling_steps) == 1 else args.resampling_steps
    start = time.perf_counter()
    hierarchy = hierarchical_kmeans(
        x, args.levels, sample_sizes=args.sample_sizes, n_iter=args.n_iter,
        resampling_steps=steps, backend=args.backend,
    )  # fmt: skip
    kmeans_s = time.perf_counter() - start
    start = time.perf_counter()
    chosen = hierarchical_sample(hierarchy, x, int(args.target * args.n))
    sample_s = time.perf_counter() - start
    print(json.dumps({
        "n": args.n, "dim": args.dim, "levels": args.levels, "threads": args.threads,
        "n_iter": args.n_iter, "resampling_steps": steps,
        "kmeans_seconds": round(kmeans_s, 1), "sampling_seconds": round(sample_s, 2),
        "selected": len(chosen), "peak_rss_gib": round(peak_rss_gib(), 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
