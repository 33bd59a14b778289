"""One pre-training job on two threads, or two jobs on one thread each, side by side?

Runs a run of the config (the demo's ``mae`` by default) for a few epochs three ways on a
2-core CPU: alone on 2 threads, alone on 1 thread, and two 1-thread copies at once. The
demo's rules declare one thread per training job because of this ratio.

    python -m cgdmae.bench.threads --config config/config.yaml --run mae --epochs 2 --work /tmp/threads
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cgdmae.config import SCHEMA, load_config, run_spec
from cgdmae.workflow import prepare_job


def pretrain(config: str, run: str, epochs: int, out: Path, threads: int) -> None:
    """Pre-train ``run`` for ``epochs`` into ``out`` on ``threads`` threads (this process)."""
    from cgdmae.pretrain.cli import main, pretrain_argv

    cfg = load_config(config, SCHEMA)
    prepare_job(threads, cfg["data"]["decoded_cache_mb"])
    spec = run_spec(cfg, run) | {"epochs": epochs}
    images = cfg["datasets"][spec["dataset"]]["path"]
    argv = pretrain_argv(run, spec, images, out, seed=0, on_corrupt="error")
    if main(argv) != 0:
        raise RuntimeError(f"pre-training {run} failed")


def timed(commands: list[list[str]]) -> float:
    """Seconds until every command, started together, has finished."""
    start = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL) for c in commands]
    if any(p.wait() for p in procs):
        raise RuntimeError("a benchmark process failed")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--run", default="mae")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)  # one timed child
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        pretrain(args.config, args.run, args.epochs, args.out, args.threads)
        return

    shutil.rmtree(args.work, ignore_errors=True)  # a finished run would resume with nothing to do

    def job(threads: int, name: str) -> list[str]:
        return [sys.executable, "-m", "cgdmae.bench.threads", "--config", args.config,
                "--run", args.run, "--epochs", str(args.epochs), "--work", str(args.work),
                "--threads", str(threads), "--out", str(args.work / name)]  # fmt: skip

    two_threads = timed([job(2, "a")])
    one_thread = timed([job(1, "b")])
    side_by_side = timed([job(1, "c"), job(1, "d")])
    print(f"{args.run}, {args.epochs} epochs, start-up included:")
    print(f"  alone on 2 threads: {two_threads:.1f} s; alone on 1 thread: {one_thread:.1f} s")
    print(f"  two on 1 thread each, side by side: {side_by_side:.1f} s for both")
    print(f"  two jobs: {2 * two_threads / side_by_side:.2f}x faster side by side than in turn")


if __name__ == "__main__":
    main()
