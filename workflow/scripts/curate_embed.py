"""Embed the pool with the CLIP teacher (resumable), float16 .npy in pool order."""

from cgdmae.curation.embed import embed_images, teacher_encoder
from cgdmae.data import read_pool
from cgdmae.data.scan import decoding_workers, without_corrupt
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
    encode, size = teacher_encoder(snakemake.input.teacher)
    paths = [r.path for r in read_pool(snakemake.input.images)]
    _, skipped = without_corrupt(
        paths,
        lambda path: [path],
        snakemake.config["data"]["on_corrupt"],
        snakemake.input.images,
        decoding_workers(),
    )
    embed_images(
        paths,
        encode,
        size,
        snakemake.output[0],
        batch_size=snakemake.params.batch_size,
        skip=skipped,
    )
    log.info("embedded %d images (skipped_images: %d)", len(paths), len(skipped))
