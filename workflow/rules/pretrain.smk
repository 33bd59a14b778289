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
    threads: 2
    resources:
        gpu=lambda wildcards: run_spec(config, wildcards.run)["gpus"],
        runtime=lambda wildcards: run_spec(config, wildcards.run)["runtime"],
    params:
        spec=lambda wildcards: json.dumps(
            run_spec(config, wildcards.run), sort_keys=True
        ),
        torchrun=lambda wildcards: torchrun_args(
            run_spec(config, wildcards.run)["gpus"]
        ),
        teacher=lambda wildcards, input: input.get("teacher", ""),
        targets=lambda wildcards, input: input.get("targets", ""),
        teacher_checkpoint=lambda wildcards, input: input.get("teacher_checkpoint", ""),
        seed=config["seed"],
    shell:
        "{PYTHON} {params.torchrun} {SCRIPTS}/pretrain.py --run={wildcards.run:q}"
        " --spec={params.spec:q} --images={input.images:q} --teacher={params.teacher:q}"
        " --targets={params.targets:q} --teacher-checkpoint={params.teacher_checkpoint:q}"
        " --seed={params.seed} --out=results/pretrain/{wildcards.run}"
        " > {log:q} 2>&1"


rule pretrain_all:
    input:
        expand("results/pretrain/{run}/encoder.pth", run=all_runs(config)),


rule loss_curves:
    input:
        expand("results/pretrain/{run}/log.csv", run=config["runs"]),
    output:
        pdf="results/figures/pretrain_loss.pdf",
        png=report(
            "results/figures/pretrain_loss.png",
            caption="../report/pretrain_loss.rst",
            category="Pre-training",
        ),
    log:
        "logs/figures/pretrain_loss.log",
    params:
        runs=list(config["runs"]),
    script:
        "../scripts/loss_curves.py"
