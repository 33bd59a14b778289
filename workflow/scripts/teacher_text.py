"""The teacher's text embeddings of the KL anchors (templates × colours × types), once for
every run that uses them."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

from cgdmae.teacher.clip import save_text_anchors
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
    n = save_text_anchors(snakemake.input.teacher, snakemake.params.templates, snakemake.output[0])
    log.info("wrote %s: %d anchors", snakemake.output[0], n)
