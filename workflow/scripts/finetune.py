"""Fine-tune one run's encoder on one task and dataset; exit 75 after a SIGTERM checkpoint."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

import sys

from cgdmae.finetune.run import run_finetune
from cgdmae.training.engine import EXIT_PREEMPTED, Preempted
from cgdmae.workflow import prepare_job, rule_logging

prepare_job(snakemake.threads, snakemake.config["data"]["decoded_cache_mb"])
with rule_logging(snakemake.log[0]) as log:
    try:
        run_finetune(
            snakemake.params.task,
            snakemake.params.dataset,
            snakemake.input.encoder,
            snakemake.params.model,
            snakemake.params.spec,
            snakemake.output[0],
            seeds=snakemake.params.seeds,
            on_corrupt=snakemake.config["data"]["on_corrupt"],
        )
    except Preempted as exc:
        log.warning("%s", exc)
        sys.exit(EXIT_PREEMPTED)
