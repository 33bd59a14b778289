"""Helpers for the rules and the thin workflow scripts: logging into a rule's ``log:`` file,
the config files as provenance names them."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def attempt_header() -> str:
    """The line that opens each attempt in a rule's log: when, where, which Slurm job."""
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    where = [f"host {socket.gethostname()}", f"pid {os.getpid()}"]
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        restarts = os.environ.get("SLURM_RESTART_COUNT")
        where.append(f"Slurm job {job}" + (f" (restart {restarts})" if restarts else ""))
    return f"===== attempt started {now} on {', '.join(where)} ====="


def attempts_path(log_path: str | Path) -> Path:
    """Where the attempts of a job that has not yet succeeded are kept: next to its log, hidden.

    Snakemake deletes a job's log before each attempt, so the log alone cannot carry the
    earlier attempts; this file is no declared output and survives until the job succeeds.
    """
    log_path = Path(log_path)
    return log_path.with_name(f".{log_path.name}.attempts")


class AttemptLog:
    """A line-buffered text stream writing to a rule's log and to its attempts file.

    On opening, the log starts with the earlier attempts (if a retry follows a failure, a
    time-out or a requeue), then this attempt's header. ``close(succeeded=True)`` removes the
    attempts file: the next run of the job starts a log of its own.
    """

    def __init__(self, log_path: str | Path):
        self.failed = False
        self.path = Path(log_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.attempts = attempts_path(self.path)
        earlier = self.attempts.read_text(errors="replace") if self.attempts.is_file() else ""
        self._log = open(self.path, "w", buffering=1)  # noqa: SIM115 (closed by close())
        self._attempts = open(self.attempts, "a", buffering=1)  # noqa: SIM115
        self._log.write(earlier)
        opening = ("\n" if earlier else "") + attempt_header() + "\n"
        opening += f"command: {' '.join(sys.argv) or sys.executable}\n"
        self._log.write(opening)
        self._attempts.write(opening)

    def write(self, text: str) -> int:
        self._log.write(text)
        self._attempts.write(text)
        return len(text)

    def flush(self) -> None:
        self._log.flush()
        self._attempts.flush()

    def isatty(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._log.closed

    def mark_failed(self) -> None:
        """This attempt failed without an exception (a non-zero exit status): keep it."""
        self.failed = True

    def close(self, succeeded: bool = False) -> None:
        if self.closed:
            return
        self._log.close()
        self._attempts.close()
        if succeeded:
            self.attempts.unlink(missing_ok=True)


@contextlib.contextmanager
def attempt_log(log_path: str | Path) -> Iterator[AttemptLog]:
    """An ``AttemptLog`` closed on exit: a clean exit is a success unless ``mark_failed`` was
    called, an exception is a failure."""
    stream = AttemptLog(log_path)
    try:
        yield stream
    except BaseException:
        stream.close(succeeded=False)
        raise
    stream.close(succeeded=not stream.failed)


@contextlib.contextmanager
def logging_to(stream: Any) -> Iterator[logging.Logger]:
    """Send logging, stdout and stderr to ``stream``; an exception is logged with its
    traceback and re-raised."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield logging.getLogger("cgdmae")
    except BaseException:
        logging.getLogger("cgdmae").exception("job failed")
        raise
    finally:
        root.removeHandler(handler)


@contextlib.contextmanager
def rule_logging(log_path: str | Path) -> Iterator[logging.Logger]:
    """Send logging, stdout and stderr of a script to its Snakemake log file.

    A retried job's log keeps the earlier attempts above its own, each under a header
    (``AttemptLog``), so the reason the first attempt failed survives a Slurm retry.
    Exceptions are written to the log with their traceback and re-raised, so Snakemake marks
    the job failed and the reason is in the file the error message points at.
    """
    with attempt_log(log_path) as stream, logging_to(stream) as log:
        yield log


def prepare_job(threads: int, decoded_cache_mb: float) -> None:
    """Hold a CPU job to the threads its rule declares (``snakemake.threads``), and give its
    processes ``data.decoded_cache_mb`` for decoded images.

    Snakemake sets ``OMP_NUM_THREADS`` for shell commands only; a script's torch would use every
    core, and two jobs side by side on a laptop would oversubscribe it. A job on a GPU or inside
    a Slurm allocation keeps torch's default: its CPU share is what the node gave it. Both
    settings reach the processes the job starts through the environment."""
    import torch

    from cgdmae.data.datasets import DECODED_CACHE_ENV

    os.environ[DECODED_CACHE_ENV] = str(decoded_cache_mb)
    if not torch.cuda.is_available() and "SLURM_JOB_ID" not in os.environ:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


def provenance_path(path: str | Path, workdir: str | Path = ".") -> str:
    """A config file as the tables name it: relative to the working directory when inside it,
    so `snakemake all` and `--configfile config/config.yaml` are the same provenance and no
    machine's absolute path enters the tables."""
    path, workdir = Path(path).resolve(), Path(workdir).resolve()
    return str(path.relative_to(workdir)) if path.is_relative_to(workdir) else str(path)
