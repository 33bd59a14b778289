"""Execute paper/report.ipynb on this workflow's results/ and write paper/report.html."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

from pathlib import Path

from cgdmae.report.notebook import render_report
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    render_report(
        snakemake.input.notebook,
        snakemake.output[0],
        root=Path.cwd(),
        contents=snakemake.params.get("contents"),
    )
