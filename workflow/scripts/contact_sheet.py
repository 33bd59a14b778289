"""Contact sheet of the synthetic world: one sample per camera, type and colour, and look-alikes."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

from pathlib import Path

from cgdmae.data.synth.contact_sheet import write_contact_sheet
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
    write_contact_sheet(
        Path(snakemake.output[0]),
        seed=snakemake.params.seed,
        image_size=tuple(snakemake.params.image_size),
    )
    log.info("wrote %s", snakemake.output[0])
