"""Execute the report notebook and write it as HTML without the code cells."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nbformat
from nbconvert import HTMLExporter
from nbconvert.preprocessors import ExecutePreprocessor

from cgdmae.files import atomic_write


def render_report(
    notebook: str | Path,
    output: str | Path,
    root: str | Path,
    contents: Mapping[str, Any] | None = None,
) -> None:
    """Run ``notebook`` on the results under ``root`` (its ``CGDMAE_ROOT``) and write ``output``.

    ``contents`` names what the report shows (its ``CGDMAE_REPORT``): the config's ``runs``,
    ``curation`` subsets, ``ablations`` and ``finetune`` jobs (run, task, dataset), so runs
    another config left in ``results/`` stay out of it. Without it the notebook shows all
    it finds. The kernel is this interpreter's, started in the notebook's folder; the HTML
    is what ``jupyter nbconvert --execute --no-input`` writes, and it replaces ``output``
    atomically.
    """
    notebook = Path(notebook)
    node = nbformat.read(notebook, as_version=4)
    os.environ["CGDMAE_ROOT"] = str(Path(root).resolve())  # inherited by the kernel
    if contents is None:
        os.environ.pop("CGDMAE_REPORT", None)
    else:
        os.environ["CGDMAE_REPORT"] = json.dumps(dict(contents))
    ExecutePreprocessor(timeout=None).preprocess(node, {"metadata": {"path": str(notebook.parent)}})
    exporter = HTMLExporter(
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True
    )
    html, _ = exporter.from_notebook_node(node)
    atomic_write(output, lambda f: f.write(html.encode()))
