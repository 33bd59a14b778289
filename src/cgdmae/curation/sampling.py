"""Balanced hierarchical sampling (ssl-data-curation) and the random baseline.

At each node, a per-child cap x is found with Σ min(x, |child|) ≤ N < Σ min(x+1, |child|);
the remainder goes as x+1 to randomly chosen children larger than x. Each child then recurses
with its target. At a leaf cluster, a target ≥ its size takes it whole; otherwise ``r`` draws
the target at random and ``c`` takes the points closest to the centroid.
"""

from __future__ import annotations

import numpy as np

from cgdmae.curation.kmeans import Hierarchy

STRATEGIES = ("r", "c")


def balanced_targets(sizes: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Per-cluster counts summing to min(target, Σ sizes), as flat as the sizes allow."""
    sizes = np.asarray(sizes, dtype=np.int64)
    target = min(int(target), int(sizes.sum()))
    if target <= 0:
        return np.zeros_like(sizes)
    low, high = 0, int(sizes.max())  # largest cap x with Σ min(x, s) ≤ target
    while low < high:
        mid = (low + high + 1) // 2
        if np.minimum(sizes, mid).sum() <= target:
            low = mid
        else:
            high = mid - 1
    counts = np.minimum(sizes, low)
    remainder = target - int(counts.sum())
    if remainder:
        larger = np.flatnonzero(sizes > low)
        counts[rng.choice(larger, remainder, replace=False)] += 1
    return counts


def hierarchical_sample(
    hierarchy: Hierarchy,
    embeddings: np.ndarray,
    target: int,
    *,
    strategy: str = "r",
    seed: int = 0,
) -> np.ndarray:
    """Sorted indices of the selected points (exactly min(target, n) of them)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown leaf strategy {strategy!r}; use 'r' (random) or 'c' (closest)")
    if target < 0:
        raise ValueError(f"the sample size must be >= 0, got {target}")
    rng = np.random.default_rng(seed)
    levels = hierarchy.assignments
    n = len(levels[0])
    selected: list[np.ndarray] = []

    def recurse(members: np.ndarray, level: int, want: int) -> None:
        if want <= 0:
            return
        if want >= len(members):
            selected.append(members)
            return
        if level < 0:  # inside a finest cluster: pick points
            if strategy == "r":
                selected.append(rng.choice(members, want, replace=False))
            else:
                cluster = levels[0][members[0]]
                centre = hierarchy.centroids[0][cluster]
                distance = ((embeddings[members] - centre) ** 2).sum(1)
                selected.append(members[np.argsort(distance, kind="stable")[:want]])
            return
        ids, groups = np.unique(levels[level][members], return_inverse=True)
        children = [members[groups == g] for g in range(len(ids))]
        counts = balanced_targets(np.array([len(c) for c in children]), want, rng)
        for child, count in zip(children, counts, strict=True):
            recurse(child, level - 1, int(count))

    recurse(np.arange(n), len(levels) - 1, target)
    return np.sort(np.concatenate(selected)) if selected else np.zeros(0, dtype=np.int64)


def random_sample(n: int, target: int, seed: int = 0) -> np.ndarray:
    """The baseline: ``target`` indices uniformly at random, sorted."""
    if target < 0:
        raise ValueError(f"the sample size must be >= 0, got {target}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, min(target, n), replace=False))
