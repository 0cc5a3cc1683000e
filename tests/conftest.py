"""Shared fixtures: the real datasets under BNLIB_DATA, and a clean torch state."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")  # figures are drawn, never shown, in tests

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    if os.environ.get("BNLIB_DATA"):
        return Path(os.environ["BNLIB_DATA"])
    for candidate in (REPO / "data", REPO.parent / "shared" / "data"):
        if (candidate / "MNIST" / "raw").is_dir():
            return candidate
    return REPO / "data"


@pytest.fixture(scope="session", autouse=True)
def data_root() -> Path:
    """The dataset root the tests read; BNLIB_DATA wins, then ./data, then ../shared/data."""
    root = _data_root()
    os.environ["BNLIB_DATA"] = str(root)
    return root


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


def execute_chapter(chapter: Path, tmp_path: Path, python: str | Path = sys.executable):
    """Run a chapter as a notebook in a fresh kernel of ``python`` (nbclient), as a reader's
    Jupyter would, at the ``smoke`` profile; returns the executed notebook.

    The kernel runs in a separate process, away from the state other tests leave in this
    one; a failure shows the end of nbclient's output.
    """
    import jupytext
    import nbformat

    notebook = tmp_path / f"{chapter.stem}.ipynb"
    jupytext.write(jupytext.read(chapter), notebook)
    env = {k: v for k, v in os.environ.items() if k not in ("BNLIB_BOOK_BUILD", "PYTHONPATH")}
    env.update(BNLIB_PROFILE="smoke", BNLIB_PROGRESS="0", BNLIB_RESULTS=str(tmp_path / "res"))
    done = subprocess.run(
        [
            str(python),
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
    return nbformat.read(notebook, as_version=4)


@pytest.fixture
def run_chapter():
    """:func:`execute_chapter`, for tests that run chapters as notebooks."""
    return execute_chapter


@pytest.fixture(scope="module")
def chromium():
    """Debian's headless Chromium, driven by Playwright (which cannot download a browser of
    its own here), for the browser tests of the built book and of JupyterLab."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, "Debian's chromium is needed: apt-get install chromium (make test does)"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def small_sweep():
    """A real learning-rate sweep at a tiny scale (a one-layer MLP on MNIST, 20 steps,
    learning rates 0.01, 10 and 1e4, two seeds, the drop at half of training), with runs
    that diverge: the input of the sweep's figures, interactive figure and slicer tests."""
    from bnlib.experiments.learning_rate import lr_sweep

    return lr_sweep(
        lr_range=(0.01, 1e4),
        lr_count=3,
        seeds=(0, 1),
        steps=20,
        batch_size=50,
        config={"hidden": (16,), "activation": "relu"},
        curve_points=4,
        lr_drop_at=0.5,
        train_examples=500,
        device="cpu",
    )
