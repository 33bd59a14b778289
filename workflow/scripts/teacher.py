"""Build a CLIP teacher: train the small one here, or check a pretrained one is on disk."""

from cgdmae.data import read_pool
from cgdmae.files import write_json
from cgdmae.pretrain.teacher import describe_pretrained, train_small_teacher
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
    spec = snakemake.params.spec
    if spec["source"] == "train":
        metrics = train_small_teacher(
            read_pool(snakemake.input.images),
            snakemake.output.model,
            model=spec["model"],
            seed=snakemake.params.seed,
            metrics_path=snakemake.output.metrics,
            **spec["train"],
        )
    else:
        describe_pretrained(
            spec["name"],
            spec["pretrained"],
            snakemake.output.model,
            config_key=f"teachers.{snakemake.wildcards.teacher}.pretrained",
        )
        metrics = {"source": "pretrained", "name": spec["name"], "pretrained": spec["pretrained"]}
        write_json(snakemake.output.metrics, metrics)
    log.info("teacher %s: %s", snakemake.wildcards.teacher, metrics)
