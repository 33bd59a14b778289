"""The cluster path without a cluster: what each job of the paper config asks Slurm for (a
recording ``sbatch`` on PATH), the commands README prints, the rehearsal's caps and checks, the
multi-node launch line, and the environment files."""

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_dataset_check import real_format_tree
from test_workflow_data import ROOT, SNAKEMAKE

from cgdmae.cluster import slurm_resources
from cgdmae.config import ConfigError, apply_limits, check_paths, load_config, run_spec
from cgdmae.rehearsal import check, parse_sbatch

PAPER = ROOT / "config" / "paper.yaml"
REHEARSAL = ROOT / "config" / "rehearsal.yaml"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
CLUSTER = {"cpus_per_gpu": 12, "mem_mb_per_gpu": 64000, "cpus": 4, "mem_mb": 16000}


def paper_with_local_paths(workdir: Path) -> Path:
    """config/paper.yaml with every dataset pointed at a tiny stand-in in its format (the
    layouts are checked before any job) and the CLIP file at an empty one."""
    config = yaml.safe_load(PAPER.read_text())
    for name, spec in config["datasets"].items():
        spec["path"] = str(real_format_tree(spec["format"], workdir / "data" / name))
    (workdir / "clip.pt").write_bytes(b"")
    config["teachers"]["clip_l14"]["pretrained"] = str(workdir / "clip.pt")
    path = workdir / "paper.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fake_slurm(bin_dir: Path, log: Path) -> dict[str, str]:
    """PATH with an sbatch that records its arguments and refuses, an account list holding
    `lab`, and every other Slurm tool failing, whether or not Slurm is installed here."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "sbatch $*" >> {log}\nexit 1\n')
    (bin_dir / "sacctmgr").write_text("#!/bin/sh\necho lab\n")
    for tool in ("sinfo", "sshare", "sacct", "squeue", "scontrol", "srun"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 1\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    path = f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "HF_HUB_OFFLINE": "1"}


def test_paper_jobs_ask_slurm_for_what_they_use(tmp_path):
    config = paper_with_local_paths(tmp_path)
    two_nodes = yaml.safe_load(config.read_text())
    two_nodes["runs"]["mae_2n"] = {"method": "mae", "overrides": {"nodes": 2}}
    config.write_text(yaml.safe_dump(two_nodes))
    time.sleep(0.01)
    # outputs of earlier stages exist, so jobs of every GPU stage are ready at once
    for done in ("pretrain/mae/encoder.pth", "pretrain/mae/checkpoint.pth", "pretrain/mae/log.csv",
                 "teacher/clip_l14/model/teacher.json", "teacher/clip_l14/metrics.json",
                 "curation/embeddings/pool.npy"):  # fmt: skip
        (tmp_path / "results" / done).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "results" / done).write_text("")
    log = tmp_path / "sbatch.log"
    targets = [
        "results/pretrain/person_mae/encoder.pth",
        "results/pretrain/mae_2n/encoder.pth",
        "results/finetune/mae/reid/veri776/metrics.json",
        "results/finetune/mae/var/veri776/metrics.json",
        "results/teacher/clip_l14/targets/pool/k4_224x224_s0.2-1.pt",
        "results/curation/curated_0.25/manifest.csv",
        "results/figures/synth_contact_sheet.png",
    ]
    proc = subprocess.run(
        [*SNAKEMAKE, *targets, "--directory", str(tmp_path), "--profile", str(ROOT / "profiles/slurm"),
         "--configfile", str(config), "--retries", "0", "--slurm-status-command", "squeue",
         "--slurm-init-seconds-before-status-checks", "1", "--default-resources",
         "slurm_partition=gpu", "slurm_account=lab", "runtime=60", "mem_mb=4000", "cpus_per_task=1"],
        capture_output=True, text=True, env=fake_slurm(tmp_path / "bin", log), timeout=300,
    )  # fmt: skip
    assert log.exists(), proc.stderr[-4000:]
    lines = log.read_text().splitlines()
    multinode = [line for line in lines if "pretrain_wildcards_mae_2n" in line]
    jobs = {parse_sbatch(line).rule: parse_sbatch(line) for line in lines if line not in multinode}
    # two nodes: one task (a torchrun) and 8 GPUs per node, CPUs and memory per node
    assert len(multinode) == 1 and "--gpus=" not in multinode[0], multinode
    for flag in (
        "--nodes=2",
        "--ntasks=2",
        "--gpus-per-node=8",
        "--cpus-per-task=96",
        "--mem 512000",
    ):
        assert flag in multinode[0], (flag, multinode[0])
    pretrain = jobs["pretrain"]  # person_mae: 8 GPUs on one node, 12 CPUs and 64 GB each
    assert (pretrain.gpus, pretrain.nodes, pretrain.cpus, pretrain.mem_mb) == (8, 1, 96, 512000)
    assert pretrain.minutes == 4320
    finetune = jobs["finetune"]  # two fine-tunings of one run: one array, a GPU each
    assert (finetune.tasks, finetune.gpus, finetune.cpus, finetune.nodes) == (2, 1, 12, None)
    assert finetune.mem_mb >= 64000 and "--array=1-2" in finetune.line
    assert jobs["curation_clusters"].minutes == 240  # hierarchical k-means over the pool
    for gpu_rule in ("teacher_targets", "curation_clusters"):  # ViT-L/14 and torch k-means
        assert (jobs[gpu_rule].gpus, jobs[gpu_rule].cpus) == (1, 12), jobs[gpu_rule]
    assert (jobs["contact_sheet"].gpus, jobs["contact_sheet"].cpus) == (0, 1)
    assert all("-A lab -p gpu" in s.line for s in jobs.values())


def readme_snakemake_commands() -> list[str]:
    """Every `snakemake ...` line in README's code blocks."""
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("snakemake ")]


