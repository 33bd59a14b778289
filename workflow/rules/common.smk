"""Config validation (before any job runs) and the helpers the other rule files share."""

import hashlib
import json
import sys
from pathlib import Path

from cgdmae.cluster import slurm_resources
from cgdmae.config import (
    ConfigError,
    DRAFT_SUFFIX,
    SYNTHETIC_DATASETS,
    SYNTHETIC_ROOT,
    ablation_runs,
    all_runs,
    check_datasets,
    check_paths,
    task_names,
    finetune_recipes,
    finetune_jobs,
    finetune_spec,
    run_spec,
    targets_file,
    task_entry,
    teachers_of,
    validate_config,
)
from cgdmae.finetune.cards import task_card
from cgdmae.pretrain.cards import method_card
from cgdmae.finetune.spec import VARIANT_NAME_PATTERN, VARIANT_SEPARATOR, split_recipe
from cgdmae.workflow import provenance_path

PAPER = Path(workflow.basedir) / "paper"

try:
    validate_config(
        config, Path(workflow.current_basedir).parent / "schemas" / "config.schema.yaml"
    )
    check_paths(config)
    if workflow.is_main_process:  # jobs parse this file again: check the data once
        check_datasets(config)
except ConfigError as error:  # one line naming the key, not a traceback of this file
    sys.exit(
        f"{' '.join(map(provenance_path, workflow.overwrite_configfiles)) or 'config/config.yaml'}: {error}"
    )


# Where a local run starts: the teacher and curation chain feeds most pre-training runs, and
# each pre-training run feeds five fine-tunings, so neither is left to the end of the run
# while short jobs go first (Snakemake runs the highest priority of the ready jobs first).
# Every rule declares one thread. On a CPU two jobs side by side outrun one on two threads,
# and a two-thread job waits until both cores are free at once: on a busy 2-core laptop the
# teacher's 4-second text job waited 8 minutes, and the cgd_mae runs behind it. On a cluster
# a job's CPUs come from its resources (cgdmae.cluster), not from `threads`.
TEACHER_PRIORITY = 2
PRETRAIN_PRIORITY = 1


def dataset_root(name):
    """Root directory of a configured dataset (generated if it is a synthetic one)."""
    return config["datasets"][name]["path"]


def synthetic_targets():
    """The synthetic datasets that some configured dataset points at."""
    return sorted(
        {
            spec["path"]
            for spec in config["datasets"].values()
            if spec["path"].startswith(f"{SYNTHETIC_ROOT}/")
        }
    )


def teacher_inputs(name):
    """A teacher trained here depends on its image-caption dataset; a pretrained one on its
    weights file when a rule writes it (under results/, as the rehearsal's), else on nothing.
    """
    spec = config["teachers"][name]
    if spec["source"] == "train":
        return dataset_root(spec["dataset"])
    return [spec["pretrained"]] if spec["pretrained"].startswith("results/") else []


def image_source(name):
    """A dataset's root, or a curation subset's manifest."""
    if name in config["curation"]["subsets"]:
        return f"results/curation/{name}/manifest.csv"
    return dataset_root(name)


def text_anchors_key(templates):
    """A short name for a list of KL templates: the teacher_text file every run with these
    templates shares."""
    return hashlib.sha256(json.dumps(list(templates)).encode()).hexdigest()[:12]


def anchor_templates():
    """The templates of every cgd_mae run, by key."""
    specs = [run_spec(config, run) for run in all_runs(config)]
    cards = [method_card(s["method"]) for s in specs]
    return {
        text_anchors_key(s[c.section]["templates"]): s[c.section]["templates"]
        for s, c in zip(specs, cards)
        if c.clip_teacher
    }


def pretrain_inputs(wildcards):
    """Images; the cached targets of a run on fixed views (cgd_mae's, or ``cached_crops``);
    for a method distilling CLIP (cgd_mae) the teacher and its text anchors; for one
    distilling another run (mae_lite) that run's checkpoint, so that run is trained first.
    """
    spec = run_spec(config, wildcards.run)
    card = method_card(spec["method"])
    inputs = {"images": image_source(spec["dataset"])}
    teacher_run = card.teacher_run_of(spec)
    if teacher_run is not None:
        inputs["teacher_checkpoint"] = f"results/pretrain/{teacher_run}/checkpoint.pth"
    teacher = card.clip_teacher_of(spec)
    if teacher is not None:
        inputs["teacher"] = f"results/teacher/{teacher}/model"
        key = text_anchors_key(spec[card.section]["templates"])
        inputs["text_anchors"] = f"results/teacher/{teacher}/text/{key}.pt"
    targets = targets_file(config, spec)
    if targets is not None:
        inputs["targets"] = targets
    return inputs


def teacher_metrics(runs):
    """metrics.json (with the weights' hash) of the teachers ``runs`` were trained with."""
    return [f"results/teacher/{t}/metrics.json" for t in teachers_of(config, runs)]


