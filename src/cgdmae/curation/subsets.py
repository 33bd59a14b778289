"""Pre-training subsets by name: ``full``, ``curated_<N>``, ``random_dedup_<N>``, ``random_<N>``.

N is a count (``curated_1000``) or a fraction of the pool (``random_0.25``). A curated subset
is drawn by balanced hierarchical sampling from the pool after near-duplicate removal. The two
baselines of the same size separate its two effects: ``random_dedup_<N>`` draws uniformly from
the deduplicated pool (dedup without balancing), ``random_<N>`` from the whole pool, duplicates
included (neither).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cgdmae.curation.dedup import duplicate_pairs, near_duplicates
from cgdmae.curation.kmeans import Hierarchy, hierarchical_kmeans, nearest_centroid
from cgdmae.curation.sampling import hierarchical_sample, random_sample
from cgdmae.data.records import PoolRecord
from cgdmae.files import atomic_write, write_text

KINDS = ("curated", "random_dedup", "random")
SUBSET_NAME = re.compile(r"^(curated|random_dedup|random)_(\d+|0?\.\d+|1\.0)$")
TAIL_FRACTION = 0.25  # the tail: this share of the pool's finest clusters, the smallest ones


def parse_subset(name: str) -> tuple[str, float | None]:
    """('full', None), ('curated', 1000), ('random_dedup', 1000) or ('random', 0.25)."""
    if name == "full":
        return "full", None
    match = SUBSET_NAME.match(name)
    if not match:
        raise ValueError(
            f"subset {name!r}: expected full, curated_<N>, random_dedup_<N> or random_<N> with "
            "N a count (e.g. curated_1000) or a fraction in (0, 1] (e.g. random_0.25)"
        )
    amount = match.group(2)
    return match.group(1), float(amount) if "." in amount else int(amount)


def subset_size(amount: float, n: int) -> int:
    return int(round(amount * n)) if isinstance(amount, float) else int(amount)


def load_embeddings(path: str | Path, n_images: int) -> np.ndarray:
    """The pool's embeddings; a missing, unreadable or mis-sized file is named with the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no embeddings; run the curation_embed rule first")
    try:
        embeddings = np.load(path)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(
            f"{path}: not a readable .npy ({exc}); delete it and re-run curation_embed"
        ) from None
    if embeddings.ndim != 2 or len(embeddings) != n_images:
        raise ValueError(
            f"{path}: shape {embeddings.shape}, expected {n_images} rows (one per pool image); "
            "delete it and re-run curation_embed"
        )
    return embeddings


def attribute_entropy(records: Sequence[PoolRecord]) -> float:
    """Shannon entropy (nats) of the colour × type distribution."""
    counts = np.array(
        list(
            Counter((r.attributes.get("color"), r.attributes.get("type")) for r in records).values()
        ),
        dtype=float,
    )
    p = counts / counts.sum() if counts.sum() else counts
    return float(-(p * np.log(p)).sum()) if len(p) else 0.0


def cluster_balance(finest: np.ndarray, pool_sizes: np.ndarray, chosen: np.ndarray) -> dict:
    """How evenly ``chosen`` covers the finest clusters: the share of its images in the tail
    (the smallest quarter of the pool's clusters, by size after dedup) and the share of its
    most represented cluster. ``finest``: each pool image's finest cluster."""
    n_tail = max(1, int(round(TAIL_FRACTION * len(pool_sizes))))
    tail = np.zeros(len(pool_sizes), bool)
    tail[np.argsort(pool_sizes, kind="stable")[:n_tail]] = True
    counts = np.bincount(finest[chosen], minlength=len(pool_sizes))
    total = max(int(counts.sum()), 1)
    return {
        "tail_clusters": n_tail,
        "tail_share": float(counts[tail].sum() / total),
        "largest_cluster_share": float(counts.max() / total) if len(chosen) else 0.0,
    }