def test_readme_snakemake_commands_run_as_printed(tmp_path):
    commands = readme_snakemake_commands()
    assert any("config/paper.yaml" in c for c in commands), commands
    config = paper_with_local_paths(tmp_path)
    swaps = {
        "config/paper.yaml": str(config),
        "config/rehearsal.yaml": str(REHEARSAL),
        "--profile slurm": f"--profile {ROOT / 'profiles' / 'slurm'}",
        "--profile profiles/slurm": f"--profile {ROOT / 'profiles' / 'slurm'}",
    }
    for command in commands:
        for before, after in swaps.items():
            command = command.replace(before, after)
        args = shlex.split(command)[1:]
        result = subprocess.run(
            [*SNAKEMAKE, *args, "--directory", str(tmp_path), "--dry-run", "--quiet"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"


def test_placeholder_paths_stop_the_run_in_one_line_naming_the_key(tmp_path):
    result = subprocess.run(
        [*SNAKEMAKE, "all", "--directory", str(tmp_path), "--configfile", str(PAPER), "-n"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "config key" in line]
    assert len(errors) == 1 and "'datasets.veri776.path'" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and 'File "' not in result.stderr, result.stderr
    config = yaml.safe_load(PAPER.read_text())
    config["datasets"] = {}
    with pytest.raises(ConfigError, match=r"teachers\.clip_l14\.pretrained.*never downloaded"):
        check_paths(config)


def test_slurm_resources_follow_the_gpus():
    assert slurm_resources(CLUSTER, 8) == {
        "gpu": 8, "cpus_per_task": 96, "mem_mb": 512000, "nodes": 1,
        "tasks": None, "mpi": None, "slurm_extra": None,
    }  # fmt: skip
    assert slurm_resources(CLUSTER, 1)["nodes"] is None  # summed over a group otherwise
    cpu = slurm_resources(CLUSTER, 0, threads=2)
    assert (cpu["gpu"], cpu["cpus_per_task"], cpu["mem_mb"]) == (None, 4, 16000)
    two_nodes = slurm_resources(CLUSTER, 8, nodes=2)
    assert two_nodes["gpu"] is None and two_nodes["slurm_extra"] == "--gpus-per-node=8"
    assert (two_nodes["nodes"], two_nodes["tasks"], two_nodes["cpus_per_task"]) == (2, 2, 96)


def test_data_workers_must_fit_the_cpus_per_gpu(tmp_path):
    config = yaml.safe_load(PAPER.read_text())
    config["cluster"]["cpus_per_gpu"] = 8  # the paper's 10 workers + 1 do not fit
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"'pretrain\.num_workers'.*11 CPUs per GPU"):
        load_config(path, SCHEMA)


def test_limits_cap_steps_and_batches_and_change_nothing_when_unset(tmp_path):
    paper = load_config(paper_with_local_paths(tmp_path), SCHEMA)
    assert "max_steps" not in run_spec(paper, "mae")  # no limits: the spec the runs had
    paper["limits"] = {"max_steps": 1, "batch_size": 2}
    spec = run_spec(paper, "mae")
    assert (spec["max_steps"], spec["batch_size"], spec["accum_iter"]) == (1, 2, 2)
    reid = {"batch_size": 64, "instances": 4}
    assert apply_limits(dict(reid), {"batch_size": 2}, 4)["batch_size"] == 8  # 2 ids × 4
    assert apply_limits(dict(reid), {"batch_size": 13}, 4)["batch_size"] == 12
    assert apply_limits(dict(reid), {"batch_size": 100}, 4)["batch_size"] == 64


def test_rehearsal_keeps_the_paper_runs_and_tasks(tmp_path):
    """Layered like --configfile paper.yaml rehearsal.yaml: same runs, ablations and tasks,
    the same model per run; only data, limits, GPUs and the cluster change."""
    from cgdmae.config import all_runs
    from cgdmae.rehearsal import _merge

    raw = yaml.safe_load(PAPER.read_text())
    layered = yaml.safe_load(PAPER.read_text())
    _merge(layered, yaml.safe_load(REHEARSAL.read_text()))
    assert set(layered) - set(raw) == {"synthetic", "limits"}
    (tmp_path / "layered.yaml").write_text(yaml.safe_dump(layered))
    layered = load_config(tmp_path / "layered.yaml", SCHEMA)
    paper = load_config(paper_with_local_paths(tmp_path), SCHEMA)
    assert all_runs(layered) == all_runs(paper) and layered["ablations"] == paper["ablations"]
    for run in all_runs(paper):
        assert run_spec(layered, run)["model"] == run_spec(paper, run)["model"]
        assert run_spec(layered, run)["method"] == run_spec(paper, run)["method"]
    for task in ("reid", "var", "vfr", "vps"):
        assert layered["finetune"][task]["datasets"] == paper["finetune"][task]["datasets"]
        assert layered["finetune"][task]["img_size"] == paper["finetune"][task]["img_size"]
    assert layered["teachers"]["clip_l14"]["name"] == "ViT-L-14-quickgelu"
    assert run_spec(layered, "cgd_mae")["gpus"] >= 2  # DDP with two processes at least


def test_rehearsal_check_flags_what_a_cluster_admin_would_refuse():
    line = ("sbatch --parsable --job-name x --output /w/.snakemake/slurm_logs/rule_{rule}/r/%j.log "
            "--export=ALL --comment c -t 60 --mem {mem} {nodes}--cpus-per-task={cpus} -D /w {gpus}"
            "--wrap=python")  # fmt: skip
    good = parse_sbatch(
        line.format(rule="pretrain", mem=4000, nodes="--nodes=1 ", cpus=2, gpus="--gpus=2 ")
    )
    assert (good.rule, good.gpus, good.cpus, good.mem_mb, good.nodes) == ("pretrain", 2, 2, 4000, 1)
    assert check([good], cpus_per_gpu=1, mem_mb_per_gpu=2000) == []
    spread = parse_sbatch(
        line.format(rule="pretrain", mem=4000, nodes="", cpus=2, gpus="--gpus=2 ")
    )
    no_gpu = parse_sbatch(line.format(rule="teacher_targets", mem=4000, nodes="", cpus=1, gpus=""))
    problems = check([good, spread, no_gpu], cpus_per_gpu=1, mem_mb_per_gpu=2000)
    assert any("not held to one node" in p for p in problems)
    assert any("teacher_targets asked for no GPU" in p for p in problems)
    join = parse_sbatch(line.format(rule="teacher_targets", mem=4000, nodes="", cpus=1, gpus=""))
    shard = parse_sbatch(
        line.format(
            rule="teacher_target_shard", mem=4000, nodes="--nodes=1 ", cpus=1, gpus="--gpus=1 "
        )  # fmt: skip
    )
    assert check([good, join, shard], cpus_per_gpu=1, mem_mb_per_gpu=2000, shards=2) == []
    assert check([good, shard], cpus_per_gpu=1, mem_mb_per_gpu=2000) != []


def test_a_failed_rehearsal_shows_each_failed_jobs_log_and_the_free_disk(tmp_path):
    """CI keeps only the end of the output: the reason a job failed must be in it."""
    from cgdmae.rehearsal import check_disk, main, report_failures

    (tmp_path / "logs" / "finetune").mkdir(parents=True)
    (tmp_path / "logs" / "finetune" / "a.log").write_text("step 1\nOSError: [Errno 28] No space\n")
    error = (
        "Error in rule finetune:\n    message: SLURM-job '7' failed\n    jobid: 38\n"
        "    output: results/finetune/a/metrics.json\n"
        "    log: logs/finetune/a.log, .snakemake/slurm_logs/7.log (check log file(s) for error "
        "details)\n\nTrying to restart job 38.\n"
    )
    (tmp_path / "snakemake.log").write_text("Select jobs\n" + error + error + "Exiting\n")
    assert main([str(tmp_path), "--failures"]) == 1
    report = report_failures(tmp_path)
    assert report.count("==== failed: rule finetune, logs/finetune/a.log") == 1
    assert "OSError: [Errno 28] No space" in report and "free disk in" in report
    assert check_disk(tmp_path, 1e9).startswith(f"{tmp_path} has ")
    assert check_disk(tmp_path, 0.0) is None


def test_environment_files_agree():
    top = (ROOT / "environment.yml").read_text()
    rules = (ROOT / "workflow" / "envs" / "cgdmae.yaml").read_text()
    body = top[top.index("name: cgdmae") :].replace('"-e .[dev]"', '"-e ../..[dev]"')
    assert rules.split("\n", 1)[1] == body, "run make env-files"


def test_multinode_launch_is_srun_torchrun_with_a_c10d_rendezvous(monkeypatch):
    import socket

    from cgdmae.pretrain.cli import launch_command

    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    command = launch_command(["--name=mae"], gpus=8, nodes=2)
    assert command[:4] == ["srun", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    torchrun = command[command.index("torch.distributed.run") + 1 :]
    assert torchrun[:5] == [
        "--nnodes=2", "--nproc_per_node=8", "--rdzv_backend=c10d",
        f"--rdzv_endpoint={socket.gethostname()}:29742", "--rdzv_id=4242",
    ]  # fmt: skip
    assert torchrun[5:] == ["-m", "cgdmae.pretrain.cli", "--name=mae"]
    assert "--standalone" in launch_command(["--name=mae"], gpus=2, nodes=1)
    monkeypatch.delenv("SLURM_JOB_ID")
    with pytest.raises(RuntimeError, match="SLURM_JOB_ID"):
        launch_command(["--name=mae"], gpus=8, nodes=2)
