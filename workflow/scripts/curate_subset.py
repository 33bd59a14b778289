"""One pre-training subset, sampled from the pool's clusters: manifest.csv (path, cluster ids,
selected), stats.json and resampling.json (the finest centroids before and after resampling)."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

from pathlib import Path

from cgdmae.curation.subsets import PoolClusters, curate, load_embeddings
from cgdmae.data import read_pool
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
    pool = read_pool(snakemake.input.images)
    stats = curate(
        snakemake.wildcards.subset,
        pool,
        load_embeddings(snakemake.input.embeddings, len(pool)),
        snakemake.params.cfg,
        Path(snakemake.output.manifest).parent,
        seed=snakemake.params.seed,
        clusters=PoolClusters.load(snakemake.input.clusters, len(pool)),
    )
    log.info("%s", {k: v for k, v in stats.items() if not k.startswith("cluster_sizes")})
