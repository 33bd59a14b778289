"""Embed the pool with the CLIP teacher (resumable), float16 .npy in pool order."""

from cgdmae.curation.embed import embed_images, teacher_encoder
from cgdmae.data import read_pool
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
    encode, size = teacher_encoder(snakemake.input.teacher)
    paths = [r.path for r in read_pool(snakemake.input.images)]
    embed_images(paths, encode, size, snakemake.output[0], batch_size=snakemake.params.batch_size)
    log.info("embedded %d images", len(paths))
