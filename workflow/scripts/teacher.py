"""Build a CLIP teacher: train the small one here, or check a pretrained one is on disk. Its
metrics.json records the weights' SHA-256, which the tables' provenance quotes."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

from pathlib import Path

from cgdmae.data import read_pool
from cgdmae.files import file_sha256, write_json
from cgdmae.teacher.clip import (
    OPEN_CLIP_WEIGHTS,
    describe_pretrained,
    resolve_pretrained,
    train_small_teacher,
)
from cgdmae.workflow import prepare_job, rule_logging

prepare_job(snakemake.threads, snakemake.config["data"]["decoded_cache_mb"])
with rule_logging(snakemake.log[0]) as log:
    spec = snakemake.params.spec
    key = f"teachers.{snakemake.wildcards.teacher}.pretrained"
    if spec["source"] == "train":
        metrics = train_small_teacher(
            read_pool(snakemake.input.images),
            snakemake.output.model,
            model=spec["model"],
            seed=snakemake.params.seed,
            **spec["train"],
        )
        weights = Path(snakemake.output.model) / OPEN_CLIP_WEIGHTS
    else:
        describe_pretrained(spec["name"], spec["pretrained"], snakemake.output.model, key)
        metrics = {"source": "pretrained", "name": spec["name"], "pretrained": spec["pretrained"]}
        weights = resolve_pretrained(spec["name"], spec["pretrained"], key)
    metrics["weights_sha256"] = file_sha256(weights)
    write_json(snakemake.output.metrics, metrics)
    log.info("teacher %s: %s", snakemake.wildcards.teacher, metrics)
