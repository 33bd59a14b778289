"""Hierarchical k-means as in facebookresearch/ssl-data-curation (Vo et al. 2024).

Level 1 clusters the embeddings, level l clusters the centroids of level l−1. Each level:

1. k-means on all its points: greedy k-means++ initialisation, then ``n_iter`` Lloyd
   iterations;
2. ``resampling_steps`` times: take the ``sample_size`` points closest to each centroid (all of
   a smaller cluster), run k-means on that sample alone from a *fresh* k-means++ start, and
   reassign every point to the new centroids.

The sample holds about as many points of each cluster, whatever the cluster's density, so each
step's k-means sees a flatter distribution than the data: centroids leave the dense regions
and the tail gets clusters of its own. The level's centroids are those of the last step.

The backends differ only in the nearest-centroid search inside the Lloyd iterations: faiss
(CPU) or torch (the device of the points). The initialisation, the centroid update, and the
resampling are shared, so both follow the same algorithm; a cluster that loses all its points
keeps its centroid in both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

BACKENDS = ("faiss", "torch")
CHUNK = 8192  # rows per distance block, so n × k distances never sit in memory at once


def squared_distances(block: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """[len(block), len(centroids)] squared Euclidean distances, clamped at 0."""
    d = (block**2).sum(1, keepdim=True) - 2 * block @ centroids.T + (centroids**2).sum(1)
    return d.clamp_(min=0)


def nearest_centroid(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, squared distance) of each row's closest centroid, in chunks of rows."""
    index, distance = [], []
    for start in range(0, len(x), CHUNK):
        value, arg = squared_distances(x[start : start + CHUNK], centroids).min(1)
        index.append(arg)
        distance.append(value)
    return torch.cat(index), torch.cat(distance)


