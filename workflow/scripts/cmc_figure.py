"""CMC curves of every run on every ReID dataset with a query/gallery split."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

from cgdmae.report.figures import cmc_curves, save_data, save_figure
from cgdmae.report.tables import cmc_frame, load_records
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
    keys = [tuple(key) for key in snakemake.params.run_datasets]
    records = dict(zip(keys, load_records(snakemake.input), strict=True))
    frame = cmc_frame(records)
    figure = cmc_curves(frame)
    log.info("wrote %s", save_figure(figure, snakemake.output.pdf.removesuffix(".pdf")))
    if snakemake.output.get("csv"):  # the curves' data, for dvc plots
        log.info("wrote %s", save_data(frame, snakemake.output.csv))
