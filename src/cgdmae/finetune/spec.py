"""A fine-tuning job's settings: the task's config with its dataset's ``per_dataset`` entry,
and, for a named variant of the task (``finetune.<task>.variants``), the variant's settings.

A job's recipe is the task name, or ``<task>-<variant>`` for a variant: it is the ``task``
wildcard of ``results/finetune/{run}/{task}/{dataset}/metrics.json``, so a variant's results
sit beside the plain recipe's and a table can show both.

Kept free of torch so the workflow can import it when it builds a job's params.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# keys of finetune.<task> that describe the task as a whole, not one job
TASK_LEVEL_KEYS = ("datasets", "per_dataset", "variants")
VARIANT_SEPARATOR = "-"
VARIANT_NAME_PATTERN = r"[A-Za-z0-9_]+"


def dataset_spec(task_config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """The settings one (task, dataset) job trains with.

    ``finetune.<task>.per_dataset.<dataset>`` (e.g. TransReID's VehicleID batch and lr) is laid
    over the task's keys. Neither the dataset list nor the other datasets' entries enter the
    result, so adding a dataset or another dataset's override changes no other job's spec.
    """
    spec = {k: v for k, v in task_config.items() if k not in TASK_LEVEL_KEYS}
    return spec | dict((task_config.get("per_dataset") or {}).get(dataset) or {})


def split_recipe(recipe: str) -> tuple[str, str | None]:
    """``reid-transreid_star`` -> ("reid", "transreid_star"); ``reid`` -> ("reid", None)."""
    task, _, variant = recipe.partition(VARIANT_SEPARATOR)
    return task, variant or None


def recipes(finetune: Mapping[str, Any], tasks: Iterable[str]) -> list[tuple[str, str]]:
    """(recipe, dataset) of every configured job, each task's variants right after it: the
    order of the main table's columns."""
    out = []
    for task in tasks:
        task_config = finetune.get(task) or {}
        out += [(task, d) for d in task_config.get("datasets", [])]
        for name, variant in (task_config.get("variants") or {}).items():
            out += [(f"{task}{VARIANT_SEPARATOR}{name}", d) for d in variant["datasets"]]
    return out


def recipe_spec(finetune: Mapping[str, Any], recipe: str, dataset: str) -> dict[str, Any]:
    """A job's settings: the task's, its dataset's entry, then the variant's settings, which
    win over both (a variant is a recipe in its own right, e.g. TransReID*'s lr)."""
    task, variant = split_recipe(recipe)
    spec = dataset_spec(finetune[task], dataset)
    if variant is not None:
        spec |= dict(finetune[task]["variants"][variant].get("settings") or {})
    return spec