def _distances_to(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[len(rows), len(x)] float64 squared distances from the points x[rows] to every point."""
    centres = x[rows]
    blocks = [squared_distances(x[s : s + CHUNK], centres) for s in range(0, len(x), CHUNK)]
    return torch.cat(blocks).T.double()


def kmeans_plus_plus(
    x: torch.Tensor, k: int, generator: torch.Generator, n_trials: int | None = None
) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, greedy as in scikit-learn and
    ssl-data-curation): each next centre is, of ``n_trials`` (default 2 + ⌊ln k⌋) candidates
    drawn ∝ squared distance to the closest centre so far, the one that leaves the smallest
    potential (sum of squared distances to the closest centre)."""
    trials = n_trials if n_trials is not None else 2 + int(math.log(k))
    first = torch.randint(len(x), (1,), generator=generator, device=generator.device)
    chosen = [int(first)]
    closest = _distances_to(x, first.to(x.device))[0]
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # every point coincides with a centre (fewer distinct points than k)
            candidates = torch.randint(len(x), (trials,), generator=generator,
                                       device=generator.device)  # fmt: skip
        else:
            weights = (closest / total).to(generator.device)
            candidates = torch.multinomial(weights, trials, replacement=True, generator=generator)
        candidates = candidates.to(x.device)
        potentials = torch.minimum(_distances_to(x, candidates), closest)
        best = int(potentials.sum(1).argmin())
        chosen.append(int(candidates[best]))
        closest = potentials[best]
    return x[torch.tensor(chosen, device=x.device)].clone()


def potential(x: torch.Tensor, centroids: torch.Tensor) -> float:
    """The k-means objective: sum of squared distances to the closest centroid."""
    return float(nearest_centroid(x, centroids)[1].double().sum())


class _Assigner:
    """Nearest-centroid search of one backend, for the same points over many iterations."""

    def __init__(self, x: torch.Tensor, backend: str):
        if backend not in BACKENDS:
            raise ValueError(
                f"unknown k-means backend {backend!r}; use one of {', '.join(BACKENDS)}"
            )
        self.x, self.backend = x, backend
        if backend == "faiss":
            self.data = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)

    def __call__(self, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.backend == "torch":
            return nearest_centroid(self.x, centroids)
        import faiss

        c = np.ascontiguousarray(centroids.cpu().numpy(), dtype=np.float32)
        distance, index = faiss.knn(self.data, c, 1)
        as_tensor = lambda a: torch.from_numpy(a[:, 0]).to(self.x.device)  # noqa: E731
        return as_tensor(index), as_tensor(distance).clamp_(min=0)


def update_centroids(
    x: torch.Tensor, assign: torch.Tensor, centroids: torch.Tensor
) -> torch.Tensor:
    """Mean of each cluster's points (summed in float64); an empty cluster keeps its centroid."""
    sums = torch.zeros(centroids.shape, dtype=torch.float64, device=x.device)
    for start in range(0, len(x), CHUNK):
        sums.index_add_(0, assign[start : start + CHUNK], x[start : start + CHUNK].double())
    counts = torch.bincount(assign, minlength=len(centroids)).unsqueeze(1)
    means = (sums / counts.clamp(min=1)).to(centroids.dtype)
    return torch.where(counts > 0, means, centroids)


def lloyd(x: torch.Tensor, centroids: torch.Tensor, n_iter: int, backend: str) -> torch.Tensor:
    """``n_iter`` Lloyd iterations from the given centroids; an emptied cluster keeps its
    centroid (faiss's own k-means would move it into the data, so only its search is used)."""
    assign_to = _Assigner(x, backend)
    centroids = centroids.clone()
    for _ in range(n_iter):
        assign, _ = assign_to(centroids)
        centroids = update_centroids(x, assign, centroids)
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
    return torch.from_numpy(np.sort(order[rank < sample_size])).to(assign.device)


@dataclass
class Level:
    """One level's k-means: the final centroids and assignment, and the centroids of the
    k-means on all points, before any resampling step."""

    centroids: torch.Tensor
    assign: torch.Tensor
    initial: torch.Tensor


def kmeans_level(
    x: torch.Tensor,
    k: int,
    *,
    n_iter: int = 50,
    resampling_steps: int = 10,
    sample_size: int = 10,
    seed: int = 0,
    backend: str = "faiss",
) -> Level:
    """One level: k-means on all points, then ``resampling_steps`` resampling steps."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown k-means backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if not 1 <= k <= len(x):
        raise ValueError(f"k-means with k={k} needs between 1 and {len(x)} clusters (the points)")
    if resampling_steps < 0 or sample_size < 1:
        raise ValueError(
            f"resampling needs steps >= 0 and a sample size >= 1, got {resampling_steps} "
            f"and {sample_size}"
        )
    generator = torch.Generator(device=x.device).manual_seed(seed)
    centroids = lloyd(x, kmeans_plus_plus(x, k, generator), n_iter, backend)
    initial = centroids
    assign, distance = nearest_centroid(x, centroids)
    for _ in range(resampling_steps):
        sample = x[closest_per_cluster(assign, distance, sample_size)]
        if len(sample) < k:  # too many empty clusters to draw k points: keep the centroids
            break
        centroids = lloyd(sample, kmeans_plus_plus(sample, k, generator), n_iter, backend)
        assign, distance = nearest_centroid(x, centroids)
    return Level(centroids, assign, initial)


def kmeans(x: torch.Tensor, k: int, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """One level: (centroids [k, d], assignment [n]); the options are :func:`kmeans_level`'s."""
    level = kmeans_level(x, k, **kwargs)
    return level.centroids, level.assign


@dataclass
class Hierarchy:
    """Cluster ids of every point at every level (level 0 = the finest) and the centroids."""

    assignments: list[np.ndarray]  # per level, [n] cluster id of each original point
    centroids: list[np.ndarray]  # per level, [k_level, d]
    # per level, [k_level, d]: the centroids of the k-means on all points, before resampling
    initial_centroids: list[np.ndarray] = field(default_factory=list)


def per_level(value: int | Sequence[int], n_levels: int, name: str) -> list[int]:
    """A per-level setting: a list with one entry per level, or one number for every level."""
    if isinstance(value, int | np.integer):
        return [int(value)] * n_levels
    values = [int(v) for v in value]
    if len(values) != n_levels:
        raise ValueError(
            f"curation.{name} has {len(values)} entries, levels has {n_levels}; give one per "
            "level or a single number for all"
        )
    return values


def hierarchical_kmeans(
    x: np.ndarray | torch.Tensor,
    levels: list[int],
    *,
    sample_sizes: int | Sequence[int],
    n_iter: int = 50,
    resampling_steps: int | Sequence[int] = 10,
    seed: int = 0,
    backend: str = "faiss",
    device: str | None = None,
) -> Hierarchy:
    """k-means on the points with ``levels[0]`` clusters, then on the centroids, and so on.

    ``sample_sizes`` and ``resampling_steps`` are per level (a list) or the same for all (a
    number), as in the reference configs. The torch backend computes on ``device``, by default
    the GPU when there is one; faiss on the CPU.
    """
    sizes = per_level(sample_sizes, len(levels), "sample_sizes")
    steps = per_level(resampling_steps, len(levels), "resampling_steps")
    if device is None:
        device = "cuda" if backend == "torch" and torch.cuda.is_available() else "cpu"
    points = torch.as_tensor(np.asarray(x), dtype=torch.float32).to(device)
    hierarchy = Hierarchy([], [], [])
    mapping = torch.arange(len(points))
    for level, (k, sample_size, n_steps) in enumerate(zip(levels, sizes, steps, strict=True)):
        if k > len(points):
            raise ValueError(
                f"curation.levels[{level}] = {k} clusters, but level {level} has only "
                f"{len(points)} points to cluster"
            )
        result = kmeans_level(points, k, n_iter=n_iter, resampling_steps=n_steps,
                              sample_size=sample_size, seed=seed + level, backend=backend)  # fmt: skip
        mapping = result.assign.cpu()[mapping]  # original point -> its cluster at this level
        hierarchy.assignments.append(mapping.numpy().copy())
        hierarchy.centroids.append(result.centroids.cpu().numpy())
        hierarchy.initial_centroids.append(result.initial.cpu().numpy())
        points = result.centroids
    return hierarchy
