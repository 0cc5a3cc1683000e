"""Binder's environment, proved: binder/requirements.txt installed into a fresh virtual
environment (as Binder does, plus postBuild's editable install of bnlib) executes every
chapter. A chapter that imports something Binder lacks fails here, not on Binder.

The CPU-only wheel index that binder/requirements.txt names is left out (it cannot be
reached from the build machines; the registry's torch stands in for it). Slow: it
installs torch into a new environment.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (REPO / "chapters").glob("*.md") if "jupytext:" in p.read_text()[:400])


@pytest.fixture(scope="module")
def binder_python(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("binder")
    requirements = root / "requirements.txt"
    requirements.write_text(
        "".join(
            line + "\n"
            for line in (REPO / "binder" / "requirements.txt").read_text().splitlines()
            if not line.strip().startswith("--extra-index-url")
        )
    )
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"

    def pip(*args: str) -> None:
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *args],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    pip("-r", str(requirements))
    pip("--no-deps", "--no-build-isolation", "-e", str(REPO))  # what binder/postBuild does
    return python


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_in_binders_environment(binder_python, chapter, tmp_path, run_chapter):
    run_chapter(chapter, tmp_path, python=binder_python)
