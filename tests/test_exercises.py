"""The chapters' exercises: each has a solution (a dropdown), and every solution's code
runs as printed and passes its own checks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO / "chapters").glob("*.md"))
CODE = re.compile(r"^(?P<indent>[ \t]*)```python\n(?P<code>.*?)^(?P=indent)```", re.M | re.S)


def exercises(chapter: Path) -> str:
    """The chapter's "Exercises" section ("" if it has none)."""
    text = chapter.read_text()
    start = text.find("\n## Exercises\n")
    if start < 0:
        return ""
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


SOLUTIONS = [
    pytest.param(chapter, i, textwrap.dedent(m["code"]), id=f"{chapter.stem}-{i}")
    for chapter in CHAPTERS
    for i, m in enumerate(CODE.finditer(exercises(chapter)), 1)
]


def test_some_chapters_have_exercises_and_every_exercise_has_a_solution():
    with_exercises = [c for c in CHAPTERS if exercises(c)]
    assert len(with_exercises) == 6, "every chapter ends with exercises"
    for chapter in with_exercises:
        section = exercises(chapter)
        numbered = re.findall(r"^\d+\. \*\*", section, flags=re.M)
        solutions = re.findall(r"^\s*:::\{dropdown\} Solution", section, flags=re.M)
        assert 3 <= len(numbered) == len(solutions), chapter.name


@pytest.mark.parametrize(("chapter", "index", "code"), SOLUTIONS)
def test_a_solutions_code_runs_and_passes_its_checks(chapter, index, code, tmp_path):
    env = {**os.environ, "BNLIB_PROFILE": "smoke", "BNLIB_RESULTS": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"{chapter.name}, solution {index}:\n{done.stderr[-2000:]}"
    assert done.stdout.strip(), "a solution shows the reader its numbers"
