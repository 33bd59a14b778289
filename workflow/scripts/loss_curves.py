"""Pre-training loss curves of every run."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

from cgdmae.report.figures import loss_curves, loss_frame, save_data, save_figure
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
    runs = dict(zip(snakemake.params.runs, snakemake.input, strict=True))
    written = save_figure(loss_curves(runs), snakemake.output.pdf.removesuffix(".pdf"))
    log.info("wrote %s", written)
    if snakemake.output.get("csv"):  # the curves' data, for dvc plots
        log.info("wrote %s", save_data(loss_frame(runs), snakemake.output.csv))