def resampling_projection(
    x: np.ndarray, initial: np.ndarray, final: np.ndarray, seed: int, n_points: int = 2000
) -> dict[str, Any]:
    """The finest level's centroids before and after the resampling steps, with the size of
    their clusters, on the first two principal axes of the (deduplicated) embeddings; and a
    sample of ``n_points`` points for the background."""
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x[:: max(1, len(x) // 20000)] - mean, full_matrices=False)
    project = lambda a: np.round((a - mean) @ vt[:2].T, 4).tolist()  # noqa: E731
    points = torch.from_numpy(np.ascontiguousarray(x))
    sizes = [
        np.bincount(nearest_centroid(points, torch.from_numpy(c))[0].numpy(), minlength=len(c))
        for c in (initial, final)
    ]
    sample = np.random.default_rng(seed).permutation(len(x))[:n_points]
    return {
        "points": project(x[np.sort(sample)]),
        "before": {"centroids": project(initial), "sizes": sizes[0].tolist()},
        "after": {"centroids": project(final), "sizes": sizes[1].tolist()},
    }


@dataclass
class PoolClusters:
    """What every subset of a pool is sampled from, computed once per pool: the images that
    did not decode (NaN embedding rows), the near-duplicates dedup removes, the hierarchical
    k-means of the rest, and where resampling moved the finest centroids (for the figure)."""

    broken: np.ndarray  # bool [n]
    drop: np.ndarray  # bool [n]: broken or a near-duplicate
    hierarchy: Hierarchy  # over the kept points, in pool order
    projection: dict[str, Any]  # resampling_projection of the finest level

    def save(self, path: str | Path) -> None:
        """One .npz (no pickle), written atomically."""
        h = self.hierarchy
        arrays = {"broken": self.broken, "drop": self.drop,
                  "projection": np.array(json.dumps(self.projection))}  # fmt: skip
        for level, (a, c, i) in enumerate(zip(h.assignments, h.centroids, h.initial_centroids,
                                              strict=True)):  # fmt: skip
            arrays |= {f"assign{level}": a, f"centroids{level}": c, f"initial{level}": i}
        atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | Path, n_images: int) -> PoolClusters:
        with np.load(path, allow_pickle=False) as f:
            levels = sum(1 for key in f.files if key.startswith("assign"))
            hierarchy = Hierarchy(
                [f[f"assign{k}"] for k in range(levels)],
                [f[f"centroids{k}"] for k in range(levels)],
                [f[f"initial{k}"] for k in range(levels)],
            )
            clusters = cls(f["broken"], f["drop"], hierarchy, json.loads(str(f["projection"])))
        if len(clusters.broken) != n_images:
            raise ValueError(
                f"{path}: clusters of {len(clusters.broken)} images, the pool has {n_images}; "
                "delete it and re-run curation_clusters"
            )
        return clusters


def cluster_pool(embeddings: np.ndarray, cfg: dict[str, Any], seed: int = 0) -> PoolClusters:
    """Dedup and hierarchical k-means of a pool's embeddings: the costly half of curation,
    which every subset shares (``curation.levels`` of 20,000 clusters over a million images
    in the paper config)."""
    x = _points(embeddings)
    broken = np.isnan(embeddings).any(axis=1)
    threshold = cfg["dedup_threshold"]
    drop = near_duplicates(x, threshold) if threshold is not None else np.zeros(len(x), bool)
    drop |= broken
    kept = np.flatnonzero(~drop)
    hierarchy = hierarchical_kmeans(
        x[kept], cfg["levels"], sample_sizes=cfg["sample_sizes"], n_iter=cfg["n_iter"],
        resampling_steps=cfg["resampling_steps"], seed=seed, backend=cfg["backend"],
    )  # fmt: skip
    projection = resampling_projection(
        x[kept], hierarchy.initial_centroids[0], hierarchy.centroids[0], seed
    )
    return PoolClusters(broken, drop, hierarchy, projection)


def _points(embeddings: np.ndarray) -> np.ndarray:
    """float32 embeddings, a NaN row (an image that did not decode, embedded under
    ``data.on_corrupt: skip``) zeroed."""
    x = embeddings.astype(np.float32)
    x[np.isnan(x).any(axis=1)] = 0.0
    return x


def curate(
    name: str,
    records: Sequence[PoolRecord],
    embeddings: np.ndarray,
    cfg: dict[str, Any],
    out_dir: str | Path,
    *,
    seed: int = 0,
    clusters: PoolClusters | None = None,
) -> dict[str, Any]:
    """Write ``manifest.csv``, ``stats.json`` and ``resampling.json`` (the finest centroids
    before and after resampling, see :func:`resampling_projection`) of subset ``name`` into
    ``out_dir``, sampled from the pool's ``clusters`` (computed here when not given)."""
    if len(records) != len(embeddings):
        raise ValueError(
            f"the pool has {len(records)} images but the embeddings have {len(embeddings)} rows; "
            "re-run the embedding rule"
        )
    if clusters is None:
        clusters = cluster_pool(embeddings, cfg, seed)
    kind, amount = parse_subset(name)
    x = _points(embeddings)
    n = len(records)
    broken, drop, hierarchy = clusters.broken, clusters.drop, clusters.hierarchy
    valid = np.flatnonzero(~broken)
    threshold = cfg["dedup_threshold"]
    kept = np.flatnonzero(~drop)
    target = len(valid) if kind == "full" else subset_size(amount, n)
    deduplicated = kind in ("curated", "random_dedup")
    available = len(kept) if deduplicated else len(valid)
    if target > available:
        after_dedup = " after near-duplicate removal (curation.dedup_threshold)" * deduplicated
        raise ValueError(
            f"curation.subsets: {name} asks for {target} images, but the pool has {available}"
            f"{after_dedup}; choose a smaller N or a fraction"
        )
    if kind == "curated":
        chosen = kept[hierarchical_sample(hierarchy, x[kept], target,
                                          strategy=cfg["strategy"], seed=seed)]  # fmt: skip
    elif kind == "random_dedup":
        chosen = kept[random_sample(len(kept), target, seed)]
    elif kind == "random":
        chosen = valid[random_sample(len(valid), target, seed)]
    else:
        chosen = valid
    selected = np.zeros(n, bool)
    selected[chosen] = True
    levels = np.full((len(cfg["levels"]), n), -1, dtype=np.int64)
    for level, assign in enumerate(hierarchy.assignments):
        levels[level, kept] = assign

    out_dir = Path(out_dir)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", *(f"level{k}" for k in range(len(levels))), "selected"])
    for i, record in enumerate(records):
        path = os.path.relpath(Path(record.path).resolve(), out_dir.resolve())
        writer.writerow([path, *levels[:, i].tolist(), int(selected[i])])
    write_text(out_dir / "manifest.csv", text.getvalue())

    # a removed duplicate counts in the finest cluster of its nearest centroid
    finest = levels[0].copy()
    if drop.any():
        centroids = torch.from_numpy(hierarchy.centroids[0])
        finest[drop] = nearest_centroid(torch.from_numpy(x[drop]), centroids)[0].numpy()
    pool_sizes = np.bincount(hierarchy.assignments[0], minlength=cfg["levels"][0])
    balance_pool = cluster_balance(finest, pool_sizes, kept)
    balance = cluster_balance(finest, pool_sizes, chosen)

    picked = [records[i] for i in chosen]
    combos = len({(r.attributes.get("color"), r.attributes.get("type")) for r in records})
    pair_threshold = threshold if threshold is not None else 0.95
    stats = {
        "subset": name,
        "kind": kind,
        "pool_images": n,
        "selected": int(selected.sum()),
        "duplicates_removed": int(drop.sum()),
        "dedup_threshold": threshold,
        "cluster_sizes_before": [np.bincount(a).tolist() for a in hierarchy.assignments],
        "cluster_sizes_after": [
            np.bincount(levels[k][selected & (levels[k] >= 0)], minlength=c).tolist()
            for k, c in enumerate(cfg["levels"])
        ],
        "tail_clusters": balance["tail_clusters"],
        "tail_share_pool": balance_pool["tail_share"],
        "tail_share_selected": balance["tail_share"],
        "largest_cluster_share_pool": balance_pool["largest_cluster_share"],
        "largest_cluster_share_selected": balance["largest_cluster_share"],
        "entropy_pool": attribute_entropy(records),
        "entropy_selected": attribute_entropy(picked),
        "entropy_max": float(np.log(combos)) if combos else 0.0,
        "near_duplicate_pairs_selected": duplicate_pairs(x[chosen], pair_threshold),
        "near_duplicate_threshold": pair_threshold,
    }
    write_text(out_dir / "stats.json", json.dumps(stats, indent=2))
    write_text(out_dir / "resampling.json", json.dumps(clusters.projection))
    return stats
