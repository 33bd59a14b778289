"""Hierarchical k-means as in facebookresearch/ssl-data-curation (Vo et al. 2024).

Level 1 clusters the embeddings, level l clusters the centroids of level l−1. Each level runs
k-means++ initialisation, Lloyd iterations, then resampling steps: the ``sample_size`` points
closest to each centroid are re-clustered and every point is reassigned, which pulls the
centroids away from dense regions and spreads them over the data. Lloyd iterations run on
faiss (CPU) or torch (CPU or GPU) behind :func:`lloyd`; the initialisation and the resampling
are shared, so both backends follow the same algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

BACKENDS = ("faiss", "torch")
CHUNK = 8192  # rows per distance block, so n × k distances never sit in memory at once


def nearest_centroid(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, squared distance) of each row's closest centroid, in chunks of rows."""
    index, distance = [], []
    c_norm = (centroids**2).sum(1)
    for start in range(0, len(x), CHUNK):
        block = x[start : start + CHUNK]
        d = (block**2).sum(1, keepdim=True) - 2 * block @ centroids.T + c_norm
        value, arg = d.min(1)
        index.append(arg)
        distance.append(value.clamp_(min=0))
    return torch.cat(index), torch.cat(distance)


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Arthur & Vassilvitskii's seeding: each next centre drawn ∝ squared distance."""
    first = int(torch.randint(len(x), (1,), generator=generator))
    centroids = [x[first]]
    _, closest = nearest_centroid(x, x[first : first + 1])
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than k: draw uniformly among the rest
            pick = int(torch.randint(len(x), (1,), generator=generator))
        else:
            pick = int(torch.multinomial(closest / total, 1, generator=generator))
        centroids.append(x[pick])
        _, new = nearest_centroid(x, x[pick : pick + 1])
        closest = torch.minimum(closest, new)
    return torch.stack(centroids)


def lloyd(x: torch.Tensor, centroids: torch.Tensor, n_iter: int, backend: str) -> torch.Tensor:
    """Lloyd iterations from the given centroids; an emptied cluster keeps its centroid."""
    if backend == "faiss":
        import faiss

        data = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)
        km = faiss.Kmeans(data.shape[1], len(centroids), niter=n_iter, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=10**9)  # fmt: skip
        km.train(data, init_centroids=np.ascontiguousarray(centroids.cpu().numpy(), np.float32))
        return torch.from_numpy(km.centroids).to(x.device)
    centroids = centroids.clone()
    for _ in range(n_iter):
        assign, _ = nearest_centroid(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=len(centroids)).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids


def closest_per_cluster(
    assign: torch.Tensor, distance: torch.Tensor, sample_size: int
) -> torch.Tensor:
    """Indices of the ``sample_size`` points nearest their centroid in every cluster."""
    a, d = assign.cpu().numpy(), distance.cpu().numpy()
    order = np.lexsort((d, a))  # by cluster, then by distance
    sorted_clusters = a[order]
    starts = np.searchsorted(sorted_clusters, sorted_clusters, side="left")
    rank = np.arange(len(order)) - starts
    return torch.from_numpy(order[rank < sample_size]).to(assign.device)


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    n_iter: int = 50,
    resampling_steps: int = 10,
    sample_size: int = 10,
    seed: int = 0,
    backend: str = "faiss",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One level: (centroids [k, d], assignment [n])."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown k-means backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if not 1 <= k <= len(x):
        raise ValueError(f"k-means with k={k} needs between 1 and {len(x)} clusters (the points)")
    generator = torch.Generator().manual_seed(seed)
    centroids = lloyd(x, kmeans_plus_plus(x, k, generator), n_iter, backend)
    assign, distance = nearest_centroid(x, centroids)
    for _ in range(resampling_steps):
        sample = closest_per_cluster(assign, distance, sample_size)
        if len(sample) >= k:
            centroids = lloyd(x[sample], centroids, n_iter, backend)
        assign, distance = nearest_centroid(x, centroids)
    return centroids, assign


@dataclass
class Hierarchy:
    """Cluster ids of every point at every level (level 0 = the finest) and the centroids."""

    assignments: list[np.ndarray]  # per level, [n] cluster id of each original point
    centroids: list[np.ndarray]  # per level, [k_level, d]


def hierarchical_kmeans(
    x: np.ndarray | torch.Tensor,
    levels: list[int],
    *,
    sample_sizes: list[int],
    n_iter: int = 50,
    resampling_steps: int = 10,
    seed: int = 0,
    backend: str = "faiss",
) -> Hierarchy:
    """k-means on the points with ``levels[0]`` clusters, then on the centroids, and so on."""
    if len(sample_sizes) != len(levels):
        raise ValueError(
            f"curation.sample_sizes has {len(sample_sizes)} entries, levels has {len(levels)}"
        )
    points = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    assignments, centroids = [], []
    mapping = torch.arange(len(points))
    for level, (k, sample_size) in enumerate(zip(levels, sample_sizes, strict=True)):
        if k > len(points):
            raise ValueError(
                f"curation.levels[{level}] = {k} clusters, but level {level} has only "
                f"{len(points)} points to cluster"
            )
        c, assign = kmeans(points, k, n_iter=n_iter, resampling_steps=resampling_steps,
                           sample_size=sample_size, seed=seed + level, backend=backend)  # fmt: skip
        mapping = assign[mapping]  # original point -> its cluster at this level
        assignments.append(mapping.numpy().copy())
        centroids.append(c.numpy())
        points = c
    return Hierarchy(assignments, centroids)
