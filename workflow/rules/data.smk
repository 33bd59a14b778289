"""The synthetic vehicle world, written in the real on-disk formats of the public sets."""


rule synthetic_dataset:
    output:
        directory(f"{SYNTHETIC_ROOT}/{{dataset}}"),
    log:
        "logs/data/{dataset}.log",
    wildcard_constraints:
        dataset="|".join(SYNTHETIC_DATASETS),
    conda:
        "../envs/cgdmae.yaml"
    threads: 1
    params:
        world=lambda wildcards: {
            key: config["synthetic"][key]
            for key in ("seed", "image_size", "n_cameras")
        },
        sizes=lambda wildcards: config["synthetic"][wildcards.dataset],
    script:
        "../scripts/synthetic_dataset.py"


rule contact_sheet:
    output:
        report(
            "results/figures/synth_contact_sheet.png",
            caption="../report/contact_sheet.rst",
            category="Data",
        ),
    log:
        "logs/figures/synth_contact_sheet.log",
    conda:
        "../envs/cgdmae.yaml"
    threads: 1
    params:
        seed=config["synthetic"]["seed"],
        image_size=config["synthetic"]["image_size"],
    script:
        "../scripts/contact_sheet.py"
