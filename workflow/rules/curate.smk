"""Curation: embed the pool and cluster it once (dedup, hierarchical k-means), then sample one
subset per name (curated_N, random_dedup_N, random_N, full) from the clusters."""


rule curation_embed:
    input:
        unpack(curation_embed_inputs),
    output:
        "results/curation/embeddings/{dataset}.npy",
    log:
        "logs/curation/embed_{dataset}.log",
    priority: TEACHER_PRIORITY
    conda:
        "../envs/cgdmae.yaml"
    threads: 1
    resources:
        **job_resources(
            0 if config["cluster"]["shards"] > 1 else config["curation"]["gpus"],
            threads=2,
        ),
        runtime=240,
    params:
        batch_size=config["curation"]["batch_size"],
    script:
        "../scripts/curate_embed.py"


rule curation_embed_shard:
    input:
        images=lambda wildcards: dataset_root(wildcards.dataset),
        teacher=f"results/teacher/{config['curation']['teacher']}/model",
    output:
        "results/curation/embeddings/{dataset}.shard{shard}of{shards}.npz",
    log:
        "logs/curation/embed_{dataset}.shard{shard}of{shards}.log",
    wildcard_constraints:
        shard=r"\d+",
        shards=r"\d+",
    priority: TEACHER_PRIORITY
    conda:
        "../envs/cgdmae.yaml"
    threads: 1
    resources:
        **job_resources(config["curation"]["gpus"], threads=2),
        runtime=240,
    params:
        batch_size=config["curation"]["batch_size"],
        shard=lambda wildcards: [int(wildcards.shard), int(wildcards.shards)],
    script:
        "../scripts/curate_embed.py"


rule curation_clusters:
    input:
        embeddings="results/curation/embeddings/{dataset}.npy",
    output:
        "results/curation/clusters/{dataset}.npz",
    log:
        "logs/curation/clusters_{dataset}.log",
    priority: TEACHER_PRIORITY
    conda:
        "../envs/cgdmae.yaml"
    threads: 1
    resources:
        **job_resources(kmeans_gpus(), threads=2),
        runtime=240,
    params:
        cfg=clustering_settings(),
        seed=config["seed"],
    script:
        "../scripts/curate_clusters.py"


rule curation_subset:
    input:
        embeddings=f"results/curation/embeddings/{config['curation']['dataset']}.npy",
        clusters=f"results/curation/clusters/{config['curation']['dataset']}.npz",
        images=dataset_root(config["curation"]["dataset"]),
    output:
        manifest="results/curation/{subset}/manifest.csv",
        stats="results/curation/{subset}/stats.json",
        resampling="results/curation/{subset}/resampling.json",
    log:
        "logs/curation/{subset}.log",
    wildcard_constraints:
        subset="|".join(config["curation"]["subsets"]) or "none",
    priority: TEACHER_PRIORITY
    conda:
        "../envs/cgdmae.yaml"
    threads: 1
    resources:
        **job_resources(0),
        runtime=60,
    params:
        cfg=config["curation"],
        seed=config["seed"],
    script:
        "../scripts/curate_subset.py"


rule curation_figure:
    input:
        stats="results/curation/{subset}/stats.json",
        manifest="results/curation/{subset}/manifest.csv",
        resampling="results/curation/{subset}/resampling.json",
    output:
        pdf="results/figures/curation_{subset}.pdf",
        png=report(
            "results/figures/curation_{subset}.png",
            caption="../report/figure_curation.rst",
            category="Curation",
        ),
    log:
        "logs/figures/curation_{subset}.log",
    conda:
        "../envs/cgdmae.yaml"
    script:
        "../scripts/curation_figure.py"
