"""CMC curves of every run on every ReID dataset with a query/gallery split."""

from cgdmae.report.figures import cmc_curves, save_figure
from cgdmae.report.tables import cmc_frame, load_records
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
    keys = [tuple(key) for key in snakemake.params.run_datasets]
    records = dict(zip(keys, load_records(snakemake.input), strict=True))
    figure = cmc_curves(cmc_frame(records))
    log.info("wrote %s", save_figure(figure, snakemake.output.pdf.removesuffix(".pdf")))
