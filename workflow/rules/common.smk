"""Config validation (before any job runs) and the helpers the other rule files share."""

import json
import sys
from pathlib import Path

from cgdmae.config import SYNTHETIC_ROOT, run_spec, validate_config

SCRIPTS = Path(workflow.current_basedir).parent / "scripts"

validate_config(
    config, Path(workflow.current_basedir).parent / "schemas" / "config.schema.yaml"
)


def dataset_root(name):
    """Root directory of a configured dataset (generated if it is a synthetic one)."""
    return config["datasets"][name]["path"]


def synthetic_targets():
    """The synthetic datasets that some configured dataset points at."""
    return sorted(
        {
            spec["path"]
            for spec in config["datasets"].values()
            if spec["path"].startswith(SYNTHETIC_ROOT + "/")
        }
    )


def teacher_inputs(name):
    """A teacher trained here depends on its image-caption dataset; a pretrained one on nothing."""
    spec = config["teachers"][name]
    return dataset_root(spec["dataset"]) if spec["source"] == "train" else []


def pretrain_inputs(wildcards):
    """Images, and for cgd_mae the teacher (and its cached targets when configured)."""
    spec = run_spec(config, wildcards.run)
    inputs = {"images": dataset_root(spec["dataset"])}
    if spec["method"] == "cgd_mae":
        teacher = spec["distill"]["teacher"]
        inputs["teacher"] = f"results/teacher/{teacher}/model"
        if spec["distill"]["targets"] == "cached":
            inputs["targets"] = f"results/teacher/{teacher}/targets/{spec['dataset']}.pt"
    return inputs


def launcher(gpus):
    """This interpreter for CPU or one GPU; torchrun for single-node multi-GPU DDP."""
    if gpus > 1:
        return f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node={gpus}"
    return sys.executable
