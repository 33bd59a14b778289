"""Embed the pool with the CLIP teacher (resumable), float16 .npy in pool order: all of it,
one shard of it, or join the shards."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

from cgdmae.curation.embed import embed_images, gather_embeddings, teacher_encoder
from cgdmae.data import read_pool
from cgdmae.data.scan import corrupt_images
from cgdmae.workflow import prepare_job, rule_logging

prepare_job(snakemake.threads, snakemake.config["data"]["decoded_cache_mb"])
with rule_logging(snakemake.log[0]) as log:
    if hasattr(snakemake.input, "shards"):
        embeddings = gather_embeddings(snakemake.input.shards, snakemake.output[0])
        log.info("joined %d shards: %s", len(snakemake.input.shards), embeddings.shape)
    else:
        shard, shards = getattr(snakemake.params, "shard", [0, 1])
        encode, size = teacher_encoder(snakemake.input.teacher)
        paths = [r.path for r in read_pool(snakemake.input.images)]
        skipped = corrupt_images(
            paths, snakemake.config["data"]["on_corrupt"], snakemake.input.images
        )
        embed_images(
            paths,
            encode,
            size,
            snakemake.output[0],
            batch_size=snakemake.params.batch_size,
            skip=skipped,
            shard=shard,
            shards=shards,
        )
        log.info("embedded %d images (skipped_images: %d)", len(paths), len(skipped))
