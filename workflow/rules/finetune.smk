"""Downstream fine-tuning: every run's encoder on every configured (recipe, dataset); a
recipe is a task or one of its variants (``reid-transreid_star``).

As in pre-training, the resumable state lives in an undeclared work/ directory next to
metrics.json, so a preempted job resumes on retry.
"""


rule finetune:
    input:
        encoder="results/pretrain/{run}/encoder.pth",
        data=lambda wildcards: dataset_root(wildcards.dataset),
    output:
        "results/finetune/{run}/{task}/{dataset}/metrics.json",
    log:
        "logs/finetune/{run}/{task}/{dataset}.log",
    wildcard_constraints:
        task=f"(?:{'|'.join(task_names())})(?:{VARIANT_SEPARATOR}{VARIANT_NAME_PATTERN})?",
    conda:
        "../envs/cgdmae.yaml"
    threads: 1  # two jobs share a 2-core laptop better than one job on two threads
    resources:
        **job_resources(config["finetune"]["gpus"]),
        runtime=config["finetune"]["runtime"],
    params:
        task=lambda wildcards: split_recipe(wildcards.task)[0],
        spec=lambda wildcards: finetune_spec(config, wildcards.task, wildcards.dataset),
        model=lambda wildcards: run_spec(config, wildcards.run)["model"],
        dataset=lambda wildcards: config["datasets"][wildcards.dataset],
        seeds=config["seeds"],
    script:
        "../scripts/finetune.py"


rule finetune_all:
    input:
        finetune_targets(all_runs(config)),
