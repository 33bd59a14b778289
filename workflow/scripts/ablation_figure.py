"""Metric vs axis value of one ablation."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

from cgdmae.report.figures import ablation_plot, save_figure
from cgdmae.report.tables import ablation_frame, build_table, load_records
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
    records = {
        path: [r] for path, r in zip(snakemake.input, load_records(snakemake.input), strict=True)
    }
    table = build_table("", "", snakemake.params.rows, snakemake.params.tasks, records)
    figure = ablation_plot(ablation_frame(table), snakemake.params.axis)
    log.info("wrote %s", save_figure(figure, snakemake.output.pdf.removesuffix(".pdf")))
