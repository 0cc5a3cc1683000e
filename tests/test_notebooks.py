"""Every chapter converts to a notebook (jupytext) and runs in a fresh kernel (nbclient),
as it does in Jupyter, Binder or Colab: live explorers, quick profile."""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (REPO / "chapters").glob("*.md") if "jupytext:" in p.read_text()[:400])


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_as_a_notebook(chapter, tmp_path, monkeypatch):
    monkeypatch.delenv("BNLIB_BOOK_BUILD", raising=False)  # a reader's kernel, not the build
    monkeypatch.setenv("BNLIB_PROFILE", "quick")
    monkeypatch.setenv("BNLIB_PROGRESS", "0")
    monkeypatch.setenv("BNLIB_RESULTS", str(tmp_path / "results"))
    notebook = jupytext.read(chapter)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    errors = [
        o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors, errors[0]
    widgets = [
        o
        for c in notebook.cells
        for o in c.get("outputs", [])
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widgets, "the explorer did not show its live controls in a kernel"
