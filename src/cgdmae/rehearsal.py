"""``python -m cgdmae.rehearsal DIR``: check and summarise a rehearsal of the paper on Slurm.

``make rehearsal`` runs the paper DAG at paper shapes through the Slurm profile and keeps the
``sbatch`` lines the executor submitted (``DIR/sbatch.log``). This reads them back, checks what
each job asked the cluster for (GPU rules get GPUs, CPU rules none, a multi-GPU job one node,
CPUs and memory in proportion to the GPUs), checks that every table and the report were built,
and writes the summary table README shows (``DIR/rehearsal.md``).
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

# rules that must ask for GPUs in the paper config (a group job is named after its group)
GPU_RULES = (
    "pretrain",
    "finetune",
    "curation_embed",
    "curation_clusters",
    "teacher_targets",
    "teacher_text",
)


@dataclass(frozen=True)
class Submission:
    """One sbatch call: the rule (or group) and what each of its jobs asked for; an array
    submission stands for ``tasks`` jobs."""

    rule: str
    tasks: int
    gpus: int
    cpus: int
    mem_mb: int
    nodes: int | None
    minutes: int | None
    line: str


def parse_sbatch(line: str) -> Submission:
    """The resources of one ``sbatch`` command line as the Slurm executor writes it."""
    words = shlex.split(line[line.index("sbatch") :])
    flags: dict[str, str] = {}
    for k, word in enumerate(words):
        if word.startswith("--") and "=" in word:
            key, value = word.split("=", 1)
            flags[key] = value
        elif word.startswith("-") and k + 1 < len(words) and not words[k + 1].startswith("-"):
            flags[word] = words[k + 1]
    match = re.search(r"/(rule|group)_([^/]+)/", flags.get("--output", ""))
    if not match:
        raise ValueError(f"no rule or group in the sbatch line's --output: {line}")
    rule = match.group(2)  # a group job is named after its group
    gpus = int(flags.get("--gpus", "0").rsplit(":", 1)[-1])
    if "--gpus-per-node" in flags:
        gpus = int(flags["--gpus-per-node"]) * int(flags.get("--nodes", 1))
    first, _, last = flags.get("--array", "0").partition("-")
    return Submission(
        rule=rule,
        tasks=int(last or first) - int(first) + 1,
        gpus=gpus,
        cpus=int(flags.get("--cpus-per-task", 1)),
        mem_mb=int(flags.get("--mem", 0)),
        nodes=int(flags["--nodes"]) if "--nodes" in flags else None,
        minutes=int(flags["-t"]) if "-t" in flags else None,
        line=line.strip(),
    )


def check(
    submissions: list[Submission], cpus_per_gpu: int, mem_mb_per_gpu: int, shards: int = 1
) -> list[str]:
    """What is wrong with the submitted jobs (an empty list when nothing is). With ``shards``
    > 1 the teacher targets and the curation embeddings are made by GPU shard jobs and joined
    by a CPU job."""
    gpu_rules = set(GPU_RULES)
    if shards > 1:
        gpu_rules -= {"teacher_targets", "curation_embed"}
        gpu_rules |= {"teacher_target_shard", "curation_embed_shard"}
    problems = []
    for s in submissions:
        rule = s.rule
        if rule in gpu_rules and s.gpus == 0:
            problems.append(f"{rule} asked for no GPU: {s.line}")
        if rule not in gpu_rules and s.gpus:
            problems.append(f"{rule} (a CPU rule) asked for {s.gpus} GPU(s): {s.line}")
        if s.gpus and s.cpus != s.gpus * cpus_per_gpu:
            problems.append(f"{rule}: {s.cpus} CPUs for {s.gpus} GPU(s), not {cpus_per_gpu} each")
        if s.gpus and s.mem_mb < s.gpus * mem_mb_per_gpu:
            problems.append(f"{rule}: {s.mem_mb} MB for {s.gpus} GPU(s)")
        if s.gpus > 1 and rule == "pretrain" and s.nodes != 1:
            problems.append(f"pretrain on {s.gpus} GPUs is not held to one node: {s.line}")
    if not any(s.rule == "pretrain" and s.gpus >= 2 for s in submissions):
        problems.append("no pre-training job ran on 2 or more GPUs (DDP not rehearsed)")
    return problems


def summary(submissions: list[Submission]) -> str:
    """Markdown: jobs per rule and what each asked for."""
    by_rule: dict[str, list[Submission]] = defaultdict(list)
    for s in submissions:
        by_rule[s.rule].append(s)
    rows = [
        "| rule | jobs | sbatch calls | GPUs per job | CPUs per job | memory per job (GB) | nodes |",
        "| --- | ---: | ---: | --- | --- | --- | --- |",
    ]

    def spread(values: list) -> str:
        low, high = min(values), max(values)
        return f"{low}" if low == high else f"{low}–{high}"

    for rule in sorted(by_rule, key=lambda r: (-len(by_rule[r]), r)):
        jobs = by_rule[rule]
        rows.append(
            f"| {rule} | {sum(j.tasks for j in jobs)} | {len(jobs)} | {spread([j.gpus for j in jobs])} | "
            f"{spread([j.cpus for j in jobs])} | {spread([round(j.mem_mb / 1000, 1) for j in jobs])} | "
            f"{spread([j.nodes or 1 for j in jobs])} |"
        )
    return "\n".join(rows)


def built_outputs(workdir: Path, tables: list[str]) -> list[str]:
    """The tables and the report that are missing (an empty list when all were built)."""
    wanted = [f"results/tables/{t}.tex" for t in tables] + ["paper/report.html"]
    return [w for w in wanted if not (workdir / w).is_file()]


def failed_jobs(snakemake_log: str) -> list[tuple[str, list[str]]]:
    """Each failed job's ``Error in rule`` block in Snakemake's log: its rule and log files."""
    failures = []
    for block in re.split(r"^(?=Error in rule )", snakemake_log, flags=re.M)[1:]:
        rule = block.split(":", 1)[0].removeprefix("Error in rule ").split(",")[0]
        logs = re.search(r"^\s+log: (.*?) \(check log file", block, flags=re.M)
        failures.append((rule, logs.group(1).split(", ") if logs else []))
    return failures


def report_failures(workdir: Path, lines: int = 30) -> str:
    """What CI shows when the rehearsal fails: every failed job's rule and the end of its log
    (the reason, which the tail of Snakemake's own log does not hold), and the free disk."""
    text = (workdir / "snakemake.log").read_text(errors="replace")
    out, seen = [], set()
    for rule, logs in failed_jobs(text):
        for name in logs or ["(no log file)"]:
            if name in seen:
                continue
            seen.add(name)
            out.append(f"==== failed: rule {rule}, {name}")
            path = workdir / name
            if path.is_file():
                out += path.read_text(errors="replace").splitlines()[-lines:]
    usage = shutil.disk_usage(workdir)
    out.append(f"==== free disk in {workdir}: {usage.free / 1e9:.1f} GB of {usage.total / 1e9:.0f}")
    return "\n".join(out)


def check_disk(workdir: Path, need_gb: float) -> str | None:
    """A rehearsal writes every ViT-B run of the paper (checkpoints of about 0.8 GB each): a
    disk too small fails jobs an hour in, so it is refused before the first one."""
    free = shutil.disk_usage(workdir).free / 1e9
    if free < need_gb:
        return f"{workdir} has {free:.1f} GB free; the rehearsal needs about {need_gb:g} GB"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgdmae.rehearsal", description=__doc__)
    p.add_argument("workdir", type=Path)
    p.add_argument("--config", nargs="+", help="the config files of the run")
    p.add_argument("--seconds", type=float, help="wall time of the run, for the summary")
    p.add_argument("--need-gb", type=float, help="only check that the disk has this much free")
    p.add_argument("--failures", action="store_true", help="only show why jobs failed")
    args = p.parse_args(argv)
    if args.need_gb is not None:
        problem = check_disk(args.workdir, args.need_gb)
        if problem:
            print(f"rehearsal: {problem}", file=sys.stderr)
        return 1 if problem else 0
    if args.failures:
        print(report_failures(args.workdir), file=sys.stderr)
        return 1
    if not args.config:
        p.error("--config is required to check a finished rehearsal")
    import yaml

    config: dict = {}
    for path in args.config:  # later files win, key by key, as in Snakemake
        _merge(config, yaml.safe_load(Path(path).read_text()) or {})
    lines = (args.workdir / "sbatch.log").read_text().splitlines()
    submissions = [parse_sbatch(line) for line in lines if "sbatch" in line]
    cluster = config.get("cluster", {})
    problems = check(
        submissions,
        cluster.get("cpus_per_gpu", 8),
        cluster.get("mem_mb_per_gpu", 32000),
        cluster.get("shards", 1),
    )
    tables = ["main", *(f"ablation_{name}" for name in config.get("ablations", {}))]
    problems += [f"not built: {missing}" for missing in built_outputs(args.workdir, tables)]
    text = summary(submissions)
    if args.seconds is not None:
        jobs = sum(s.tasks for s in submissions)
        text += f"\n\n{jobs} jobs in {len(submissions)} sbatch calls, wall time {args.seconds / 60:.1f} min."
    (args.workdir / "rehearsal.md").write_text(text + "\n")
    print(text)
    for problem in problems:
        print(f"rehearsal: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _merge(into: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


if __name__ == "__main__":
    sys.exit(main())
