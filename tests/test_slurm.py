"""`snakemake --profile slurm` against a real one-node Slurm: a pre-training job killed by its
time limit checkpoints on SIGTERM, is retried by Snakemake, and resumes instead of restarting.

Runs where Slurm can be set up (root and apt, as in CI); elsewhere it is skipped with the
reason.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_workflow_data import ROOT, TINY

SETUP = ROOT / "tests" / "slurm" / "single_node.sh"


def slurm_available() -> str | None:
    """Why the test cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to start slurmctld/slurmd"
    if shutil.which("apt-get") is None and shutil.which("sbatch") is None:
        return "needs apt-get to install Slurm"
    return None


@pytest.fixture(scope="module")
def slurm():
    reason = slurm_available()
    if reason:
        pytest.skip(reason)
    setup = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=900)
    assert setup.returncode == 0, setup.stderr[-3000:]


def test_time_limit_kill_resumes_on_retry(slurm, tmp_path):
    config = yaml.safe_load(TINY.read_text())
    config["pretrain"] |= {"epochs": 800, "save_every": 10, "runtime": 1, "gpus": 1}
    config["runs"] = {"mae": {"method": "mae"}}
    config["ablations"] = {}
    config["cluster"] = {"cpus_per_gpu": 1, "mem_mb_per_gpu": 2000, "cpus": 1, "mem_mb": 1000}
    (tmp_path / "slurm.yaml").write_text(yaml.safe_dump(config))
    before = subprocess.run(["squeue", "-t", "all", "-h", "-o", "%i"], capture_output=True,
                            text=True).stdout.split()  # fmt: skip
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    # each attempt has one minute; on a loaded 2-core machine one covers as few as ~60 of the 800
    # epochs (seen: 7 attempts reached epoch 431), so 20 retries leave room for 14 such attempts
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
         "--directory", str(tmp_path), "--profile", str(ROOT / "profiles" / "slurm"),
         "--configfile", str(tmp_path / "slurm.yaml"), "--slurm-status-command", "squeue",
         "--default-resources", "mem_mb=2000", "cpus_per_task=1", "runtime=10",
         "--latency-wait", "5", "--retries", "20", "results/pretrain/mae/encoder.pth"]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=2400)
    except subprocess.TimeoutExpired as timeout:
        queue = subprocess.run(["squeue", "-t", "all", "-o", "%i %T %M %l %j %r"],
                               capture_output=True, text=True).stdout  # fmt: skip
        stderr = timeout.stderr or b""  # bytes, even with text=True
        stderr = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
        pytest.fail(f"snakemake still running after 2400 s; the queue:\n{queue}\n{stderr[-3000:]}")
    assert result.returncode == 0, result.stderr[-4000:]
    listing = subprocess.run(
        ["squeue", "-t", "all", "-h", "-O", "JobID:|,State:|,tres-per-job:|,Comment:"],
        capture_output=True, text=True,
    ).stdout.splitlines()  # fmt: skip
    rows = sorted((int(j.split("|")[0]), j.split("|")[1:]) for j in listing)
    jobs = [fields for job_id, fields in rows if str(job_id) not in before]  # this run's, in order
    pretrain = [j for j in jobs if "rule_pretrain" in j[2]]
    assert any(state == "TIMEOUT" for state, *_ in pretrain), jobs  # killed by its limit
    assert pretrain[-1][0] == "COMPLETED", jobs  # then finished on a retry
    assert all(tres == "gres:gpu:1" for _, tres, _ in pretrain), jobs  # GPU rules ask for one
    data = [j for j in jobs if "rule_synthetic_dataset" in j[2]]
    assert data and all(tres == "N/A" for _, tres, _ in data), jobs  # CPU rules do not
    log = (tmp_path / "logs/pretrain/mae.log").read_text()
    assert "resumed from" in log, log[-2000:]  # the retry continued the killed run
    rows = (tmp_path / "results/pretrain/mae/log.csv").read_text().splitlines()
    assert len(rows) == 1 + 800
