"""Near-duplicate detection by cosine similarity (faiss range search on normalised vectors).

A pair is a near-duplicate when its cosine similarity is ≥ the threshold. faiss searches in
float32 with a strict >, so it looks for candidates a little below the threshold and each
candidate's similarity is recomputed in float64; exact copies then reach 1.0 and a threshold
of 1.0 removes them.
"""

from __future__ import annotations

import numpy as np

SLACK = 1e-4  # float32 search margin below the threshold for the candidates
TOLERANCE = 1e-9  # float64 rounding allowed when comparing a similarity with the threshold
PAIRS_PER_BLOCK = 1 << 16


def _normalised(x: np.ndarray, dtype) -> np.ndarray:
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _neighbours(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """CSR (lims, ids) of the pairs with cosine similarity ≥ ``threshold`` (self included)."""
    import faiss

    x32 = np.ascontiguousarray(_normalised(x, np.float32))
    index = faiss.IndexFlatIP(x32.shape[1])
    index.add(x32)
    lims, _, ids = index.range_search(x32, float(threshold) - SLACK)
    rows = np.repeat(np.arange(len(x)), np.diff(lims).astype(np.int64))
    x64 = _normalised(x, np.float64)
    keep = np.empty(len(ids), dtype=bool)
    for start in range(0, len(ids), PAIRS_PER_BLOCK):
        r, c = rows[start : start + PAIRS_PER_BLOCK], ids[start : start + PAIRS_PER_BLOCK]
        similarity = np.einsum("ij,ij->i", x64[r], x64[c])
        keep[start : start + PAIRS_PER_BLOCK] = similarity >= threshold - TOLERANCE
    counts = np.bincount(rows[keep], minlength=len(x))
    return np.concatenate([[0], np.cumsum(counts)]), ids[keep]


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
