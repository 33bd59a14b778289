"""cgdmae: one DAG from the synthetic (or real) vehicle data to the paper's tables and report."""

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"


rule all:
    default_target: True
    input:
        synthetic_targets(),
        "results/figures/synth_contact_sheet.png",
