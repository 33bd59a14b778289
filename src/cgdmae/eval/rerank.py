"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), written from the paper.

Needs the full query-gallery, query-query and gallery-gallery distances, i.e. memory in
(num_query + num_gallery)²; it is meant for VeRi/Market-sized test sets.
"""

from __future__ import annotations

import numpy as np


def re_ranking(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """(1 − λ)·Jaccard distance of k-reciprocal neighbour sets + λ·original distance."""
    num_query = len(q_g_dist)
    dist = np.block([[q_q_dist, q_g_dist], [q_g_dist.T, g_g_dist]]).astype(np.float32)
    dist = dist / np.maximum(dist.max(axis=0, keepdims=True), 1e-12)
    n = len(dist)
    rank = np.argsort(dist, axis=1, kind="stable")
    weights = np.zeros_like(dist)
    k1 = min(k1, n - 1)

    def reciprocal(i: int, k: int) -> np.ndarray:
        forward = rank[i, : k + 1]
        backward = rank[forward, : k + 1]
        return forward[np.any(backward == i, axis=1)]

    for i in range(n):
        expansion = reciprocal(i, k1)
        for candidate in expansion:
            extra = reciprocal(int(candidate), int(round(k1 / 2)))
            if len(np.intersect1d(extra, expansion)) > 2 / 3 * len(extra):
                expansion = np.union1d(expansion, extra)
        weight = np.exp(-dist[i, expansion])
        weights[i, expansion] = weight / weight.sum()
    if k2 > 1:  # local query expansion: average the weight vectors of the k2 nearest
        weights = np.stack([weights[rank[i, :k2]].mean(0) for i in range(n)])
    # Jaccard distance of the weight vectors: 1 − Σ min / Σ max, restricted to queries × all
    jaccard = np.zeros((num_query, n), dtype=np.float32)
    for i in range(num_query):
        minimum = np.minimum(weights[i][None, :], weights).sum(1)
        jaccard[i] = 1 - minimum / (2 - minimum)
    final = (1 - lambda_value) * jaccard + lambda_value * dist[:num_query]
    return final[:, num_query:]
