"""Cluster sizes before/after, the centroids before/after resampling, and sample images of a
few clusters of one subset."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

from pathlib import Path

from cgdmae.report.figures import curation_figure, save_figure
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
    figure = curation_figure(
        Path(snakemake.input.stats),
        Path(snakemake.input.manifest),
        Path(snakemake.input.resampling),
    )
    log.info("wrote %s", save_figure(figure, snakemake.output.pdf.removesuffix(".pdf")))
