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
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        bad = ".".join(filter(None, [key if error.absolute_path else "", extra[0] if extra else "?"]))
        expected = f"expected one of: {', '.join(allowed)}" if allowed else "no keys are defined here"
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
    return config


def _first_schema_error(config: dict[str, Any], schema_path: str | Path) -> str | None:
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    return _describe(errors[0]) if errors else None


def check_config(config: Mapping[str, Any]) -> None:
    """Checks across keys: generated dataset paths must name a known synthetic dataset."""
    for name, spec in config.get("datasets", {}).items():
        path = str(spec["path"])
        if path.startswith(SYNTHETIC_ROOT + "/"):
            synthetic_name = path[len(SYNTHETIC_ROOT) + 1 :].strip("/")
            if synthetic_name not in SYNTHETIC_DATASETS:
                raise ConfigError(
                    f"config key 'datasets.{name}.path': {path} is under {SYNTHETIC_ROOT}/ but "
                    f"the synthetic world only writes {', '.join(SYNTHETIC_DATASETS)}"
                )


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
