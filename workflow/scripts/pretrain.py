"""Pre-train one run (in this process, or under torchrun when gpus > 1, srun + torchrun when
nodes > 1); exit 75 after a SIGTERM checkpoint."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

import sys
from pathlib import Path

from cgdmae.config import cached_views
from cgdmae.pretrain.cli import launch, pretrain_argv
from cgdmae.workflow import prepare_job

prepare_job(snakemake.threads, snakemake.config["data"]["decoded_cache_mb"])
spec = snakemake.params.spec
views = cached_views(snakemake.config, spec)
argv = pretrain_argv(
    snakemake.wildcards.run,
    spec,
    snakemake.input.images,
    Path(snakemake.output.encoder).parent,
    seed=snakemake.params.seed,
    on_corrupt=snakemake.config["data"]["on_corrupt"],
    inputs=dict(snakemake.input.items()),
    target_views=views["views"] if views else None,
)
sys.exit(launch(argv, spec["gpus"], snakemake.log[0], nodes=spec.get("nodes", 1)))
