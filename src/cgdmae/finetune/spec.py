"""A fine-tuning job's settings: the task's config with its dataset's ``per_dataset`` entry.

Kept free of torch so the workflow can import it when it builds a job's params.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# keys of finetune.<task> that describe the task as a whole, not one job
TASK_LEVEL_KEYS = ("datasets", "per_dataset")


def dataset_spec(task_config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """The settings one (task, dataset) job trains with.

    ``finetune.<task>.per_dataset.<dataset>`` (e.g. TransReID's VehicleID batch and lr) is laid
    over the task's keys. Neither the dataset list nor the other datasets' entries enter the
    result, so adding a dataset or another dataset's override changes no other job's spec.
    """
    spec = {k: v for k, v in task_config.items() if k not in TASK_LEVEL_KEYS}
    return spec | dict((task_config.get("per_dataset") or {}).get(dataset) or {})
