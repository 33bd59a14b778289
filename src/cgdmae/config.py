"""Configuration: schema validation with defaults, plus the checks a schema cannot express.

Snakemake's ``validate`` fills the defaults; when it fails we re-run the same JSON Schema with
jsonschema to turn the first error into one line that names the key, because Snakemake's
message buries the key under a dump of the schema.
"""

from __future__ import annotations

import functools
import json
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from cgdmae.finetune.cards import task_card, task_cards
from cgdmae.finetune.spec import recipe_spec, recipes, split_recipe
from cgdmae.plugins import PluginError, load_plugins
from cgdmae.pretrain.cards import method_card, method_cards

# the workflow's schema, beside the package in a checkout (the workflow needs the checkout)
SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
SYNTHETIC_ROOT = "results/data/synthetic"
DRAFT_SUFFIX = "_draft"  # a target store's file name, when its views were decoded reduced
SYNTHETIC_DATASETS = ("veri776", "vehicleid", "veriwild", "vfr", "vps", "pool")


def task_names() -> tuple[str, ...]:
    """The downstream tasks, in the order of the main table's columns (their cards', plugins'
    included)."""
    return tuple(card.name for card in task_cards())


# `pretrain` keys with no default: a run may set them, and a run that does not keeps the
# resolved spec it had (so adding such a key retrains nothing). The schema's default-less keys.
OPTIONAL_PRETRAIN_KEYS = (
    "weight_decay_end",
    "nodes",
    "max_lr",
    "max_steps",
    "cached_crops",
    "cache_views",
    "decode_draft",
)

# names from the config (datasets, teachers, runs, ablations) become path parts under results/
# and Slurm job names; the schema's $defs.name carries the same pattern
NAME_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.-]*$"
# an ablation's generated run, <base run>@<dotted pretrain key>=<value>
ABLATION_RUN_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.-]*@[A-Za-z0-9_.]+=[A-Za-z0-9_.+-]+$"


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
    if "propertyNames" in error.schema_path:
        rule = error.schema.get("description", f"pattern {error.schema.get('pattern')}")
        return f"config key '{key}': the name {error.instance!r} is not allowed ({rule})"
    return f"config key '{key}': {error.message} (schema rule: {error.validator}={error.validator_value!r})"


def validate_config(config: dict[str, Any], schema_path: str | Path) -> dict[str, Any]:
    """Load the config's plugins, then validate ``config`` in place against the schema (with
    the sections the registries add), fill defaults, then run semantic checks."""
    _load_config_plugins(config)
    schema = config_schema(schema_path)
    try:
        _fill_defaults(config, schema)
    except Exception as exc:  # snakemake wraps jsonschema errors in WorkflowError
        raise ConfigError(_first_schema_error(config, schema) or str(exc)) from None
    check_config(config)
    _check_run_values(config, schema)
    return config


