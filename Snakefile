"""cgdmae: one DAG from the synthetic (or real) vehicle data to the paper's tables and report."""

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/curate.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        synthetic_targets(),
        "results/figures/synth_contact_sheet.png",
        expand("results/teacher/{teacher}/metrics.json", teacher=config["teachers"]),
        expand("results/pretrain/{run}/encoder.pth", run=all_runs(config)),
        "results/figures/pretrain_loss.png",
        finetune_targets(all_runs(config)),
        expand(
            "results/curation/{subset}/stats.json",
            subset=config["curation"]["subsets"],
        ),
        rules.tables.input,
        rules.figures.input,
        "paper/report.html",


rule data_all:
    input:
        synthetic_targets(),
        expand("results/teacher/{teacher}/metrics.json", teacher=config["teachers"]),
        expand(
            "results/curation/{subset}/stats.json",
            subset=config["curation"]["subsets"],
        ),
