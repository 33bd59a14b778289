"""Cache the teacher's embeddings of K fixed augmented views per pre-training image."""

from cgdmae.pretrain.run import training_images
from cgdmae.pretrain.teacher import cache_teacher_targets, load_teacher
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
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
    )
    log.info("wrote %s", snakemake.output[0])
