"""Configuration: schema validation with defaults, plus the checks a schema cannot express.

Snakemake's ``validate`` fills the defaults; when it fails we re-run the same JSON Schema with
jsonschema to turn the first error into one line that names the key, because Snakemake's
message buries the key under a dump of the schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

SYNTHETIC_ROOT = "results/data/synthetic"
SYNTHETIC_DATASETS = ("veri776", "vehicleid", "vfr", "vps", "pool")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


def _key(path: Iterable[Any]) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


def _describe(error: Any) -> str:
    """One line for a jsonschema ValidationError, naming the key and what was expected."""
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = (
            sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        )
        bad = ".".join(
            filter(None, [key if error.absolute_path else "", extra[0] if extra else "?"])
        )
        expected = (
            f"expected one of: {', '.join(allowed)}" if allowed else "no keys are defined here"
        )
        return f"unknown config key '{bad}' ({expected})"
    if error.validator == "required":
        return f"config key '{key}': {error.message}"
    return f"config key '{key}': {error.message} (schema rule: {error.validator}={error.validator_value!r})"


def validate_config(config: dict[str, Any], schema_path: str | Path) -> dict[str, Any]:
    """Validate ``config`` in place against the schema, fill defaults, then run semantic checks."""
    from snakemake.utils import validate

    try:
        validate(config, str(schema_path))
    except Exception as exc:  # snakemake wraps jsonschema errors in WorkflowError
        raise ConfigError(_first_schema_error(config, schema_path) or str(exc)) from None
    check_config(config)
    _check_run_values(config, yaml.safe_load(Path(schema_path).read_text()))
    return config


def _check_run_values(config: Mapping[str, Any], schema: dict[str, Any]) -> None:
    """Each run's merged spec must satisfy the same schema as ``pretrain`` itself."""
    import jsonschema

    pretrain_schema = schema["$defs"]["pretrain"]
    validator_cls = jsonschema.validators.validator_for(schema)
    for run in config.get("runs", {}):
        spec = run_spec(config, run)
        spec.pop("method")
        for error in validator_cls(pretrain_schema).iter_errors(spec):
            where = _key(error.absolute_path)
            raise ConfigError(f"config key 'runs.{run}.overrides' sets {where}: {error.message}")


def _first_schema_error(config: dict[str, Any], schema_path: str | Path) -> str | None:
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    return _describe(errors[0]) if errors else None


def check_config(config: Mapping[str, Any]) -> None:
    """Checks across keys: names that refer to other sections must exist there."""
    datasets = config.get("datasets", {})
    for name, spec in datasets.items():
        path = str(spec["path"])
        if path.startswith(SYNTHETIC_ROOT + "/"):
            synthetic_name = path[len(SYNTHETIC_ROOT) + 1 :].strip("/")
            if synthetic_name not in SYNTHETIC_DATASETS:
                raise ConfigError(
                    f"config key 'datasets.{name}.path': {path} is under {SYNTHETIC_ROOT}/ but "
                    f"the synthetic world only writes {', '.join(SYNTHETIC_DATASETS)}"
                )
    _check_references(config)


def load_config(path: str | Path, schema_path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it, naming the file in errors."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    try:
        return validate_config(config, schema_path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _require(config: Mapping[str, Any], section: str, name: str, key: str) -> None:
    if name not in config.get(section, {}):
        known = ", ".join(sorted(config.get(section, {}))) or "none"
        raise ConfigError(f"config key '{key}': {name!r} is not in {section} (known: {known})")


def _check_references(config: Mapping[str, Any]) -> None:
    for name, teacher in config.get("teachers", {}).items():
        if teacher["source"] == "train":
            _require(config, "datasets", teacher["dataset"], f"teachers.{name}.dataset")
        elif "name" not in teacher:
            raise ConfigError(
                f"config key 'teachers.{name}.name': a pretrained teacher needs an open_clip model name"
            )
    for run in config.get("runs", {}):
        spec = run_spec(config, run)
        _require(config, "datasets", spec["dataset"], f"runs.{run}: pretrain.dataset")
        if spec["method"] == "cgd_mae":
            _require(
                config,
                "teachers",
                spec["distill"]["teacher"],
                f"runs.{run}: pretrain.distill.teacher",
            )


def set_dotted(spec: dict[str, Any], dotted: str, value: Any, *, where: str) -> None:
    """Set ``a.b.c`` in a nested dict, refusing keys the defaults do not have."""
    node = spec
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "none (not a section)"
            prefix = ".".join(parts[:depth]) or "pretrain"
            raise ConfigError(
                f"config key '{where}': {dotted!r} is not a pretrain key ({prefix} has: {known})"
            )
        if depth == len(parts) - 1:
            node[part] = value
        else:
            node = node[part]


def run_spec(config: Mapping[str, Any], run: str) -> dict[str, Any]:
    """The full pre-training spec of a run: ``pretrain`` defaults plus the run's overrides."""
    import copy

    _require(config, "runs", run, "runs")
    declared = config["runs"][run]
    spec = copy.deepcopy(dict(config["pretrain"]))
    for dotted, value in declared.get("overrides", {}).items():
        set_dotted(spec, dotted, value, where=f"runs.{run}.overrides.{dotted}")
    spec["method"] = declared["method"]
    return spec
