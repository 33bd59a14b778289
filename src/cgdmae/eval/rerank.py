"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017), written from the paper's equations.

All probes and gallery items form one set of N = num_query + num_gallery points with distance
matrix d (the caller's distance, squared Euclidean in this project). Then:

- d is normalised per row, the probe side: d(p, ·) / max d(p, ·). One positive factor per probe
  leaves each probe's ranking as it was, so λ = 1 returns the original order.
- N(p, k): the k + 1 nearest points of p (p itself first). R(p, k) = {g ∈ N(p, k) : p ∈ N(g, k)},
  the k-reciprocal set (Eq. 4).
- R*(p, k1) = R(p, k1) ∪ R(q, h) for every q ∈ R(p, k1) with |R(q, h) ∩ R(p, k1)| > ⅔·|R(q, h)|,
  h = round(k1 / 2) (Eq. 5). Each candidate set is compared with p's own R(p, k1), not with the
  union as it grows, so the order of the candidates does not matter.
- V(p, g) = exp(−d(p, g)) / Σ_{g' ∈ R*(p)} exp(−d(p, g')) for g ∈ R*(p), else 0 (Eq. 7).
- Local query expansion: V(p) ← mean of V(g) over g ∈ N(p, k2 − 1), p included (Eq. 11); none
  when k2 = 1.
- Jaccard distance d_J(p, g) = 1 − Σ_j min(V(p, j), V(g, j)) / Σ_j max(V(p, j), V(g, j)) (Eq. 10).
- Final distance d*(p, g) = (1 − λ)·d_J(p, g) + λ·d(p, g) (Eq. 12).

Needs the full query-gallery, query-query and gallery-gallery distances, i.e. memory in N²; it is
meant for VeRi/Market-sized test sets. The Jaccard sums run over the columns where V(p) is
non-zero only, as the weights are sparse.
"""

from __future__ import annotations

import numpy as np

RANK_CHUNK = 1024  # rows sorted at a time when building the neighbour lists


def nearest(dist: np.ndarray, k: int) -> np.ndarray:
    """The indices of the ``k`` nearest points of every row, nearest first (ties: lower index)."""
    k = min(k, dist.shape[1])
    return np.concatenate(
        [
            np.argsort(dist[start : start + RANK_CHUNK], axis=1, kind="stable")[:, :k]
            for start in range(0, len(dist), RANK_CHUNK)
        ]
    )


def k_reciprocal(rank: np.ndarray, p: int, k: int) -> np.ndarray:
    """R(p, k): the points among p's k + 1 nearest that have p among their own k + 1 nearest."""
    forward = rank[p, : k + 1]
    return forward[np.any(rank[forward, : k + 1] == p, axis=1)]


def expanded_set(rank: np.ndarray, p: int, k1: int) -> np.ndarray:
    """R*(p, k1), sorted: R(p, k1) plus each R(q, round(k1 / 2)) of a q ∈ R(p, k1) that has more
    than two thirds of its points in R(p, k1)."""
    own = k_reciprocal(rank, p, k1)
    half = int(np.around(k1 / 2))
    parts = [own]
    for q in own:
        candidate = k_reciprocal(rank, int(q), half)
        if np.isin(candidate, own).sum() > 2 / 3 * len(candidate):
            parts.append(candidate)
    return np.unique(np.concatenate(parts))


def re_ranking(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """The re-ranked query × gallery distances: (1 − λ)·Jaccard + λ·row-normalised original."""
    if k1 < 1 or k2 < 1:
        raise ValueError(f"re-ranking needs k1 >= 1 and k2 >= 1, got k1={k1}, k2={k2}")
    if not 0 <= lambda_value <= 1:
        raise ValueError(f"re-ranking needs 0 <= lambda_value <= 1, got {lambda_value}")
    num_query = len(q_g_dist)
    dist = np.block([[q_q_dist, q_g_dist], [q_g_dist.T, g_g_dist]]).astype(np.float32)
    dist /= np.maximum(dist.max(axis=1, keepdims=True), np.finfo(np.float32).tiny)
    n = len(dist)
    rank = nearest(dist, max(k1, k2) + 1)

    weights = np.zeros_like(dist)
    for p in range(n):
        members = expanded_set(rank, p, k1)
        kernel = np.exp(-dist[p, members].astype(np.float64))
        weights[p, members] = kernel / kernel.sum()
    if k2 > 1:
        weights = np.stack([weights[rank[p, :k2]].mean(axis=0) for p in range(n)])

    totals = weights.sum(axis=1)
    jaccard = np.empty((num_query, n), dtype=np.float32)
    for p in range(num_query):
        support = np.flatnonzero(weights[p])
        mine, theirs = weights[p, support], weights[:, support]
        shared = np.minimum(mine, theirs).sum(axis=1)
        # Σ max = Σ V(p) + Σ V(g) − Σ min over all columns (V(g) outside the support included)
        union = totals[p] + totals - shared
        jaccard[p] = 1 - shared / union
    final = (1 - lambda_value) * jaccard + lambda_value * dist[:num_query]
    return final[:, num_query:]
