"""What each job asks Slurm for: one policy for every rule, so the sbatch lines can be checked.

The GPU count of a job comes from its stage's config (``pretrain.gpus``, ``finetune.gpus``, ...);
CPUs and memory follow it (``cluster.cpus_per_gpu`` and ``cluster.mem_mb_per_gpu`` per GPU), and
every rule sets ``cpus_per_task`` itself, because the Slurm executor lets a ``cpus_per_task``
(from a profile's default-resources, say) win over ``cpus_per_gpu``. A multi-GPU job stays on
one node. A multi-node pre-training job is one allocation of N nodes with one task per node,
each task a ``torchrun`` that starts a rank per GPU (see :mod:`cgdmae.pretrain.cli`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ClusterConfigError(ValueError):
    """A job's resources cannot be satisfied as configured; the message names the key."""


def slurm_resources(
    cluster: Mapping[str, Any], gpus: int, *, nodes: int = 1, threads: int = 1
) -> dict[str, Any]:
    """Snakemake ``resources`` of a job on ``gpus`` GPUs per node over ``nodes`` nodes.

    Keys that do not apply are None, which Snakemake drops: ``mpi`` in particular must be absent
    from single-node jobs, since the Slurm job step runs a job with it outside ``srun``.
    """
    if gpus == 0:
        if nodes != 1:
            raise ClusterConfigError(f"a job on {nodes} nodes needs GPUs (gpus is 0)")
        return {
            "gpu": None,
            "cpus_per_task": max(cluster["cpus"], threads),
            "mem_mb": cluster["mem_mb"],
            "nodes": None,
            "tasks": None,
            "mpi": None,
            "slurm_extra": None,
        }
    per_node = {
        "cpus_per_task": gpus * cluster["cpus_per_gpu"],
        "mem_mb": gpus * cluster["mem_mb_per_gpu"],  # --mem is per node
    }
    if nodes == 1:
        # --nodes=1 holds a multi-GPU job to one node; a one-GPU job leaves it out, because
        # Snakemake sums it over the jobs of a group (a run's fine-tunings) into N nodes
        return {
            "gpu": gpus,
            **per_node,
            "nodes": 1 if gpus > 1 else None,
            "tasks": None,
            "mpi": None,
            "slurm_extra": None,
        }
    # N nodes × one task (a torchrun each); the GPUs go per node through --gpus-per-node, which
    # keeps the executor from treating the job as a one-task GPU job (--ntasks-per-gpu)
    return {
        "gpu": None,
        **per_node,
        "nodes": nodes,
        "tasks": nodes,
        "mpi": "srun",
        "slurm_extra": f"--gpus-per-node={gpus}",
    }


def check_data_workers(
    cluster: Mapping[str, Any], num_workers: int, gpus: int, key: str
) -> str | None:
    """Why ``num_workers`` data-loader workers per rank do not fit the job's CPUs, or None."""
    if gpus > 0 and num_workers + 1 > cluster["cpus_per_gpu"]:
        return (
            f"config key '{key}': {num_workers} data-loader workers + the training process need "
            f"{num_workers + 1} CPUs per GPU, but cluster.cpus_per_gpu is "
            f"{cluster['cpus_per_gpu']}; raise it or lower {key}"
        )
    return None
