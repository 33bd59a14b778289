"""Rule logs across attempts: a retry keeps the reason the attempt before it failed."""

import subprocess
import sys

import pytest

import cgdmae.pretrain.cli as cli
from cgdmae.pretrain.cli import launch, remove_stale_temp_files
from cgdmae.workflow import attempts_path, rule_logging


def attempt(log, fail):
    """One attempt of a job; Snakemake deletes the job's log before each attempt."""
    log.unlink(missing_ok=True)
    with rule_logging(log) as logger:
        logger.info("working on it")
        print("printed by the job")
        if fail:
            raise RuntimeError(f"out of memory in attempt {fail}")


def test_a_retry_keeps_the_first_attempts_reason(tmp_path, monkeypatch):
    log = tmp_path / "logs" / "pretrain" / "mae.log"
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with pytest.raises(RuntimeError):
        attempt(log, fail=1)
    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    with pytest.raises(RuntimeError):
        attempt(log, fail=2)
    text = log.read_text()
    assert text.count("===== attempt started") == 2, text
    assert text.index("Slurm job 4242") < text.index("out of memory in attempt 1")
    assert text.index("out of memory in attempt 1") < text.index("Slurm job 4243")
    assert text.index("Slurm job 4243") < text.index("out of memory in attempt 2")
    assert text.count("printed by the job") == 2
    assert "Traceback" in text
    attempt(log, fail=0)
    text = log.read_text()
    assert text.count("===== attempt started") == 3
    assert "out of memory in attempt 1" in text and "out of memory in attempt 2" in text
    # the job succeeded: its next run (a new config, days later) starts a log of its own
    assert not attempts_path(log).exists()
    attempt(log, fail=0)
    assert log.read_text().count("===== attempt started") == 1


def test_a_job_killed_mid_attempt_leaves_its_output_for_the_retry(tmp_path):
    """Slurm's time limit kills the process: no exit handler runs, the lines written so far
    are what the retry shows."""
    log = tmp_path / "job.log"
    code = (
        "import os, sys\n"
        "from cgdmae.workflow import rule_logging\n"
        "with rule_logging(sys.argv[1]) as log:\n"
        "    log.info('epoch 3 of 10')\n"
        "    os._exit(137)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(log)], check=False)
    attempt(log, fail=0)
    text = log.read_text()
    assert text.count("===== attempt started") == 2
    assert text.index("epoch 3 of 10") < text.rindex("===== attempt started")


def test_a_preempted_pretraining_keeps_its_log_and_a_job_removes_stale_temp_files(
    tmp_path, monkeypatch
):
    out = tmp_path / "results" / "pretrain" / "mae"
    out.mkdir(parents=True)
    stale = out / ".checkpoint.pth.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    kept = out / "checkpoint.pth"
    kept.write_bytes(b"x")
    assert remove_stale_temp_files(out) == [stale]
    assert not stale.exists() and kept.exists()

    monkeypatch.setattr(cli, "main", lambda argv: print("preempted at epoch 2") or 75)
    log = tmp_path / "logs" / "pretrain" / "mae.log"
    stale.write_bytes(b"half a checkpoint")
    argv = ["--name=mae", "--spec={}", "--images=x", f"--out={out}"]
    assert launch(argv, 1, log) == 75
    assert not stale.exists()
    log.unlink()  # Snakemake, before the requeued attempt
    monkeypatch.setattr(cli, "main", lambda argv: print("finished") or 0)
    assert launch(argv, 1, log) == 0
    text = log.read_text()
    assert text.index("preempted at epoch 2") < text.index("finished")
    assert not attempts_path(log).exists()
