"""Pre-training subsets by name: ``full``, ``curated_<N>`` and ``random_<N>``.

N is a count (``curated_1000``) or a fraction of the pool (``random_0.25``). A curated subset
is drawn by balanced hierarchical sampling from the pool after near-duplicate removal; a
random one uniformly from the whole pool, as the baseline of the same size.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cgdmae.curation.dedup import duplicate_pairs, near_duplicates
from cgdmae.curation.kmeans import hierarchical_kmeans
from cgdmae.curation.sampling import hierarchical_sample, random_sample
from cgdmae.data.records import PoolRecord

SUBSET_NAME = re.compile(r"^(curated|random)_(\d+|0?\.\d+|1\.0)$")


def parse_subset(name: str) -> tuple[str, float | None]:
    """('full', None), ('curated', 1000) or ('random', 0.25)."""
    if name == "full":
        return "full", None
    match = SUBSET_NAME.match(name)
    if not match:
        raise ValueError(
            f"subset {name!r}: expected full, curated_<N> or random_<N> with N a count "
            "(e.g. curated_1000) or a fraction in (0, 1] (e.g. random_0.25)"
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


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def curate(
    name: str,
    records: Sequence[PoolRecord],
    embeddings: np.ndarray,
    cfg: dict[str, Any],
    out_dir: str | Path,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``manifest.csv`` and ``stats.json`` of subset ``name`` into ``out_dir``."""
    if len(records) != len(embeddings):
        raise ValueError(
            f"the pool has {len(records)} images but the embeddings have {len(embeddings)} rows; "
            "re-run the embedding rule"
        )
    kind, amount = parse_subset(name)
    x = embeddings.astype(np.float32)
    n = len(records)
    threshold = cfg["dedup_threshold"]
    drop = near_duplicates(x, threshold) if threshold is not None else np.zeros(n, bool)
    kept = np.flatnonzero(~drop)
    hierarchy = hierarchical_kmeans(
        x[kept], cfg["levels"], sample_sizes=cfg["sample_sizes"], n_iter=cfg["n_iter"],
        resampling_steps=cfg["resampling_steps"], seed=seed, backend=cfg["backend"],
    )  # fmt: skip
    target = n if kind == "full" else subset_size(amount, n)
    available = len(kept) if kind == "curated" else n
    if target > available:
        after_dedup = (
            " after near-duplicate removal (curation.dedup_threshold)" if kind == "curated" else ""
        )
        raise ValueError(
            f"curation.subsets: {name} asks for {target} images, but the pool has {available}"
            f"{after_dedup}; choose a smaller N or a fraction"
        )
    if kind == "curated":
        chosen = kept[hierarchical_sample(hierarchy, x[kept], target,
                                          strategy=cfg["strategy"], seed=seed)]  # fmt: skip
    elif kind == "random":
        chosen = random_sample(n, target, seed)
    else:
        chosen = np.arange(n)
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
    _write_text_atomic(out_dir / "manifest.csv", text.getvalue())

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
        "entropy_pool": attribute_entropy(records),
        "entropy_selected": attribute_entropy(picked),
        "entropy_max": float(np.log(combos)) if combos else 0.0,
        "near_duplicate_pairs_selected": duplicate_pairs(x[chosen], pair_threshold),
        "near_duplicate_threshold": pair_threshold,
    }
    _write_text_atomic(out_dir / "stats.json", json.dumps(stats, indent=2))
    return stats
