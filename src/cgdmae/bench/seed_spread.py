"""How much a table cell moves with the fine-tuning seed alone: fine-tune finished runs'
encoders once per seed on every column of the main table, and report each column's standard
deviation over seeds beside the spread of the runs' means, so a reader can tell a difference
between runs from noise.

    python -m cgdmae.bench.seed_spread --config config/config.yaml --runs scratch cgd_mae \
        --seeds 0 1 2 --work /tmp/spread

It reads ``results/pretrain/<run>/encoder.pth`` (run the DAG first) and writes only under
``--work``; seed 0 reproduces the table's own value.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from cgdmae.config import SCHEMA, finetune_recipes, finetune_spec, load_config, run_spec
from cgdmae.finetune.run import run_finetune
from cgdmae.finetune.spec import split_recipe
from cgdmae.report.tables import columns_for


def spread(config: dict[str, Any], runs: list[str], seeds: list[int], results: Path,
           work: Path) -> list[dict[str, Any]]:  # fmt: skip
    """One row per table column: each run's values (%) over ``seeds``. A job whose metrics
    are already under ``work`` for these seeds is read, not run again."""
    rows = []
    for recipe, dataset in finetune_recipes(config):
        records = {}
        for run in runs:
            out = work / run / recipe / dataset / "metrics.json"
            done = json.loads(out.read_text()) if out.is_file() else None
            if done is not None and done["seeds"] == seeds:
                records[run] = done
                continue
            records[run] = run_finetune(
                split_recipe(recipe)[0],
                config["datasets"][dataset],
                results / "pretrain" / run / "encoder.pth",
                run_spec(config, run)["model"],
                finetune_spec(config, recipe, dataset),
                out,
                seeds=seeds,
            )
        for column in columns_for([(recipe, dataset)]):
            values = {run: column.values(record) for run, record in records.items()}
            rows.append({"column": column.label, "values": values})
    return rows


def markdown(rows: list[dict[str, Any]], seeds: list[int]) -> str:
    runs = list(rows[0]["values"])
    head = ["column", *(f"{run} (seeds {', '.join(map(str, seeds))})" for run in runs)]
    head += ["std over seeds (mean of runs)", "range of the runs' means"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        values = row["values"]
        cells = [row["column"]]
        cells += [" / ".join(f"{v:.1f}" for v in values[run]) for run in runs]
        stds = [statistics.stdev(v) for v in values.values()]
        means = [statistics.mean(v) for v in values.values()]
        cells += [f"{statistics.mean(stds):.2f}", f"{max(means) - min(means):.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    if len(args.seeds) < 2:
        parser.error("--seeds needs at least two seeds for a standard deviation")
    config = load_config(args.config, SCHEMA)
    rows = spread(config, args.runs, args.seeds, args.results, args.work)
    print(markdown(rows, args.seeds))


if __name__ == "__main__":
    main()
