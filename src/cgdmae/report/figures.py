"""Figures (seaborn, paper context), written as deterministic PDF and PNG."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cgdmae.pretrain.cards import method_cards  # noqa: E402


def loss_terms() -> list[str]:
    """The total first, then every method's terms in its card's order (a term two methods
    log, such as mae, once)."""
    terms = ["loss"] + [t for card in method_cards() for t in card.loss_terms]
    return list(dict.fromkeys(terms))


def save_figure(fig, stem: str | Path) -> list[Path]:
    """``stem``.pdf and ``stem``.png, with no creation date so reruns give identical bytes."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, metadata in ((".pdf", {"CreationDate": None}), (".png", {"Software": None})):
        path = stem.with_name(stem.name + suffix)  # not with_suffix: curation_curated_0.25
        tmp = path.with_name(f".{path.name}.tmp{suffix}")
        fig.savefig(tmp, metadata=metadata, dpi=150, bbox_inches="tight")
        os.replace(tmp, path)
        written.append(path)
    plt.close(fig)
    return written


def save_data(frame: pd.DataFrame, path: str | Path) -> Path:
    """A figure's data as CSV (what ``dvc plots`` draws), written to a temp file and renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, path)
    return path


def loss_frame(logs: Mapping[str, str | Path]) -> pd.DataFrame:
    """Each run's loss terms per epoch, long: run, epoch, term, value (runs with an empty
    log.csv, like scratch, have none)."""
    frames = []
    for run, path in logs.items():
        frame = pd.read_csv(path)
        if frame.empty:
            continue  # scratch: nothing trained
        terms = [t for t in loss_terms() if t in frame]
        long = frame.melt(id_vars=["epoch"], value_vars=terms, var_name="term", value_name="value")
        frames.append(long.assign(run=run))
    if not frames:
        return pd.DataFrame(columns=["run", "epoch", "term", "value"])
    return pd.concat(frames, ignore_index=True)[["run", "epoch", "term", "value"]]


def loss_curves(logs: Mapping[str, str | Path]):
    """One panel per run, one line per loss term, from each run's log.csv.

    Per run, because the methods' losses live on different scales (DINO's cross-entropy is
    near log K, MAE's normalised-pixel MSE below 1): a shared panel would flatten all but one.
    """
    data = loss_frame(logs)
    sns.set_theme(context="paper", style="whitegrid")
    terms = [t for t in loss_terms() if t in set(data.term)]
    runs = list(dict.fromkeys(data.run))
    grid = sns.relplot(
        data=data, x="epoch", y="value", hue="term", hue_order=terms, col="run", col_order=runs,
        col_wrap=min(len(runs), 4), kind="line", marker="o", facet_kws={"sharey": False},
        height=2.2, aspect=1.15,
    )  # fmt: skip
    grid.set_titles("{col_name}")
    grid.set_axis_labels("epoch", "pre-training loss")
    for ax in grid.axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return grid.figure


def ablation_plot(frame: pd.DataFrame, axis: str):
    """Metric vs axis value, one panel per metric column (``frame``: value, metric, score).

    A numeric axis gets a line over its values; a categorical one (datasets, strategies) bars.
    """
    sns.set_theme(context="paper", style="whitegrid")
    numeric = pd.to_numeric(frame["value"], errors="coerce")
    common = dict(data=frame, y="score", col="metric", height=2.4, aspect=1.1,
                  facet_kws={"sharey": False})  # fmt: skip
    if numeric.notna().all():
        grid = sns.relplot(x=numeric.rename("value_numeric"), kind="line", marker="o", **common)
    else:
        common["sharey"] = common.pop("facet_kws")["sharey"]
        grid = sns.catplot(x="value", kind="bar", errorbar="sd", **common)
        for ax in grid.axes.flat:
            ax.tick_params(axis="x", labelrotation=35)
            for label in ax.get_xticklabels():  # long subset names end under their bar
                label.set_horizontalalignment("right")
    grid.set_titles("{col_name}")
    grid.set_axis_labels(axis, "score (%)")
    return grid.figure


def cmc_curves(frame: pd.DataFrame):
    """CMC (matching rate vs rank) per run, one panel per ReID dataset.

    ``frame``: run, dataset, rank, cmc (%).
    """
    sns.set_theme(context="paper", style="whitegrid")
    grid = sns.relplot(
        data=frame, x="rank", y="cmc", hue="run", col="dataset", kind="line",
        height=2.6, aspect=1.2,
    )  # fmt: skip
    grid.set_titles("{col_name}")
    grid.set_axis_labels("rank", "matching rate (%)")
    return grid.figure


def reconstructions(images: Mapping[str, tuple], n_images: int):
    """MAE's picture: per run, the input, the masked input, the prediction and the prediction
    with the visible patches pasted back. ``images[run] = (original, masked, pred, pasted)``,
    each [N, 3, H, W] in [0, 1]."""
    columns = ("input", "masked", "prediction", "prediction + visible")
    runs = list(images)
    fig, axes = plt.subplots(
        len(runs) * n_images, 4, figsize=(4 * 1.3, len(runs) * n_images * 1.3), squeeze=False
    )
    for r, run in enumerate(runs):
        for i in range(n_images):
            for c, panel in enumerate(images[run]):
                ax = axes[r * n_images + i, c]
                ax.imshow(panel[i].permute(1, 2, 0).clamp(0, 1).numpy())
                ax.set_xticks([])
                ax.set_yticks([])
                if r * n_images + i == 0:
                    ax.set_title(columns[c], fontsize=7)
                if c == 0:
                    ax.set_ylabel(f"{run} #{i + 1}", fontsize=7)
    fig.tight_layout(pad=0.2)
    return fig


def resampling_panel(ax, projection: Mapping) -> None:
    """The finest centroids before (hollow) and after (filled) the resampling steps over a
    sample of the points, on the embeddings' first two principal axes; area ∝ cluster size."""
    points = np.asarray(projection["points"]).reshape(-1, 2)
    ax.scatter(points[:, 0], points[:, 1], s=2, color="#d0d0d0", linewidths=0, label="points")
    largest = max(max(projection[stage]["sizes"]) for stage in ("before", "after")) or 1
    for stage, style in (
        ("before", {"facecolors": "none", "edgecolors": "#c0504d"}),
        ("after", {"color": "#3b6ea8", "alpha": 0.7}),
    ):
        xy = np.asarray(projection[stage]["centroids"]).reshape(-1, 2)
        area = 4 + 120 * np.asarray(projection[stage]["sizes"]) / largest
        label = f"centroids {stage} resampling"
        ax.scatter(xy[:, 0], xy[:, 1], s=area, linewidths=0.8, label=label, **style)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("finest centroids (area ∝ cluster size)", fontsize=8)
    ax.legend(fontsize=6, loc="best", markerscale=0.7)


