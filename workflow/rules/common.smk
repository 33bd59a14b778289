"""Config validation (before any job runs) and the helpers the other rule files share."""

from pathlib import Path

from cgdmae.config import SYNTHETIC_ROOT, validate_config

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
