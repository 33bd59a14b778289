"""paper/main.pdf with latexmk when TeX is installed; otherwise say so, and do not fail."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

from cgdmae.report.latex import build_pdf
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
    log.info(build_pdf(snakemake.input.tex))
