"""Tables (jinja2: booktabs LaTeX + Markdown), figures (seaborn), the executed report."""


rule table_main:
    input:
        metrics=metrics_of([(run, run) for run in config["runs"]], configured_tasks()),
        teachers=teacher_metrics(config["runs"]),
    output:
        tex="results/tables/main.tex",
        json="results/metrics/main.json",
        md=report(
            "results/tables/main.md",
            caption="../report/table_main.rst",
            category="Tables",
        ),
    log:
        "logs/tables/main.log",
    conda:
        "../envs/cgdmae.yaml"
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
        metrics=lambda wildcards: metrics_of(
            ablation_rows(wildcards.name), ablation_tasks(wildcards.name)
        ),
        teachers=lambda wildcards: teacher_metrics(
            run for _, run in ablation_rows(wildcards.name)
        ),
    output:
        tex="results/tables/ablation_{name}.tex",
        json="results/metrics/ablation_{name}.json",
        md=report(
            "results/tables/ablation_{name}.md",
            caption="../report/table_ablation.rst",
            category="Tables",
        ),
    log:
        "logs/tables/ablation_{name}.log",
    conda:
        "../envs/cgdmae.yaml"
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


rule figure_ablation:
    input:
        lambda wildcards: metrics_of(
            ablation_rows(wildcards.name), ablation_tasks(wildcards.name)
        ),
    output:
        pdf="results/figures/ablation_{name}.pdf",
        png=report(
            "results/figures/ablation_{name}.png",
            caption="../report/figure_ablation.rst",
            category="Ablations",
        ),
    log:
        "logs/figures/ablation_{name}.log",
    conda:
        "../envs/cgdmae.yaml"
    params:
        axis=lambda wildcards: config["ablations"][wildcards.name]["axis"],
        rows=lambda wildcards: ablation_rows(wildcards.name),
        tasks=lambda wildcards: ablation_tasks(wildcards.name),
    script:
        "../scripts/ablation_figure.py"


rule figure_cmc:
    input:
        metrics_of([(run, run) for run in config["runs"]], cmc_tasks()),
    output:
        pdf="results/figures/cmc.pdf",
        csv="results/figures/cmc.csv",
        png=report(
            "results/figures/cmc.png",
            caption="../report/figure_cmc.rst",
            category="Downstream",
        ),
    log:
        "logs/figures/cmc.log",
    conda:
        "../envs/cgdmae.yaml"
    params:
        run_datasets=[(run, d) for run in config["runs"] for _, d in cmc_tasks()],
    script:
        "../scripts/cmc_figure.py"


rule figure_reconstructions:
    input:
        checkpoints=expand(
            "results/pretrain/{run}/checkpoint.pth", run=reconstruction_runs()
        ),
        images=dataset_root(config["pretrain"]["dataset"]),
    output:
        pdf="results/figures/reconstructions.pdf",
        png=report(
            "results/figures/reconstructions.png",
            caption="../report/figure_reconstructions.rst",
            category="Pre-training",
        ),
    log:
        "logs/figures/reconstructions.log",
    conda:
        "../envs/cgdmae.yaml"
    resources:
        **job_resources(0),
    params:
        specs={run: run_spec(config, run) for run in reconstruction_runs()},
        n_images=3,
        seed=config["seed"],
    script:
        "../scripts/reconstructions_figure.py"


rule figures:
    input:
        "results/figures/pretrain_loss.png",
        "results/figures/synth_contact_sheet.png",
        "results/figures/reconstructions.png",
        expand(
            "results/figures/curation_{subset}.png",
            subset=config["curation"]["subsets"],
        ),
        expand("results/figures/ablation_{name}.png", name=config["ablations"]),
        "results/figures/cmc.png" if cmc_tasks() else [],


rule report:
    input:
        rules.tables.input,
        rules.figures.input,
        notebook=PAPER / "report.ipynb",
    output:
        "paper/report.html",
    log:
        "logs/report.log",
    conda:
        "../envs/cgdmae.yaml"
    resources:
        **job_resources(0),
    params:
        # what the report shows: this config's runs, subsets, ablations and fine-tuning jobs
        contents={
            "runs": all_runs(config),
            "curation": list(config["curation"]["subsets"]),
            "ablations": list(config["ablations"]),
            "finetune": [list(job) for job in finetune_jobs(config, all_runs(config))],
        },
    script:
        "../scripts/report.py"


rule paper:
    input:
        "paper/report.html",
        tex=PAPER / "main.tex",
    log:
        "logs/paper.log",
    conda:
        "../envs/cgdmae.yaml"
    script:
        "../scripts/paper_pdf.py"
