"""A change to bnlib's source re-executes the chapters (bnlib.sphinx_ext + jupyter-cache)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from myst_nb.core.read import read_myst_markdown_notebook

from bnlib.provenance import PACKAGE_DIR, source_hash
from bnlib.sphinx_ext import STAMP, stamp_source

REPO = Path(__file__).resolve().parents[1]
CHAPTER = REPO / "chapters" / "bn_algorithm.md"

PAGE = textwrap.dedent(
    """\
    ---
    jupytext:
      text_representation:
        format_name: myst
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---
    # A page

    ```{code-cell} python
    import uuid
    import bnlib
    bnlib.setup_notebook()
    print("run", uuid.uuid4())
    ```
    """
)


def test_stamp_follows_the_setup_call_once():
    once = stamp_source(PAGE, "abc123")
    twice = stamp_source(once, "def456")
    assert once.count("abc123") == 1
    assert "abc123" not in twice and twice.count("def456") == 1
    lines = once.splitlines()
    i = next(k for k, line in enumerate(lines) if "bnlib.setup_notebook(" in line)
    assert lines[i + 1] == STAMP.format(digest="abc123")
    assert stamp_source("# no code here\n", "abc") == "# no code here\n"


def test_source_hash_changes_with_any_source_edit(tmp_path):
    copy = tmp_path / "bnlib"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = source_hash(copy)
    assert before == source_hash(PACKAGE_DIR)
    (copy / "norm.py").write_text((copy / "norm.py").read_text() + "\n# edit\n")
    assert source_hash(copy) != before
    (copy / "norm.py").unlink()
    assert source_hash(copy) not in (before,)


def test_jupyter_cache_misses_when_the_hash_changes(tmp_path):
    """The stamped chapter, read as myst-nb reads it, hits jupyter-cache only for its hash."""
    text = CHAPTER.read_text()
    cache = get_cache(tmp_path / "cache")
    nb_a = read_myst_markdown_notebook(stamp_source(text, "a" * 16))
    cache.cache_notebook_bundle(CacheBundleIn(nb_a, "chapter"), check_validity=False)
    assert cache.match_cache_notebook(read_myst_markdown_notebook(stamp_source(text, "a" * 16)))
    with pytest.raises(KeyError):
        cache.match_cache_notebook(read_myst_markdown_notebook(stamp_source(text, "b" * 16)))


def _build(src: Path) -> str:
    out = src.parent / "out"
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-W", "-q", str(src), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    html = (out / "page.html").read_text()
    return re.search(r"run ([0-9a-f-]{36})", html).group(1)


@pytest.mark.slow
def test_sphinx_build_reexecutes_only_after_a_package_change(tmp_path):
    package = tmp_path / "package"
    shutil.copytree(PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    src = tmp_path / "book"
    src.mkdir()
    (src / "page.md").write_text(PAGE)
    (src / "index.md").write_text("# Index\n\n```{toctree}\npage\n```\n")
    (src / "conf.py").write_text(
        textwrap.dedent(f"""\
        extensions = ["myst_nb", "bnlib.sphinx_ext"]
        nb_execution_mode = "cache"
        nb_execution_cache_path = {str(tmp_path / "jcache")!r}
        bnlib_hash_package = {str(package)!r}
        """)
    )
    first = _build(src)
    assert _build(src) == first, "an unchanged book must come from the cache"
    (package / "engine.py").write_text((package / "engine.py").read_text() + "\n# edit\n")
    assert _build(src) != first, "a changed package must re-execute the page"


def test_the_execution_stamp_follows_the_committed_full_results(tmp_path, monkeypatch):
    from bnlib.sphinx_ext import committed_results_hash

    monkeypatch.setenv("BNLIB_RESULTS", str(tmp_path))
    empty = committed_results_hash()
    folder = tmp_path / "full" / "some_experiment"
    folder.mkdir(parents=True)
    (folder / "abc.json").write_text('{"key": "abc"}')
    first = committed_results_hash()
    (folder / "abc.json").write_text('{"key": "abc", "wall_time_s": 2}')
    assert len({empty, first, committed_results_hash()}) == 3
