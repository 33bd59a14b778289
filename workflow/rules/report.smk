"""Tables (jinja2: booktabs LaTeX + Markdown), figures (seaborn), the executed report."""


rule table_main:
    input:
        metrics_of([(run, run) for run in config["runs"]], configured_tasks()),
    output:
        tex="results/tables/main.tex",
        md="results/tables/main.md",
    log:
        "logs/tables/main.log",
    params:
        caption="Downstream results of each pre-training run (%).",
        row_header="run",
        rows=[(run, run) for run in config["runs"]],
        tasks=configured_tasks(),
        config_files=CONFIG_FILES,
    script:
        "../scripts/table.py"


rule table_ablation:
    input:
        lambda wildcards: metrics_of(
            ablation_rows(wildcards.name), ablation_tasks(wildcards.name)
        ),
    output:
        tex="results/tables/ablation_{name}.tex",
        md="results/tables/ablation_{name}.md",
    log:
        "logs/tables/ablation_{name}.log",
    params:
        caption=lambda wildcards: (
            f"Ablation {wildcards.name}: {config['ablations'][wildcards.name]['axis']} "
            f"of run {config['ablations'][wildcards.name]['base']} (%)."
        ),
        row_header=lambda wildcards: config["ablations"][wildcards.name]["axis"],
        rows=lambda wildcards: ablation_rows(wildcards.name),
        tasks=lambda wildcards: ablation_tasks(wildcards.name),
        config_files=CONFIG_FILES,
    script:
        "../scripts/table.py"


rule tables:
    input:
        "results/tables/main.tex",
        expand("results/tables/ablation_{name}.tex", name=config["ablations"]),
