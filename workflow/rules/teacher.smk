"""The CLIP teacher: trained here on the pool's captions, or a pretrained open_clip model."""


rule teacher:
    input:
        images=lambda wildcards: teacher_inputs(wildcards.teacher),
    output:
        model=directory("results/teacher/{teacher}/model"),
        metrics="results/teacher/{teacher}/metrics.json",
    log:
        "logs/teacher/{teacher}.log",
    priority: TEACHER_PRIORITY
    conda:
        "../envs/cgdmae.yaml"
    threads: 1
    resources:
        **resources_by(teacher_build_resources),
        runtime=120,
    params:
        spec=lambda wildcards: config["teachers"][wildcards.teacher],
        seed=config["seed"],
    script:
        "../scripts/teacher.py"


rule teacher_targets:
    input:
        unpack(teacher_targets_inputs),
    output:
        "results/teacher/{teacher}/targets/{dataset}/k{views}_{height}x{width}_s{smin}-{smax}{decode}.pt",
    log:
        "logs/teacher/{teacher}_targets_{dataset}_k{views}_{height}x{width}_s{smin}-{smax}{decode}.log",
    wildcard_constraints:
        dataset="[^/]+",
        views=r"\d+",
        height=r"\d+",
        width=r"\d+",
        smin=r"[0-9.]+",
        smax=r"[0-9.]+",
        decode=f"(|{DRAFT_SUFFIX})",
    priority: TEACHER_PRIORITY
    conda:
        "../envs/cgdmae.yaml"
    threads: 1
    resources:
        **resources_by(teacher_targets_resources),
        runtime=240,
    params:
        views=lambda wildcards: int(wildcards.views),
        img_size=lambda wildcards: [int(wildcards.height), int(wildcards.width)],
        crop_scale=lambda wildcards: [float(wildcards.smin), float(wildcards.smax)],
        seed=config["seed"],
    script:
        "../scripts/teacher_targets.py"


rule teacher_target_shard:
    input:
        teacher="results/teacher/{teacher}/model",
        images=lambda wildcards: image_source(wildcards.dataset),
    output:
        "results/teacher/{teacher}/targets/{dataset}/k{views}_{height}x{width}_s{smin}-{smax}{decode}.shard{shard}of{shards}.pt",
    log:
        "logs/teacher/{teacher}_targets_{dataset}_k{views}_{height}x{width}_s{smin}-{smax}{decode}.shard{shard}of{shards}.log",
    wildcard_constraints:
        dataset="[^/]+",
        views=r"\d+",
        height=r"\d+",
        width=r"\d+",
        smin=r"[0-9.]+",
        smax=r"[0-9.]+",
        decode=f"(|{DRAFT_SUFFIX})",
        shard=r"\d+",
        shards=r"\d+",
    priority: TEACHER_PRIORITY
    conda:
        "../envs/cgdmae.yaml"
    threads: 1
    resources:
        **resources_by(teacher_resources),
        runtime=240,
    params:
        views=lambda wildcards: int(wildcards.views),
        img_size=lambda wildcards: [int(wildcards.height), int(wildcards.width)],
        crop_scale=lambda wildcards: [float(wildcards.smin), float(wildcards.smax)],
        seed=config["seed"],
        shard=lambda wildcards: [int(wildcards.shard), int(wildcards.shards)],
    script:
        "../scripts/teacher_targets.py"


rule random_clip_weights:
    output:
        "results/rehearsal/clip/{name}.pt",
    log:
        "logs/teacher/random_{name}.log",
    conda:
        "../envs/cgdmae.yaml"
    params:
        seed=config["seed"],
    script:
        "../scripts/random_clip_weights.py"


rule teacher_text:
    input:
        teacher="results/teacher/{teacher}/model",
    output:
        "results/teacher/{teacher}/text/{key}.pt",
    log:
        "logs/teacher/{teacher}_text_{key}.log",
    priority: TEACHER_PRIORITY
    conda:
        "../envs/cgdmae.yaml"
    threads: 1
    resources:
        **resources_by(teacher_resources),
        runtime=30,
    params:
        templates=lambda wildcards: anchor_templates()[wildcards.key],
    script:
        "../scripts/teacher_text.py"
