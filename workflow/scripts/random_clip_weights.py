"""A randomly initialised open_clip model as a local weights file (the rehearsal's teacher)."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

from cgdmae.teacher.clip import save_random_weights
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
    n = save_random_weights(snakemake.wildcards.name, snakemake.output[0], snakemake.params.seed)
    log.info("wrote %s: random %s, %d parameters", snakemake.output[0], snakemake.wildcards.name, n)
