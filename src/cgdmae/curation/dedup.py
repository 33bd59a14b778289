"""Near-duplicate detection by cosine similarity (faiss range search on normalised vectors)."""

from __future__ import annotations

import numpy as np


def _neighbours(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """CSR (lims, ids) of the pairs with cosine similarity ≥ ``threshold``."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    lims, _, ids = index.range_search(x, float(threshold))
    return lims, ids


def near_duplicates(x: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of the points to drop: each point whose cosine similarity with an earlier
    kept point reaches ``threshold`` (so of a group of copies, the first one stays)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"curation.dedup_threshold must be in (0, 1], got {threshold}")
    lims, ids = _neighbours(x, threshold)
    drop = np.zeros(len(x), dtype=bool)
    for i in range(len(x)):
        neighbours = ids[lims[i] : lims[i + 1]]
        earlier = neighbours[neighbours < i]
        if len(earlier) and not drop[earlier].all():
            drop[i] = True
    return drop


def duplicate_pairs(x: np.ndarray, threshold: float) -> int:
    """Number of unordered pairs with cosine similarity ≥ ``threshold``."""
    if len(x) < 2:
        return 0
    lims, ids = _neighbours(x, threshold)
    rows = np.repeat(np.arange(len(x)), np.diff(lims).astype(np.int64))
    return int((ids > rows).sum())
