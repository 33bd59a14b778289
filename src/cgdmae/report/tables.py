"""Result tables from ``metrics.json`` files: runs × tasks, and one table per ablation.

Every number comes from a metrics file; the tables are rendered by jinja2 templates in
``paper/templates/`` into booktabs LaTeX (best value per column in bold) and Markdown. Several
metric files for one cell (seeds) give mean ± std.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from cgdmae.finetune.cards import task_card
from cgdmae.finetune.spec import split_recipe

TEMPLATES = Path(__file__).resolve().parents[3] / "paper" / "templates"
DATASET_NAMES = {
    "veri776": "VeRi-776",
    "vehicleid": "VehicleID",
    "veriwild": "VERI-Wild",
    "market1501": "Market-1501",
    "vfr": "VFR",
    "vps": "VPS",
}


@dataclass(frozen=True)
class Column:
    task: str
    dataset: str
    metric: str
    label: str

    def values(self, record: Mapping[str, Any]) -> list[float]:
        """The metric of each seed (%), from the dataset's primary protocol."""
        runs = record.get("per_seed", {"0": record["metrics"]}).values()
        return [100 * float(m[primary_protocol(m)][self.metric]) for m in runs]


def primary_protocol(protocols: Iterable[str]) -> str:
    """The test protocol a table reports: the only one (VeRi-776: ``test``), or the smallest
    test list (VehicleID's ``test800``, VERI-Wild's ``test3000``), as papers do. Never the
    first key: metrics.json is written with sorted keys, ``test1600`` before ``test800``."""

    def size(name: str) -> tuple[int, str]:
        digits = re.sub(r"\D", "", name)
        return (int(digits) if digits else 0, name)

    return min(protocols, key=size)


@dataclass
class Table:
    caption: str
    row_header: str
    columns: list[Column]
    rows: list[tuple[str, list[list[float]]]]  # label, per column the values over seeds
    provenance: dict[str, str] = field(default_factory=dict)

    def cells(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """Formatted cells with the best mean per column flagged."""
        means = np.array(
            [[np.mean(v) if v else math.nan for v in values] for _, values in self.rows]
        )
        best = [
            np.nanmax(means[:, c]) if not np.all(np.isnan(means[:, c])) else math.nan
            for c in range(len(self.columns))
        ]
        out = []
        for r, (label, values) in enumerate(self.rows):
            row = []
            for c, samples in enumerate(values):
                mean = means[r, c]
                if math.isnan(mean):
                    row.append({"text": "–", "best": False})
                    continue
                text = f"{mean:.1f}"
                if len(samples) > 1:
                    text += f" ± {np.std(samples, ddof=1):.1f}"
                row.append({"text": text, "best": bool(np.isclose(mean, best[c]))})
            out.append((label, row))
        return out


def columns_for(recipes: Iterable[tuple[str, str]]) -> list[Column]:
    """The headline columns of each (recipe, dataset); a variant's carry its name, e.g.
    ``VeRi-776 transreid_star mAP``."""
    columns = []
    for recipe, dataset in recipes:
        task, variant = split_recipe(recipe)
        card = task_card(task)
        prefix = f"{card.title or DATASET_NAMES.get(dataset, dataset)} "
        if variant is not None:
            prefix += f"{variant} "
        headline = card.headline_by_dataset.get(dataset, card.headline)
        columns += [Column(recipe, dataset, metric, prefix + label) for metric, label in headline]
    return columns


def load_records(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    return [json.loads(Path(p).read_text()) for p in paths]


def metric_path(run: str, task: str, dataset: str) -> str:
    return f"results/finetune/{run}/{task}/{dataset}/metrics.json"


def build_table(
    caption: str,
    row_header: str,
    rows: Sequence[tuple[str, str]],
    tasks: Sequence[tuple[str, str]],
    records: Mapping[str, list[dict[str, Any]]],
) -> Table:
    """``rows``: (label, run); ``records``: metrics.json contents by path (one per seed)."""
    columns = columns_for(tasks)
    body = []
    for label, run in rows:
        values = [
            [v for r in records.get(metric_path(run, c.task, c.dataset), []) for v in c.values(r)]
            for c in columns
        ]
        body.append((label, [[v for v in vs if not math.isnan(v)] for vs in values]))
    return Table(caption, row_header, columns, body)


def latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"),
                          ("#", r"\#"), ("±", r"$\pm$"), ("–", "--"), ("×", r"$\times$")):  # fmt: skip
        text = text.replace(char, escaped)
    return text


def render(table: Table, kind: str) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["tex"] = latex_escape
    return env.get_template(f"table.{kind}.j2").render(table=table, cells=table.cells())


def write_table(table: Table, stem: str | Path) -> list[Path]:
    """``stem``.tex and ``stem``.md, each written to a temp file and renamed."""
    written = []
    for kind in ("tex", "md"):
        path = Path(stem).with_name(f"{Path(stem).name}.{kind}")  # a name may hold a dot
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(render(table, kind))
        os.replace(tmp, path)
        written.append(path)
    return written


def table_metrics(table: Table) -> dict[str, dict[str, float]]:
    """The table's numbers as DVC metrics: row label -> column label -> mean over seeds (%).

    Empty cells are left out; a cell over several seeds also gives ``<column> std``. This is
    the JSON ``dvc metrics show`` prints and ``dvc metrics diff`` compares across commits.
    """
    metrics: dict[str, dict[str, float]] = {}
    for label, values in table.rows:
        row = metrics.setdefault(label, {})
        for column, samples in zip(table.columns, values, strict=True):
            if not samples:
                continue
            row[column.label] = round(float(np.mean(samples)), 4)
            if len(samples) > 1:
                row[f"{column.label} std"] = round(float(np.std(samples, ddof=1)), 4)
    return metrics


def write_metrics(table: Table, path: str | Path) -> Path:
    """``table_metrics`` as JSON at ``path``, written to a temp file and renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(table_metrics(table), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def ablation_frame(table: Table) -> Any:
    """Long format for the ablation plot: one row per (axis value, metric column, seed)."""
    import pandas as pd

    rows = []
    for label, values in table.rows:
        value = label.split("=", 1)[1]
        for column, samples in zip(table.columns, values, strict=True):
            rows += [{"value": value, "metric": column.label, "score": s} for s in samples]
    return pd.DataFrame(rows)


def cmc_frame(records: Mapping[tuple[str, str], Mapping[str, Any]]) -> Any:
    """CMC points of each (run, dataset) ReID record's primary protocol, in %."""
    import pandas as pd

    rows = []
    for (run, dataset), record in records.items():
        first = record["metrics"][primary_protocol(record["metrics"])]
        for rank, value in enumerate(first.get("cmc", []), start=1):
            rows.append({"run": run, "dataset": DATASET_NAMES.get(dataset, dataset),
                         "rank": rank, "cmc": 100 * value})  # fmt: skip
    return pd.DataFrame(rows)
