"""Write one synthetic dataset in the real on-disk format of the set it stands in for."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

from pathlib import Path

from cgdmae.data.synth import writers
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
    world = snakemake.params.world
    write = getattr(writers, f"write_{snakemake.wildcards.dataset}")
    summary = write(
        Path(snakemake.output[0]),
        seed=world["seed"],
        image_size=tuple(world["image_size"]),
        n_cameras=world["n_cameras"],
        **snakemake.params.sizes,
    )
    log.info("wrote %s: %s", snakemake.output[0], summary)
