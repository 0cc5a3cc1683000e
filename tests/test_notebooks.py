"""Every chapter converts to a notebook (jupytext) and runs in a fresh kernel (nbclient),
as it does in Jupyter, Binder or Colab: live explorers. It runs the ``smoke`` profile
(seconds per experiment): the book build already executes every chapter at the quick
profile, so this test only needs the chapters to execute in a kernel.

The notebook runs in a separate process (``jupyter execute``), away from the state other
tests leave in this one (event loops, widget comms).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (REPO / "chapters").glob("*.md") if "jupytext:" in p.read_text()[:400])


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_as_a_notebook(chapter, tmp_path):
    notebook = tmp_path / f"{chapter.stem}.ipynb"
    jupytext.write(jupytext.read(chapter), notebook)
    env = {k: v for k, v in os.environ.items() if k != "BNLIB_BOOK_BUILD"}  # a reader's kernel
    env.update(BNLIB_PROFILE="smoke", BNLIB_PROGRESS="0", BNLIB_RESULTS=str(tmp_path / "res"))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from nbclient.cli import main; main()",
            "--inplace",
            "--timeout=300",
            "--kernel_name=python3",
            str(notebook),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    executed = nbformat.read(notebook, as_version=4)
    outputs = [o for c in executed.cells for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors[0]
    widgets = [
        o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widgets, "the explorer did not show its live controls in a kernel"
