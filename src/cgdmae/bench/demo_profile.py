"""Where a Snakemake run's time went, read from its log: job-seconds per rule and how full the
cores were. Used to profile `make demo` before cutting it.

    python -m cgdmae.bench.demo_profile .snakemake/log/<run>.snakemake.log
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^(?:local)?rule (\w+):$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_THREADS = re.compile(r"^\s+threads: (\d+)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


@dataclass
class Job:
    rule: str
    start: datetime
    threads: int = 1
    end: datetime | None = None

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def parse_log(path: Path) -> dict[int, Job]:
    """Every finished job of the log, with its start and end stamps (one-second resolution)."""
    jobs: dict[int, Job] = {}
    stamp = rule = None
    current: Job | None = None
    for line in path.read_text().splitlines():
        if m := _STAMP.match(line):
            stamp = datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
        elif m := _RULE.match(line):
            rule, current = m.group(1), None
        elif (m := _JOBID.match(line)) and rule:
            current = jobs[int(m.group(1))] = Job(rule, stamp)
            rule = None
        elif (m := _THREADS.match(line)) and current:
            current.threads = int(m.group(1))
        elif m := _FINISHED.match(line):
            jobs[int(m.group(1))].end = stamp
    return {jobid: job for jobid, job in jobs.items() if job.end is not None}


def profile(jobs: dict[int, Job]) -> list[tuple[str, int, float, float]]:
    """(rule, jobs, job-minutes, thread-minutes) per rule, the largest first."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for job in jobs.values():
        row = totals[job.rule]
        row[0] += 1
        row[1] += job.seconds / 60
        row[2] += job.seconds * job.threads / 60
    return sorted(((rule, *row) for rule, row in totals.items()), key=lambda r: -r[2])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    args = parser.parse_args(argv)
    jobs = parse_log(args.log)
    wall = (max(j.end for j in jobs.values()) - min(j.start for j in jobs.values())).total_seconds()
    rows = profile(jobs)
    print("| rule | jobs | job-min | thread-min |\n| --- | ---: | ---: | ---: |")
    for rule, count, minutes, thread_minutes in rows:
        print(f"| {rule} | {count} | {minutes:.1f} | {thread_minutes:.1f} |")
    busy = sum(r[3] for r in rows)
    print(
        f"\n{len(jobs)} jobs, wall {wall / 60:.1f} min; job time {sum(r[2] for r in rows):.1f} min;"
        f" thread time {busy:.1f} min, so {busy / (wall / 60):.2f} of the cores' threads busy"
    )


if __name__ == "__main__":
    main()
