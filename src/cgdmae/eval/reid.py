"""ReID metrics with the standard conventions (TransReID ``utils/metrics.py``, fast-reid).

Per query, gallery items with the same id AND the same camera are removed; a query with no
remaining match is skipped. CMC is the cumulative hit indicator clipped at 1, AP is
non-interpolated (mean precision at the hits), mINP is num_rel / rank of the last hit. Ties
in distance are broken by gallery index (stable sort). The work is vectorised per chunk of
queries, so that ``evaluate_features`` never holds the whole query × gallery matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def compute_distmat(query: ArrayLike, gallery: ArrayLike) -> np.ndarray:
    """Squared Euclidean distance of L2-normalised features (= 2 − 2·cos), float32."""
    q = torch.nn.functional.normalize(torch.as_tensor(_numpy(query)).float(), dim=1)
    g = torch.nn.functional.normalize(torch.as_tensor(_numpy(gallery)).float(), dim=1)
    return (2 - 2 * q @ g.T).clamp_(min=0).numpy()


class _Accumulator:
    """Sums of per-query AP, INP and CMC over chunks of queries."""

    def __init__(self, max_rank: int):
        self.max_rank = max_rank
        self.ap = self.inp = 0.0
        self.cmc = np.zeros(max_rank)
        self.valid = 0

    def add(
        self,
        distmat: np.ndarray,
        q_pids: np.ndarray,
        g_pids: np.ndarray,
        q_camids: np.ndarray,
        g_camids: np.ndarray,
        camera_filter: bool,
    ) -> None:
        order = np.argsort(distmat, axis=1, kind="stable")
        matches = g_pids[order] == q_pids[:, None]
        keep = np.ones_like(matches)
        if camera_filter:
            keep = ~(matches & (g_camids[order] == q_camids[:, None]))
        hits = matches & keep
        num_rel = hits.sum(1)
        valid = num_rel > 0
        hits, keep, num_rel = hits[valid], keep[valid], num_rel[valid]
        # rank of each kept item among the kept items (1-based); removed items do not count
        kept_rank = np.cumsum(keep, axis=1)
        cum_hits = np.cumsum(hits, axis=1)
        precision_at_hits = np.where(hits, cum_hits / np.maximum(kept_rank, 1), 0.0)
        self.ap += float((precision_at_hits.sum(1) / num_rel).sum())
        last_hit_rank = np.where(hits, kept_rank, 0).max(1)
        self.inp += float((num_rel / last_hit_rank).sum())
        # CMC over the kept list: the first hit's kept rank
        first_hit = np.where(hits, kept_rank, np.iinfo(np.int64).max).min(1)
        ranks = np.arange(1, self.max_rank + 1)
        self.cmc += (first_hit[:, None] <= ranks[None, :]).sum(0)
        self.valid += int(valid.sum())

    def result(self) -> dict[str, Any]:
        if self.valid == 0:
            raise ValueError(
                "no query has a valid match in the gallery (after removing same id and camera)"
            )
        cmc = self.cmc / self.valid
        return {
            "mAP": self.ap / self.valid,
            "mINP": self.inp / self.valid,
            "cmc": cmc,
            "rank1": float(cmc[0]),
            "rank5": float(cmc[min(4, len(cmc) - 1)]),
            "rank10": float(cmc[min(9, len(cmc) - 1)]),
            "num_valid_queries": self.valid,
        }


def _evaluate_in_chunks(
    distances: Callable[[slice], np.ndarray],
    num_queries: int,
    ids: tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike],
    max_rank: int,
    camera_filter: bool,
    chunk_size: int,
) -> dict[str, Any]:
    """Accumulate the metrics over query chunks; ``distances(rows)`` gives a chunk's rows."""
    q_pids, g_pids, q_camids, g_camids = map(_numpy, ids)
    acc = _Accumulator(max_rank)
    for start in range(0, num_queries, chunk_size):
        rows = slice(start, start + chunk_size)
        acc.add(distances(rows), q_pids[rows], g_pids, q_camids[rows], g_camids, camera_filter)
    return acc.result()


def evaluate(
    distmat: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
    camera_filter: bool = True,
    chunk_size: int = 1024,
) -> dict[str, Any]:
    """mAP, mINP, CMC (length ``max_rank``; ranks past the gallery size repeat the last
    value) and Rank-1/5/10, as fractions, averaged over queries with a valid match."""
    distmat = _numpy(distmat)
    ids = (q_pids, g_pids, q_camids, g_camids)
    return _evaluate_in_chunks(
        lambda rows: distmat[rows], len(distmat), ids, max_rank, camera_filter, chunk_size
    )


def evaluate_features(
    q_feats: ArrayLike,
    g_feats: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
    camera_filter: bool = True,
    chunk_size: int = 256,
) -> dict[str, Any]:
    """:func:`evaluate` on features, computing the distances one chunk of queries at a time
    (a 10k × 50k gallery then needs ``chunk_size`` × 50k floats, not 2 GB)."""
    q_feats = _numpy(q_feats)
    ids = (q_pids, g_pids, q_camids, g_camids)
    return _evaluate_in_chunks(
        lambda rows: compute_distmat(q_feats[rows], g_feats),
        len(q_feats),
        ids,
        max_rank,
        camera_filter,
        chunk_size,
    )


def vehicleid_protocol(
    features: ArrayLike, pids: ArrayLike, repeats: int = 10, seed: int = 0
) -> dict[str, float]:
    """VehicleID: per id one random image to the gallery, the rest are queries; no camera
    filter; Rank-1, Rank-5 and mAP averaged over ``repeats`` draws (seeded)."""
    features, pids = _numpy(features), _numpy(pids)
    by_id: dict[int, list[int]] = {}
    for index, pid in enumerate(pids.tolist()):
        by_id.setdefault(pid, []).append(index)
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(repeats):
        gallery, query = [], []
        for pid in sorted(by_id):
            items = by_id[pid]
            pick = int(rng.integers(len(items)))
            gallery.append(items[pick])
            query += [i for k, i in enumerate(items) if k != pick]
        cams = np.zeros(len(pids), dtype=np.int64)
        results.append(
            evaluate_features(
                features[query],
                features[gallery],
                pids[query],
                pids[gallery],
                cams[query],
                cams[gallery],
                camera_filter=False,
            )  # fmt: skip
        )
    return {k: float(np.mean([r[k] for r in results])) for k in ("rank1", "rank5", "mAP")}