def finetune_targets(runs):
    """metrics.json of each fine-tuning job of ``runs``."""
    return [
        f"results/finetune/{run}/{task}/{dataset}/metrics.json"
        for run, task, dataset in finetune_jobs(config, runs)
    ]


CONFIG_FILES = [provenance_path(p) for p in workflow.overwrite_configfiles] or [
    "config/config.yaml"
]


def configured_tasks():
    """(recipe, dataset) of every configured fine-tuning job, in table column order."""
    return finetune_recipes(config)


def ablation_rows(name):
    """(label, run) per value of an ablation: the table's rows."""
    axis = config["ablations"][name]["axis"]
    return [(f"{axis}={value}", run) for value, run in ablation_runs(config, name)]


def ablation_tasks(name):
    return [task_entry(entry) for entry in config["ablations"][name]["tasks"]]


def metrics_of(rows, tasks):
    return [
        f"results/finetune/{run}/{task}/{dataset}/metrics.json"
        for _, run in rows
        for task, dataset in tasks
    ]


def cmc_tasks():
    """ReID datasets with a query/gallery split, whose CMC curves are plotted (not VehicleID)."""
    return [
        (t, d)
        for t, d in configured_tasks()
        if t in task_names() and task_card(t).cmc_curve and d != "vehicleid"
    ]


def reconstruction_runs():
    """Declared runs whose MAE decoder reconstructs masked patches of the same image: not
    scratch (untrained) nor person_vit (its decoder is unused and stays frozen)."""
    return [
        r
        for r in config["runs"]
        if method_card(run_spec(config, r)["method"]).reconstructs
    ]


def job_resources(gpus, nodes=1, threads=1):
    """Slurm resources of a job on ``gpus`` GPUs (per node): CPUs and memory follow the GPUs
    (cgdmae.cluster); ``cpus_per_task`` is always set, so no profile default overrides it.
    """
    return slurm_resources(config["cluster"], gpus, nodes=nodes, threads=threads)


def resources_by(wildcards_to_resources):
    """``job_resources`` for rules whose GPU count depends on the wildcards: one function per
    resource, as Snakemake's ``resources:`` takes them."""

    def pick(key):
        return lambda wildcards: wildcards_to_resources(wildcards)[key]

    return {key: pick(key) for key in job_resources(1)}


def run_resources(wildcards):
    spec = run_spec(config, wildcards.run)
    return job_resources(spec["gpus"], nodes=spec.get("nodes", 1), threads=2)


def curation_embed_inputs(wildcards):
    """The pool and the teacher, or with ``cluster.shards`` > 1 the shard files to join."""
    shards = config["cluster"]["shards"]
    if shards == 1:
        return {
            "images": dataset_root(wildcards.dataset),
            "teacher": f"results/teacher/{config['curation']['teacher']}/model",
        }
    stem = f"results/curation/embeddings/{wildcards.dataset}"
    return {"shards": [f"{stem}.shard{i}of{shards}.npz" for i in range(shards)]}


def teacher_targets_inputs(wildcards):
    """The teacher and the images, or with ``cluster.shards`` > 1 the shard files to join."""
    shards = config["cluster"]["shards"]
    if shards == 1:
        return {
            "teacher": f"results/teacher/{wildcards.teacher}/model",
            "images": image_source(wildcards.dataset),
        }
    stem = (
        f"results/teacher/{wildcards.teacher}/targets/{wildcards.dataset}/k{wildcards.views}_"
        f"{wildcards.height}x{wildcards.width}_s{wildcards.smin}-{wildcards.smax}{wildcards.decode}"
    )
    return {"shards": [f"{stem}.shard{i}of{shards}.pt" for i in range(shards)]}


def teacher_targets_resources(wildcards):
    """The teacher's GPUs, or a CPU job that joins the shards."""
    if config["cluster"]["shards"] > 1:
        return job_resources(0)
    return teacher_resources(wildcards)


def teacher_resources(wildcards):
    """The teacher's GPUs, for training one here and for its cached targets."""
    gpus = config["teachers"][wildcards.teacher].get("gpus", 0)
    return job_resources(gpus, threads=2)


def teacher_build_resources(wildcards):
    """Training a teacher uses its GPUs; recording a pretrained one's file needs none."""
    if config["teachers"][wildcards.teacher]["source"] == "pretrained":
        return job_resources(0)
    return teacher_resources(wildcards)


def clustering_settings():
    """The curation keys the pool's clusters depend on; the subsets drawn from them are not."""
    keys = (
        "dedup_threshold",
        "levels",
        "sample_sizes",
        "n_iter",
        "resampling_steps",
        "backend",
    )
    return {key: config["curation"][key] for key in keys}


def kmeans_gpus():
    """Curation's k-means runs on the GPU with the torch backend, on CPUs with faiss."""
    curation = config["curation"]
    return curation["gpus"] if curation["backend"] == "torch" else 0
