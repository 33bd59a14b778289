"""Dedup and hierarchical k-means of the pool's embeddings, once for every subset drawn from it."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

import numpy as np

from cgdmae.curation.subsets import cluster_pool
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
    embeddings = np.load(snakemake.input.embeddings)
    clusters = cluster_pool(embeddings, snakemake.params.cfg, seed=snakemake.params.seed)
    clusters.save(snakemake.output[0])
    log.info(
        "%d images: %d near-duplicates or undecodable removed, clusters per level %s",
        len(embeddings),
        int(clusters.drop.sum()),
        [len(c) for c in clusters.hierarchy.centroids],
    )