def curation_figure(
    stats_path: Path,
    manifest_path: Path,
    resampling_path: Path | None = None,
    n_clusters: int = 6,
    per_cluster: int = 8,
):
    """Left: finest-level cluster sizes (sorted) in the pool and in the subset. Middle (with
    ``resampling_path``): where the finest centroids sit before and after resampling. Right:
    sample images of a few clusters, so one can see what a cluster means."""
    import json

    from PIL import Image

    stats = json.loads(stats_path.read_text())
    manifest = pd.read_csv(manifest_path)
    before = sorted(stats["cluster_sizes_before"][0], reverse=True)
    order = np.argsort(stats["cluster_sizes_before"][0])[::-1]
    after = [stats["cluster_sizes_after"][0][c] for c in order]
    sns.set_theme(context="paper", style="whitegrid")
    middle = resampling_path is not None
    width = 14.0 if middle else 10.0
    fig = plt.figure(figsize=(width, 3.6))
    inch = 1 / width  # one inch as a fraction of the width
    ax = fig.add_axes((0.6 * inch, 0.14, 3.6 * inch, 0.76))
    ranks = np.arange(1, len(before) + 1)
    ax.bar(ranks, before, color="#c9d3e6", label="pool (after dedup)")
    ax.bar(ranks, after, color="#3b6ea8", label=f"{stats['subset']}")
    ax.set_xlabel("cluster (sorted by pool size)")
    ax.set_ylabel("images")
    tail = (
        f"\nsmallest {stats['tail_clusters']} clusters: {stats['tail_share_selected']:.0%} "
        f"(pool {stats['tail_share_pool']:.0%}); largest: "
        f"{stats['largest_cluster_share_selected']:.0%}"
        if "tail_share_selected" in stats
        else ""
    )
    ax.set_title(
        f"{stats['selected']} of {stats['pool_images']} images; "
        f"colour×type entropy {stats['entropy_selected']:.2f} (pool {stats['entropy_pool']:.2f})"
        + tail,
        fontsize=8,
    )
    ax.legend(fontsize=7)
    left = 4.6 * inch
    if middle:
        resampling_panel(
            fig.add_axes((left + 0.3 * inch, 0.14, 3.6 * inch, 0.76)),
            json.loads(Path(resampling_path).read_text()),
        )
        left += 4.2 * inch
    picks = order[np.linspace(0, len(order) - 1, n_clusters).astype(int)]
    rng = np.random.default_rng(0)
    for row, cluster in enumerate(picks):
        members = manifest[manifest["level0"] == cluster]
        sample = members.iloc[rng.permutation(len(members))[:per_cluster]]
        for col, rel in enumerate(sample["path"]):
            sub = fig.add_axes((left + col * 0.66 * inch, 0.84 - row * 0.145, 0.62 * inch, 0.135))
            with Image.open(manifest_path.parent / rel) as img:
                sub.imshow(img.convert("RGB"))
            sub.set_axis_off()
        fig.text(left - 0.05 * inch, 0.9 - row * 0.145, f"c{cluster}\nn={len(members)}",
                 fontsize=6, ha="right")  # fmt: skip
    return fig
