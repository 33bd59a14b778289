"""Cache the teacher's embeddings of K fixed augmented views per pre-training image: all of
them, one shard of them, or join the shards into the store."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

from cgdmae.config import DRAFT_SUFFIX
from cgdmae.pretrain.run import training_images
from cgdmae.teacher.clip import load_teacher
from cgdmae.teacher.targets import cache_teacher_targets, gather_teacher_targets
from cgdmae.workflow import prepare_job, rule_logging

prepare_job(snakemake.threads, snakemake.config["data"]["decoded_cache_mb"])
with rule_logging(snakemake.log[0]) as log:
    if hasattr(snakemake.input, "shards"):
        gather_teacher_targets(snakemake.input.shards, snakemake.output[0])
    else:
        shard, shards = getattr(snakemake.params, "shard", [0, 1])
        cache_teacher_targets(
            load_teacher(snakemake.input.teacher),
            training_images(snakemake.input.images, snakemake.config["data"]["on_corrupt"]),
            snakemake.output[0],
            views=snakemake.params.views,
            img_size=tuple(snakemake.params.img_size),
            scale=tuple(snakemake.params.crop_scale),
            seed=snakemake.params.seed,
            # decode workers: the job's CPUs but the one that feeds the teacher
            num_workers=max(0, int(snakemake.resources.get("cpus_per_task", 1)) - 1),
            shard=shard,
            shards=shards,
            draft=snakemake.wildcards.decode == DRAFT_SUFFIX,
        )
    log.info("wrote %s", snakemake.output[0])
