"""Pre-training runs: each a registered method (scratch, mae, cgd_mae, person_mae,
person_vit, mae_lite) plus config overrides.

The resumable state lives in results/pretrain/{run}/work/, which is not a declared output,
so a preempted or timed-out job that Snakemake retries resumes from its last checkpoint
instead of starting over (Snakemake deletes declared outputs before a job runs).
"""


rule pretrain:
    input:
        unpack(pretrain_inputs),
    output:
        encoder="results/pretrain/{run}/encoder.pth",
        checkpoint="results/pretrain/{run}/checkpoint.pth",
        log_csv="results/pretrain/{run}/log.csv",
    log:
        "logs/pretrain/{run}.log",
    priority: PRETRAIN_PRIORITY
    conda:
        "../envs/cgdmae.yaml"
    # on a CPU, two single-thread runs side by side outrun one on two threads (1.4x,
    # docs/benchmarks.md); on a GPU the CPUs come from cluster.cpus_per_gpu
    threads: 1
    resources:
        **resources_by(run_resources),
        runtime=lambda wildcards: run_spec(config, wildcards.run)["runtime"],
    params:
        spec=lambda wildcards: run_spec(config, wildcards.run),
        seed=config["seed"],
    script:
        "../scripts/pretrain.py"


rule pretrain_all:
    input:
        expand("results/pretrain/{run}/encoder.pth", run=all_runs(config)),


rule loss_curves:
    input:
        expand("results/pretrain/{run}/log.csv", run=config["runs"]),
    output:
        pdf="results/figures/pretrain_loss.pdf",
        csv="results/figures/pretrain_loss.csv",
        png=report(
            "results/figures/pretrain_loss.png",
            caption="../report/pretrain_loss.rst",
            category="Pre-training",
        ),
    log:
        "logs/figures/pretrain_loss.log",
    conda:
        "../envs/cgdmae.yaml"
    params:
        runs=list(config["runs"]),
    script:
        "../scripts/loss_curves.py"
