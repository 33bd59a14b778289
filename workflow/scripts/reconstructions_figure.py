"""MAE reconstructions of the same few pool images by each pre-trained run."""

from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()  # under `python -m cgdmae.warm`: go on in a fork that has the imports

from cgdmae.data import read_pool
from cgdmae.report.figures import reconstructions, save_figure
from cgdmae.report.reconstruct import reconstruct
from cgdmae.workflow import rule_logging

with rule_logging(snakemake.log[0]) as log:
    pool = read_pool(snakemake.input.images)
    step = max(1, len(pool) // snakemake.params.n_images)
    paths = [r.path for r in pool[::step][: snakemake.params.n_images]]
    specs = snakemake.params.specs
    images = {
        run: reconstruct(checkpoint, specs[run], paths, snakemake.params.seed)
        for run, checkpoint in zip(specs, snakemake.input.checkpoints, strict=True)
    }
    figure = reconstructions(images, len(paths))
    log.info("wrote %s", save_figure(figure, snakemake.output.pdf.removesuffix(".pdf")))
