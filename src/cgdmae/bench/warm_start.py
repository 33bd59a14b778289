"""A job's start-up, cold and through the warm server (cgdmae.warm).

Runs a script that does what the fine-tuning job does before its first line of work (import
its modules), ``--repeats`` times in a fresh process and as many times through a warm server,
and prints the median seconds of each.

    python -m cgdmae.bench.warm_start --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cgdmae.warm import SOCKET_ENV, warm_server

JOB = """\
from cgdmae.warm import fork_from_warm_process

fork_from_warm_process()

import cgdmae.finetune.run, cgdmae.training.engine, cgdmae.workflow
"""


def seconds(script: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(script)], env=env, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "job.py"
        script.write_text(JOB)
        cold_env = {k: v for k, v in os.environ.items() if k != SOCKET_ENV}
        cold = [seconds(script, cold_env) for _ in range(args.repeats)]
        with warm_server(ready_within=120) as (address, _):
            warm = [seconds(script, cold_env | {SOCKET_ENV: address}) for _ in cold]
    print(f"start-up of a fine-tuning job, median of {args.repeats}:")
    print(f"  cold (its own imports): {statistics.median(cold):.2f} s")
    print(f"  warm (a fork of the server): {statistics.median(warm):.2f} s")


if __name__ == "__main__":
    main()
