"""Every chapter converts to a notebook (jupytext) and runs in a fresh kernel (nbclient),
as it does in Jupyter, Binder or Colab: live explorers. It runs the ``smoke`` profile
(seconds per experiment), which computes every result the chapter asks for: the book build
executes every chapter on the committed full results, so this test makes sure that the
chapters' code also runs on freshly computed data, in a kernel.

The notebook runs in a separate process (``jupyter execute``), away from the state other
tests leave in this one (event loops, widget comms).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (REPO / "chapters").glob("*.md") if "jupytext:" in p.read_text()[:400])


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_as_a_notebook(chapter, tmp_path, run_chapter):
    executed = run_chapter(chapter, tmp_path)
    outputs = [o for c in executed.cells for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors[0]
    widgets = [
        o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widgets, "the explorer did not show its live controls in a kernel"


#: Prose that points at a claim by its position ("the first claim's numbers", "the claim
#: before the last") instead of saying what it shows.
ORDINAL_CLAIM = re.compile(
    r"\b(first|second|third|fourth|fifth|sixth|last|next|previous|preceding|following|above|"
    r"below|\d+(st|nd|rd|th)) (two |three )?claim('s|s)?\b|\bclaims? (above|below|before|"
    r"after) the last\b|\bclaims? (above|below)\b",
    flags=re.IGNORECASE,
)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_prose_never_points_at_a_claim_by_its_position(chapter):
    import jupytext

    found = []
    for cell in jupytext.read(chapter).cells:
        if cell.cell_type == "markdown":
            found += [m.group(0) for m in ORDINAL_CLAIM.finditer(cell.source)]
    assert not found, f"{chapter.name}: say what the claim shows instead of {found[:5]}"


#: Tags under which a code cell's source is out of the reader's way in the HTML.
HIDDEN_SOURCE = {"remove-input", "remove-cell", "hide-input", "hide-cell"}
#: Issue 31's target: code where code teaches (BN's forward and backward, a probe, an
#: explorer call), the checks out of sight.
MOST_VISIBLE_LINES = 60


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_a_chapter_shows_the_reader_little_code(chapter):
    import jupytext

    visible = [
        line
        for cell in jupytext.read(chapter).cells
        if cell.cell_type == "code" and not HIDDEN_SOURCE & set(cell.metadata.get("tags", []))
        for line in cell.source.splitlines()
        if line.strip()
    ]
    assert len(visible) <= MOST_VISIBLE_LINES, (
        f"{chapter.name} shows {len(visible)} non-blank lines of Python; fold checking code "
        "away (tags: [hide-input]) or move it into bnlib"
    )
