"""Where a number came from: config hash, git commit, package versions, devices, and the
fingerprints of the data and the teacher weights it was measured with."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGES = ("cgdmae", "torch", "timm", "open_clip_torch", "snakemake")


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 (first 12 hex digits) of the resolved config, defaults included."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
        return out.stdout.strip() + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def package_versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join(found)


def provenance(
    config: Mapping[str, Any],
    config_files: Iterable[str],
    records: Iterable[Mapping[str, Any]],
    teacher_metrics: Iterable[str | Path] = (),
) -> dict[str, str]:
    """The provenance lines of a table built from fine-tuning ``records`` (metrics.json), with
    each dataset's file-list fingerprint and each teacher's weights SHA-256 (first 12 digits)
    from its ``teacher_metrics`` file."""
    records = list(records)
    devices = sorted({str(r.get("device", "unknown")) for r in records})
    data = sorted(
        {
            f"{Path(r['dataset']['path']).name} {r['dataset_fingerprint']}"
            for r in records
            if "dataset_fingerprint" in r
        }
    )
    teachers = []
    for path in teacher_metrics:
        weights = json.loads(Path(path).read_text()).get("weights_sha256", "unknown")
        teachers.append(f"{Path(path).parent.name} {weights[:12]}")
    return {
        "config": ", ".join(config_files) or "embedded default",
        "config hash": config_hash(config),
        "commit": git_commit(),
        "packages": package_versions(),
        "devices": ", ".join(devices) or "none",
        "data": ", ".join(data) or "none",
        "teacher weights": ", ".join(sorted(teachers)) or "none",
    }
