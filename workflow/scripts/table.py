"""One results table (LaTeX + Markdown) from the metrics.json files it depends on."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

from cgdmae.report.provenance import provenance
from cgdmae.report.tables import build_table, load_records, write_metrics, write_table
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
    metrics = snakemake.input.metrics
    records = dict(zip(metrics, ([r] for r in load_records(metrics)), strict=True))
    table = build_table(
        snakemake.params.caption,
        snakemake.params.row_header,
        snakemake.params.rows,
        snakemake.params.tasks,
        records,
    )
    records_flat = [r for rs in records.values() for r in rs]
    table.provenance = provenance(
        snakemake.config, snakemake.params.config_files, records_flat, snakemake.input.teachers
    )
    log.info("wrote %s", write_table(table, snakemake.output.tex.removesuffix(".tex")))
    if snakemake.output.get("json"):  # the numbers, for dvc metrics show / diff
        log.info("wrote %s", write_metrics(table, snakemake.output.json))