def _fill_defaults(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """Snakemake's ``validate`` (which fills the defaults in place) against ``schema``; it
    reads a schema from a file, so the assembled one is written to a temporary one."""
    from snakemake.utils import validate

    with tempfile.TemporaryDirectory() as tmp:
        schema_file = Path(tmp) / "config.schema.yaml"
        schema_file.write_text(yaml.safe_dump(schema, sort_keys=False))
        validate(config, str(schema_file))


@functools.cache
def _schema_defaults(schema_path: str) -> str:
    config: dict[str, Any] = {}
    _fill_defaults(config, config_schema(schema_path))
    return json.dumps(config)


def schema_defaults(schema_path: str | Path = SCHEMA) -> dict[str, Any]:
    """What an empty config becomes: every default of the schema, the one place a default is
    stated. Benchmarks and tests, which have no config, take a method's settings from here."""
    return json.loads(_schema_defaults(str(schema_path)))


def _load_config_plugins(config: Mapping[str, Any]) -> None:
    entries = config.get("plugins") or []
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        return  # the schema names the key
    try:
        load_plugins(entries)
    except PluginError as error:
        raise ConfigError(
            f"config key 'plugins.{error.index}' ({error.entry!r}): {error.reason}"
        ) from error


def config_schema(schema_path: str | Path) -> dict[str, Any]:
    """The schema file plus what the registries add: a ``finetune.<task>`` section (a
    ``$defs.finetune_task``) per task card, and ``pretrain.<section>`` for a method card that
    brings its section's schema (a plugin's method; the built-in sections are in the file)."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    finetune = schema["properties"]["finetune"]["properties"]
    for name in task_names():
        if name in finetune:
            raise ConfigError(f"task {name!r} has the name of the key finetune.{name}")
        finetune[name] = {"$ref": "#/$defs/finetune_task", "default": {}}
    pretrain = schema["$defs"]["pretrain"]["properties"]
    for card in method_cards():
        if card.section_schema is None:
            continue
        if card.section in pretrain:
            raise ConfigError(
                f"method {card.name!r}: its card's schema for pretrain.{card.section} is also "
                f"in {schema_path}; keep one"
            )
        pretrain[card.section] = {"default": {}, **card.section_schema}
    return schema


def _check_run_values(config: Mapping[str, Any], schema: dict[str, Any]) -> None:
    """Each run's merged spec must satisfy the same schema as ``pretrain`` itself."""
    import jsonschema

    pretrain_schema = {**schema["$defs"]["pretrain"], "$defs": schema["$defs"]}
    validator_cls = jsonschema.validators.validator_for(schema)
    for run in all_runs(config):
        spec = run_spec(config, run)
        spec.pop("method")
        for error in validator_cls(pretrain_schema).iter_errors(spec):
            where = _key(error.absolute_path)
            source = f"ablations.{run.split('@')[0]}" if "@" in run else f"runs.{run}.overrides"
            raise ConfigError(f"config key '{source}' sets {where}: {error.message}")


def _first_schema_error(config: dict[str, Any], schema: dict[str, Any]) -> str | None:
    import jsonschema

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
    _check_cluster(config)


def _check_cluster(config: Mapping[str, Any]) -> None:
    """Each job's data-loader workers fit the CPUs it asks for."""
    from cgdmae.cluster import check_data_workers

    cluster = config.get("cluster")
    if not cluster:
        return
    runs = all_runs(config)
    for run in runs:
        spec = run_spec(config, run)
        overridden = "num_workers" in runs[run].get("overrides", {})
        where = f"runs.{run}.overrides.num_workers" if overridden else "pretrain.num_workers"
        problem = check_data_workers(cluster, spec["num_workers"], spec["gpus"], where)
        if problem:
            raise ConfigError(problem)
    finetune = config.get("finetune", {})
    for task, spec in finetune.items():
        if isinstance(spec, Mapping) and spec.get("datasets"):
            problem = check_data_workers(
                cluster, spec["num_workers"], finetune["gpus"], f"finetune.{task}.num_workers"
            )
            if problem:
                raise ConfigError(problem)


def check_paths(config: Mapping[str, Any], produced: str = "results/") -> None:
    """Every dataset root and pretrained teacher file exists, or a rule makes it (under
    ``produced``): a placeholder path left in a config stops the run naming its key."""
    for name, spec in config.get("datasets", {}).items():
        path = str(spec["path"])
        if not path.startswith(produced) and not Path(path).exists():
            raise ConfigError(
                f"config key 'datasets.{name}.path': {path} does not exist; point it at your "
                f"copy of the dataset (format {spec['format']}, config/README.md)"
            )
    for name, teacher in config.get("teachers", {}).items():
        weights = str(teacher.get("pretrained", ""))
        is_file = "/" in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors"))
        produced_here = weights.startswith(produced)
        if (
            teacher["source"] == "pretrained"
            and is_file
            and not produced_here
            and not Path(weights).is_file()
        ):
            raise ConfigError(
                f"config key 'teachers.{name}.pretrained': {weights} does not exist; copy "
                f"the open_clip checkpoint of {teacher.get('name')} there (weights are "
                "never downloaded at run time)"
            )


def _read_dataset(fmt: str, root: Path) -> None:
    """Read the layout of one dataset with its reader: every list, split and label file, and
    the existence of each listed image; images are not decoded."""
    from cgdmae.data import readers

    def sizes(folder: Path, pattern: str) -> list[int]:
        found = folder.glob(pattern) if folder.is_dir() else []
        return sorted(int(p.stem.split("_")[-1]) for p in found if p.stem.split("_")[-1].isdigit())

    if fmt == "veri776":
        readers.read_veri776(root)
    elif fmt == "vehicleid":
        for size in sizes(root / "train_test_split", "test_list_*.txt") or [800]:
            readers.read_vehicleid(root, size)
    elif fmt == "veriwild":
        lists = root / "train_test_split"
        for size in sizes(lists, "test_*.txt") or [3000]:
            readers.read_veriwild(root, size)
    elif fmt == "market1501":
        readers.read_market1501(root)
    elif fmt == "image_folder":
        for split in ("train", "test"):
            readers.read_image_folder(root, split)
    elif fmt == "classification_csv":
        readers.read_classification_csv(root)
    elif fmt == "segmentation":
        for split in ("train", "val"):
            readers.read_segmentation(root, split)
    elif fmt == "pool":
        readers.read_pool(root)


def check_datasets(config: Mapping[str, Any], produced: str = "results/") -> None:
    """Each configured dataset's reader checks its layout before any job is submitted: a
    missing list, split or label file, a malformed line, a listed image that is not there.

    Datasets a rule writes (under ``produced``, the synthetic ones) do not exist yet and are
    skipped. The error names the config key and the file, like ``check_paths``'. Images are
    not decoded here: that costs a full read of the data.
    """
    from cgdmae.data.errors import DatasetFormatError

    for name, spec in config.get("datasets", {}).items():
        path = str(spec["path"])
        if path.startswith(produced):
            continue
        try:
            _read_dataset(spec["format"], Path(path))
        except DatasetFormatError as exc:
            raise ConfigError(
                f"config key 'datasets.{name}.path': {exc} (format {spec['format']}, "
                "config/README.md)"
            ) from None


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
    for task in task_names():
        formats = task_card(task).formats
        task_config = config.get("finetune", {}).get(task, {})
        keyed = [(f"finetune.{task}.datasets", task_config.get("datasets", []))]
        for variant, entry in (task_config.get("variants") or {}).items():
            keyed.append((f"finetune.{task}.variants.{variant}.datasets", entry["datasets"]))
        for where, names in keyed:
            for k, name in enumerate(names):
                key = f"{where}.{k}"
                _require(config, "datasets", name, key)
                fmt = config["datasets"][name]["format"]
                if fmt not in formats:
                    raise ConfigError(
                        f"config key '{key}': dataset {name!r} has format {fmt}; "
                        f"{task} reads {', '.join(formats)}"
                    )
    _check_finetune_warmup(config)
    for name, ablation in config.get("ablations", {}).items():
        _require(config, "runs", ablation["base"], f"ablations.{name}.base")
        _check_ablation_values(config, name, ablation)
        for k, entry in enumerate(ablation["tasks"]):
            if task_entry(entry) not in finetune_recipes(config):
                raise ConfigError(
                    f"config key 'ablations.{name}.tasks.{k}': {entry!r} is not a configured "
                    "fine-tuning task/dataset (finetune.<task>.datasets, or "
                    "<task>-<variant>/<dataset> for finetune.<task>.variants)"
                )
    curation = config.get("curation", {})
    if curation.get("subsets"):
        _require(config, "datasets", curation["dataset"], "curation.dataset")
        _require(config, "teachers", curation["teacher"], "curation.teacher")
        for key in ("sample_sizes", "resampling_steps"):  # a list: one per level
            value = curation.get(key)
            if isinstance(value, list) and len(value) != len(curation["levels"]):
                raise ConfigError(
                    f"config key 'curation.{key}': {len(value)} entries, one per level "
                    f"expected ({len(curation['levels'])} levels)"
                )
    images = {**config.get("datasets", {}), **dict.fromkeys(curation.get("subsets", []))}
    for run in all_runs(config):
        spec = run_spec(config, run)
        if spec["dataset"] not in images:
            known = ", ".join(sorted(images))
            raise ConfigError(
                f"config key 'runs.{run}: pretrain.dataset': {spec['dataset']!r} is neither a "
                f"dataset nor a curation subset (known: {known})"
            )
        _check_warmup(config, run, spec)
        card = method_card(spec["method"])
        if card.clip_teacher:
            _require(
                config,
                "teachers",
                card.clip_teacher_of(spec),
                f"runs.{run}: pretrain.{card.section}.teacher",
            )
        _check_cached_views(config, run, spec)
        if card.teacher_run_of(spec) is not None:
            _check_teacher_run(config, run, spec)
        _check_patch_multiples(run, spec)


def _check_ablation_values(
    config: Mapping[str, Any], name: str, ablation: Mapping[str, Any]
) -> None:
    """An ablation's values must differ from each other, on a key its base run's method reads."""
    method = config["runs"][ablation["base"]]["method"]
    axis = ablation["axis"]
    if axis in method_card(method).ignored_keys:
        raise ConfigError(
            f"config key 'ablations.{name}.axis': method {method} (run {ablation['base']!r}) "
            f"ignores pretrain.{axis}, so every value would train the same run"
        )
    values = ablation["values"]
    for k, value in enumerate(values):
        if value in values[:k]:
            raise ConfigError(
                f"config key 'ablations.{name}.values.{k}': {value!r} is listed twice "
                f"(values of {axis}: {values}); each value must be a different run"
            )


def _check_cached_views(config: Mapping[str, Any], run: str, spec: Mapping[str, Any]) -> None:
    """``cached_crops`` names a teacher; ``cache_views`` only counts for a run on cached views."""
    if spec.get("cached_crops") is not None:
        _require(config, "teachers", spec["cached_crops"], f"runs.{run}: pretrain.cached_crops")
    if "cache_views" in spec and cached_views(config, spec) is None:
        raise ConfigError(
            f"config key 'runs.{run}: pretrain.cache_views': run {run!r} draws a fresh crop "
            "each epoch (no cached targets or cached_crops), so it would train as without it"
        )


def cached_views(config: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The K fixed views per image a run trains on, or ``None`` for a fresh crop per epoch.

    cgd_mae with ``distill.targets: cached`` trains on the views its teacher's targets were
    made from; any MAE-style run can train on the same views with ``cached_crops: <teacher>``
    (the control that separates fixed crops from distillation). The views follow the run:
    its dataset, img_size, crop_scale and ``cache_views`` (the teacher's when unset).
    """
    card = method_card(spec["method"])
    if card.cached_targets(spec):
        teacher = card.clip_teacher_of(spec)
    elif spec.get("cached_crops") is not None:
        teacher = spec["cached_crops"]
    else:
        return None
    views = {
        "teacher": teacher,
        "dataset": spec["dataset"],
        "views": spec.get("cache_views", config["teachers"][teacher]["cache_views"]),
        "img_size": list(spec["model"]["img_size"]),
        "crop_scale": list(spec["crop_scale"]),
    }
    return views | ({"draft": True} if spec.get("decode_draft") else {})


def targets_file(config: Mapping[str, Any], spec: Mapping[str, Any]) -> str | None:
    """The cached-targets file of a run's views (``None`` without): one per teacher, dataset,
    size and crop scale, so runs that crop alike share it and no run trains on crops made for
    another. View k of an image is drawn from (seed, image, k) alone, so the first K views of
    a store with more are exactly a K-view store: the file holds the most views any run of the
    config asks for, and a run with fewer reads its first ones (the ``cache_views`` ablation
    costs the teacher one pass over the pool, not one per value)."""
    views = cached_views(config, spec)
    if views is None:
        return None
    crops = {k: v for k, v in views.items() if k != "views"}
    most = max(
        other["views"]
        for run in all_runs(config)
        if (other := cached_views(config, run_spec(config, run))) is not None
        and {k: v for k, v in other.items() if k != "views"} == crops
    )
    (height, width), (smin, smax) = views["img_size"], views["crop_scale"]
    decode = DRAFT_SUFFIX if views.get("draft") else ""
    return (
        f"results/teacher/{views['teacher']}/targets/{views['dataset']}/"
        f"k{most}_{height}x{width}_s{smin:g}-{smax:g}{decode}.pt"
    )


def _check_warmup(config: Mapping[str, Any], run: str, spec: Mapping[str, Any]) -> None:
    """The lr must leave its warm-up: ``warmup_epochs`` below ``epochs`` (of a run that trains)."""
    warmup, epochs = spec["warmup_epochs"], spec["epochs"]
    if not method_card(spec["method"]).trains or epochs == 0 or warmup < epochs:
        return
    overrides = all_runs(config)[run].get("overrides", {})
    keys = [k for k in ("warmup_epochs", "epochs") if k in overrides]
    if "@" in run:
        where = f"ablations ({run}): pretrain.warmup_epochs"
    elif keys:
        where = f"runs.{run}.overrides.{keys[0]}"
    else:
        where = "pretrain.warmup_epochs"
    raise ConfigError(
        f"config key '{where}': run {run!r} has warmup_epochs {warmup} >= epochs {epochs}, so "
        "its lr would never leave the warm-up; warmup_epochs must be below epochs"
    )


def _check_finetune_warmup(config: Mapping[str, Any]) -> None:
    finetune = config.get("finetune", {})
    for task in task_names():
        if "epochs" not in finetune.get(task, {}):
            continue
        checks = [(f"finetune.{task}", finetune[task])]
        for variant, entry in (finetune[task].get("variants") or {}).items():
            settings = entry.get("settings") or {}
            checks.append(
                (f"finetune.{task}.variants.{variant}.settings", finetune[task] | settings)
            )
        for where, spec in checks:
            warmup, epochs = spec.get("warmup_epochs", 0), spec["epochs"]
            if warmup >= epochs:
                raise ConfigError(
                    f"config key '{where}.warmup_epochs': {warmup} >= epochs {epochs}, so "
                    "the lr would never leave the warm-up; warmup_epochs must be below epochs"
                )


def _check_teacher_run(config: Mapping[str, Any], run: str, spec: Mapping[str, Any]) -> None:
    """A teacher run (MAE-Lite's) is another run, on the student's patch grid, with no cycle."""
    card = method_card(spec["method"])
    key = f"runs.{run}: pretrain.{card.section}.teacher_run"
    runs = all_runs(config)
    chain = [run]
    teacher = card.teacher_run_of(spec)
    while teacher is not None:
        if teacher not in runs:
            known = ", ".join(sorted(runs))
            raise ConfigError(f"config key '{key}': {teacher!r} is not a run (known: {known})")
        if teacher in chain:
            cycle = " -> ".join([*chain, teacher])
            raise ConfigError(f"config key '{key}': the teacher runs form a cycle ({cycle})")
        chain.append(teacher)
        teacher_spec = run_spec(config, teacher)
        teacher = method_card(teacher_spec["method"]).teacher_run_of(teacher_spec)
    teacher_spec = run_spec(config, chain[1])
    student, other = spec["model"], teacher_spec["model"]
    grid = [s // student["patch_size"] for s in student["img_size"]]
    teacher_grid = [s // other["patch_size"] for s in other["img_size"]]
    if grid != teacher_grid:
        raise ConfigError(
            f"config key '{key}': teacher run {chain[1]!r} sees a {teacher_grid} patch grid, "
            f"run {run!r} a {grid} one; the attention maps must cover the same patches"
        )


def _check_patch_multiples(run: str, spec: Mapping[str, Any]) -> None:
    """Sizes the method cuts into whole patches (its card's ``patch_multiples``)."""
    patch = spec["model"]["patch_size"]
    for key in method_card(spec["method"]).patch_multiples:
        size = get_dotted(spec, key, where=f"runs.{run}: pretrain.{key}")
        if any(s % patch for s in size):
            raise ConfigError(
                f"config key 'runs.{run}: pretrain.{key}': {list(size)} is not a multiple of "
                f"the patch size {patch}"
            )


def set_dotted(spec: dict[str, Any], dotted: str, value: Any, *, where: str) -> None:
    """Set ``a.b.c`` in a nested dict, refusing keys the defaults do not have."""
    get_dotted(spec, dotted, where=where)
    parent, _, leaf = dotted.rpartition(".")
    (get_dotted(spec, parent, where=where) if parent else spec)[leaf] = value


def task_entry(entry: str) -> tuple[str, str]:
    """``reid/veri776`` -> ("reid", "veri776"): an ablation's task/dataset pair."""
    task, _, dataset = entry.partition("/")
    return task, dataset


def ablation_run_name(base: str, axis: str, value: Any) -> str:
    """``cgd_mae@mask_ratio=0.9``: the run an ablation value expands into."""
    text = json.dumps(value) if not isinstance(value, str) else value
    return f"{base}@{axis}={text}"


def ablation_runs(config: Mapping[str, Any], name: str) -> list[tuple[Any, str]]:
    """(value, run name) per value of an ablation; the base run's own value maps to the base run,
    so a run shared by several tables is trained once."""
    ablation = config["ablations"][name]
    base, axis = ablation["base"], ablation["axis"]
    base_spec = _spec(config, base, config["runs"][base])
    if axis == "cache_views" and axis not in base_spec and cached_views(config, base_spec):
        base_value = cached_views(config, base_spec)["views"]  # the teacher's, when unset
    elif axis in OPTIONAL_PRETRAIN_KEYS:
        base_value = base_spec.get(axis)
    else:
        base_value = get_dotted(base_spec, axis, where=f"ablations.{name}.axis")
    runs = []
    for k, value in enumerate(ablation["values"]):
        run = base if value == base_value else ablation_run_name(base, axis, value)
        if not re.match(NAME_PATTERN, run) and not re.match(ABLATION_RUN_PATTERN, run):
            raise ConfigError(
                f"config key 'ablations.{name}.values.{k}': {value!r} makes the run name "
                f"{run!r}, which is not allowed (a value in a run name is letters, digits "
                "and _ . + - only, and no ..)"
            )
        runs.append((value, run))
    return runs


def all_runs(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The declared runs plus one run per ablation value: ``{name: {method, overrides}}``."""
    runs = {name: dict(run) for name, run in config.get("runs", {}).items()}
    for name, ablation in config.get("ablations", {}).items():
        _require(config, "runs", ablation["base"], f"ablations.{name}.base")
        base = runs[ablation["base"]]
        for value, run in ablation_runs(config, name):
            overrides = {**base.get("overrides", {}), ablation["axis"]: value}
            runs.setdefault(run, {"method": base["method"], "overrides": overrides})
    return runs


def get_dotted(spec: Mapping[str, Any], dotted: str, *, where: str) -> Any:
    """The value at ``a.b.c``; a key the spec does not have is named with the known ones."""
    node: Any = spec
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, Mapping) or part not in node:
            known = ", ".join(sorted(node)) if isinstance(node, Mapping) else "none (not a section)"
            prefix = ".".join(parts[:depth]) or "pretrain"
            raise ConfigError(
                f"config key '{where}': {dotted!r} is not a pretrain key ({prefix} has: {known})"
            )
        node = node[part]
    return node


def run_spec(config: Mapping[str, Any], run: str) -> dict[str, Any]:
    """The full pre-training spec of a run: ``pretrain`` defaults plus the run's overrides."""
    runs = all_runs(config)
    if run not in runs:
        known = ", ".join(sorted(runs)) or "none"
        raise ConfigError(f"config key 'runs': {run!r} is not a run (known: {known})")
    return _spec(config, run, runs[run])


def method_sections() -> dict[str, str]:
    """`pretrain` sections that only one method reads, and that method: a run's spec keeps
    only its own (the methods' cards)."""
    return {card.section: card.name for card in method_cards() if card.section}


def _spec(config: Mapping[str, Any], run: str, declared: Mapping[str, Any]) -> dict[str, Any]:
    """``pretrain`` without the other methods' sections, plus the run's overrides.

    Leaving the other methods' sections out means that changing, say, ``person_vit.out_dim``
    does not make Snakemake retrain the ``mae`` run.
    """
    import copy

    method = declared["method"]
    try:
        card = method_card(method)
    except KeyError as exc:
        raise ConfigError(f"config key 'runs.{run}.method': {exc.args[0]}") from None
    sections = method_sections()
    spec = {
        key: copy.deepcopy(value)
        for key, value in config["pretrain"].items()
        if sections.get(key, method) == method
    }
    where = f"ablations ({run})" if "@" in run else f"runs.{run}.overrides"
    for dotted, value in declared.get("overrides", {}).items():
        if dotted in card.ignored_keys:
            raise ConfigError(
                f"config key '{where}.{dotted}': method {method} ignores pretrain.{dotted}, "
                f"so run {run!r} would train as without it"
            )
        section = dotted.split(".")[0]
        if sections.get(section, method) != method:
            raise ConfigError(
                f"config key '{where}.{dotted}': {section}.* configures method "
                f"{sections[section]}, but run {run!r} is {method}"
            )
        if dotted in OPTIONAL_PRETRAIN_KEYS:
            spec[dotted] = value
        else:
            set_dotted(spec, dotted, value, where=f"{where}.{dotted}")
    spec["method"] = method
    return apply_limits(spec, config.get("limits", {}))


def apply_limits(
    spec: dict[str, Any], limits: Mapping[str, Any], multiple_of: int = 1
) -> dict[str, Any]:
    """A training job's spec under a rehearsal's ``limits`` (a step cap and a batch cap).

    Keys are added only for a limit that is set, so a config without limits resolves to the
    same spec as before (and Snakemake reruns nothing). ``multiple_of`` keeps a ReID batch
    whole P × K.
    """
    if limits.get("max_steps") is not None:
        spec["max_steps"] = limits["max_steps"]
    cap = limits.get("batch_size")
    if cap is not None and spec["batch_size"] > cap:
        # a P × K batch keeps two identities at least, or the triplet loss has no negative
        floor = 2 * multiple_of if multiple_of > 1 else 1
        spec["batch_size"] = max(floor, cap - cap % multiple_of)
    return spec


def finetune_spec(config: Mapping[str, Any], recipe: str, dataset: str) -> dict[str, Any]:
    """A recipe's fine-tuning settings for one dataset (its per_dataset entry and variant
    applied), without the dataset list or other datasets' entries (adding either reruns
    nothing), under the config's ``limits``."""
    spec = recipe_spec(config["finetune"], recipe, dataset)
    limits = config.get("limits", {})
    pk_batch = task_card(split_recipe(recipe)[0]).pk_batch
    return apply_limits(spec, limits, spec["instances"] if pk_batch else 1)


def finetune_recipes(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(recipe, dataset) of every configured fine-tuning job: the main table's columns."""
    return recipes(config.get("finetune", {}), task_names())


def finetune_jobs(config: Mapping[str, Any], runs: Iterable[str]) -> list[tuple[str, str, str]]:
    """(run, recipe, dataset) to fine-tune: every recipe for declared runs, the ablation's
    for the runs an ablation adds."""
    runs = list(runs)
    jobs = []
    for run in runs:
        if run in config["runs"]:
            jobs += [(run, r, d) for r, d in finetune_recipes(config)]
    for name, ablation in config.get("ablations", {}).items():
        for _, run in ablation_runs(config, name):
            if run in runs:
                jobs += [(run, *task_entry(entry)) for entry in ablation["tasks"]]
    return list(dict.fromkeys(jobs))


def teachers_of(config: Mapping[str, Any], runs: Iterable[str]) -> list[str]:
    """The CLIP teachers ``runs`` were trained with: cgd_mae's, and the one whose cached views
    a run trains on. A table's provenance quotes their weights' hashes."""
    teachers = set()
    for run in runs:
        spec = run_spec(config, run)
        clip_teacher = method_card(spec["method"]).clip_teacher_of(spec)
        if clip_teacher is not None:
            teachers.add(clip_teacher)
        views = cached_views(config, spec)
        if views is not None:
            teachers.add(views["teacher"])
    return sorted(teachers)
