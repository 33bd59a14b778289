"""``python -m cgdmae.pretrain.cli``: one pre-training run, in this process or under torchrun.

The ``pretrain`` rule calls :func:`launch`. With one process it trains in the rule's own Python
(so no interpreter path enters the job's command or params, and a pulled run launched from
another environment is not taken for a changed one); with ``gpus > 1`` it starts
``torchrun --standalone`` on this module, and every rank runs :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cgdmae.pretrain.run import run_pretraining
from cgdmae.training.engine import EXIT_PREEMPTED, Preempted
from cgdmae.workflow import AttemptLog, attempt_log, logging_to

log = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cgdmae.pretrain.cli", description=__doc__)
    # no option may abbreviate one of torchrun's (it parses the whole line: --run is --run-path)
    p.add_argument("--name", required=True, help="the run's name, for the log")
    p.add_argument("--spec", required=True, help="the run's resolved config, as JSON")
    p.add_argument("--images", required=True, help="pool directory or curation manifest")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", default="", help="cgd_mae: the CLIP teacher directory")
    p.add_argument("--targets", default="", help="cgd_mae: cached teacher targets")
    p.add_argument("--target-views", type=int, default=None, help="the targets' views used")
    p.add_argument("--on-corrupt", default="error", choices=("error", "skip"))
    p.add_argument("--teacher-checkpoint", default="", help="MAE-Lite: the teacher's checkpoint")
    p.add_argument("--text-anchors", default="", help="cgd_mae: the teacher's cached KL anchors")
    return p


def main(argv: list[str] | None = None) -> int:
    """Train one run; the exit status: 0, or 75 after a SIGTERM checkpoint (Slurm requeues)."""
    args = parser().parse_args(argv)
    try:
        run_pretraining(
            json.loads(args.spec),
            args.images,
            args.out,
            seed=args.seed,
            teacher_dir=args.teacher or None,
            targets=args.targets or None,
            target_views=args.target_views,
            on_corrupt=args.on_corrupt,
            teacher_checkpoint=args.teacher_checkpoint or None,
            text_anchors=args.text_anchors or None,
        )
    except Preempted as exc:
        log.warning("%s: %s", args.name, exc)
        return EXIT_PREEMPTED
    return 0


def torchrun_command(argv: list[str], gpus: int) -> list[str]:
    """Single-node DDP over ``gpus`` processes, each running :func:`main` on ``argv``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={gpus}",
        "-m",
        "cgdmae.pretrain.cli",
        *argv,
    ]


def multinode_command(argv: list[str], nodes: int, gpus: int, job_id: str, head: str) -> list[str]:
    """DDP over ``nodes`` × ``gpus`` processes in a Slurm allocation: ``srun`` starts one
    torchrun per node, and the torchruns meet through a c10d rendezvous on ``head`` (the node
    this runs on, the allocation's first), on a port and id taken from the job id."""
    return [
        "srun",
        f"--nodes={nodes}",
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=1",
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nodes}",
        f"--nproc_per_node={gpus}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={head}:{29500 + int(job_id) % 1000}",
        f"--rdzv_id={job_id}",
        "-m",
        "cgdmae.pretrain.cli",
        *argv,
    ]


def pretrain_argv(
    name: str,
    spec: dict[str, Any],
    images: str | Path,
    out: str | Path,
    *,
    seed: int,
    on_corrupt: str,
    inputs: Mapping[str, str] | None = None,
    target_views: int | None = None,
) -> list[str]:
    """The command line of :func:`main` for one run. ``inputs`` holds the optional files by
    the workflow's input names (``teacher``, ``targets``, ``teacher_checkpoint``,
    ``text_anchors``); one absent is passed empty, as the parser's default."""
    inputs = inputs or {}
    optional = ("teacher", "targets", "teacher_checkpoint", "text_anchors")
    return [
        f"--name={name}",
        f"--spec={json.dumps(spec, sort_keys=True)}",
        f"--images={images}",
        f"--out={out}",
        f"--seed={seed}",
        *(f"--{key.replace('_', '-')}={inputs.get(key, '')}" for key in optional),
        *([f"--target-views={target_views}"] if target_views is not None else []),
        f"--on-corrupt={on_corrupt}",
    ]


def launch_command(argv: list[str], gpus: int, nodes: int = 1) -> list[str]:
    """torchrun on this node, or srun + torchrun over the nodes of this Slurm job."""
    if nodes == 1:
        return torchrun_command(argv, gpus)
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id is None:
        raise RuntimeError(
            f"pretrain.nodes is {nodes}: a multi-node run starts inside its Slurm allocation "
            "(snakemake --profile slurm), and SLURM_JOB_ID is not set"
        )
    return multinode_command(argv, nodes, gpus, job_id, socket.gethostname())


def remove_stale_temp_files(out: str | Path) -> list[Path]:
    """Delete the temp files (``.<name>.*.tmp``) a killed job left in its output folder.

    Files are written to a temp file and renamed (``atomic_write``): one a job was killed
    while writing is never read, but would sit in a DVC-tracked folder. Called once per job,
    before any rank starts, so no writer of this job can own one.
    """
    out = Path(out)
    stale = sorted(out.glob(".*.tmp")) if out.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
        log.info("removed %s, left by an earlier attempt", path)
    return stale


def launch(argv: list[str], gpus: int, log_path: str | Path, nodes: int = 1) -> int:
    """Run :func:`main` here (one process) or under torchrun (``gpus > 1`` or ``nodes > 1``),
    logging to ``log_path``, below the earlier attempts' logs when this is a retry
    (``cgdmae.workflow.AttemptLog``).

    Under torchrun a SIGTERM sent to this process is passed on, so the ranks checkpoint.
    """
    out = parser().parse_args(argv).out
    with attempt_log(log_path) as stream, logging_to(stream):
        remove_stale_temp_files(out)
        if gpus <= 1 and nodes == 1:
            code = main(argv)
        else:
            code = _run_logged(launch_command(argv, gpus, nodes), stream)
        if code != 0:
            stream.mark_failed()
        return code


def _run_logged(command: list[str], stream: AttemptLog) -> int:
    """Run ``command`` with its output copied line by line to ``stream``; SIGTERM passed on."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    previous = signal.signal(signal.SIGTERM, lambda signum, _: proc.send_signal(signum))
    try:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            stream.write(line.decode(errors="replace"))
        return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
