"""Helpers for the rules and the thin workflow scripts: logging into a rule's ``log:`` file,
the config files as provenance names them."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def rule_logging(log_path: str | Path) -> Iterator[logging.Logger]:
    """Send logging, stdout and stderr of a script to its Snakemake log file.

    Exceptions are written to the log with their traceback and re-raised, so Snakemake marks the
    job failed and the reason is in the file the error message points at.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as stream:
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


def provenance_path(path: str | Path, workdir: str | Path = ".") -> str:
    """A config file as the tables name it: relative to the working directory when inside it,
    so `snakemake all` and `--configfile config/config.yaml` are the same provenance and no
    machine's absolute path enters the tables."""
    path, workdir = Path(path).resolve(), Path(workdir).resolve()
    return str(path.relative_to(workdir)) if path.is_relative_to(workdir) else str(path)
