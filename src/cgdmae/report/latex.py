"""The optional PDF: a missing TeX installation is reported, never an error of the DAG."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def build_pdf(tex: str | Path) -> str:
    """Run latexmk next to ``tex``; return what happened, in one sentence."""
    tex = Path(tex)
    latexmk = shutil.which("latexmk")
    if latexmk is None:
        message = (
            f"skipped {tex.with_suffix('.pdf')}: no latexmk on PATH (install TeX Live, e.g. "
            "apt-get install latexmk texlive-latex-recommended, to build it)"
        )
        print(message)
        return message
    subprocess.run(
        [latexmk, "-pdf", "-interaction=nonstopmode", "-halt-on-error", tex.name],
        cwd=tex.parent,
        check=True,
    )
    return f"built {tex.with_suffix('.pdf')}"
