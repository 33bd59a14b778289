"""Pre-train one run (in this process, or under torchrun when gpus > 1, srun + torchrun when
nodes > 1); exit 75 after a SIGTERM checkpoint."""

import json
import sys
from pathlib import Path

from cgdmae.config import cached_views
from cgdmae.pretrain.cli import launch
from cgdmae.workflow import prepare_job

prepare_job(snakemake.threads, snakemake.config["data"]["decoded_cache_mb"])
spec = snakemake.params.spec
views = cached_views(snakemake.config, spec)
argv = [
    f"--name={snakemake.wildcards.run}",
    f"--spec={json.dumps(spec, sort_keys=True)}",
    f"--images={snakemake.input.images}",
    f"--out={Path(snakemake.output.encoder).parent}",
    f"--seed={snakemake.params.seed}",
    f"--teacher={snakemake.input.get('teacher', '')}",
    f"--targets={snakemake.input.get('targets', '')}",
    *([f"--target-views={views['views']}"] if views else []),
    f"--on-corrupt={snakemake.config['data']['on_corrupt']}",
    f"--teacher-checkpoint={snakemake.input.get('teacher_checkpoint', '')}",
    f"--text-anchors={snakemake.input.get('text_anchors', '')}",
]
sys.exit(launch(argv, spec["gpus"], snakemake.log[0], nodes=spec.get("nodes", 1)))
