"""Sphinx extension of the book: cache invalidation, offline plotly, Colab links.

**A change to bnlib's code re-executes the book's chapters.**

jupyter-cache keys a notebook's cached outputs on the code of its cells only, so a chapter
whose cells did not change would keep the outputs of an older bnlib. This extension
writes bnlib's source hash (:func:`bnlib.provenance.source_hash`) into each chapter as it
is read: a comment line after the chapter's ``bnlib.setup_notebook(...)`` call. A new hash
changes that cell's code, so jupyter-cache executes the chapter again; it also changes the
``bnlib_source_hash`` config value, which makes Sphinx re-read every page.

Config value ``bnlib_hash_package`` (default: bnlib's own folder) names the package to hash.

**plotly.js from the plotly package.** The interactive figures
(:mod:`bnlib.figures.interactive`) need plotly.js on the page; it is copied from the
installed ``plotly`` package into ``_static`` and loaded by every page, so no page
fetches a script from a CDN.

**Colab opens notebooks.** Colab cannot open the chapters' MyST Markdown; the launch
button is pointed at ``notebooks/<chapter>.ipynb`` instead (made by ``make notebooks``
with jupytext, and kept in sync by a test).

Enable it in ``_config.yml`` with ``sphinx: extra_extensions: [bnlib.sphinx_ext]``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from bnlib.provenance import __version__, source_hash

MARKER = "bnlib.setup_notebook("
STAMP = "# stamped by the book build: bnlib source {digest}"


def stamp_source(text: str, digest: str) -> str:
    """Insert the stamp line after the first code line that calls ``bnlib.setup_notebook(``.

    Args:
        text: a chapter's MyST Markdown source.
        digest: the source hash to write.

    Returns:
        The text with one stamp line added (indented like the call), or unchanged if no
        such call is found. An existing stamp line is replaced, never duplicated.
    """
    lines = text.splitlines(keepends=True)
    lines = [line for line in lines if not line.lstrip().startswith(STAMP.split("{")[0])]
    for i, line in enumerate(lines):
        if MARKER in line and not line.lstrip().startswith("#"):
            indent = line[: len(line) - len(line.lstrip())]
            lines.insert(i + 1, f"{indent}{STAMP.format(digest=digest)}\n")
            break
    return "".join(lines)


def _on_config_inited(app: Any, config: Any) -> None:
    config.bnlib_source_hash = source_hash(config.bnlib_hash_package or None)


def _on_source_read(app: Any, docname: str, source: list[str]) -> None:
    source[0] = stamp_source(source[0], app.config.bnlib_source_hash)


def plotly_js_path() -> Path:
    """plotly.js (minified) as shipped inside the installed ``plotly`` package."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _serve_plotly(app: Any) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bnlib-static-"))
    shutil.copy(plotly_js_path(), folder / "plotly.min.js")
    app.config.html_static_path.append(str(folder))
    app.add_js_file("plotly.min.js")


def colab_notebook_url(url: str, srcdir: str | Path) -> str:
    """A Colab launch URL for ``.../chapters/NAME.md`` rewritten to
    ``.../notebooks/NAME.ipynb`` when that notebook exists in the book's folder."""
    marker = "/chapters/"
    if marker not in url or not url.endswith(".md"):
        return url
    head, name = url.rsplit(marker, 1)
    notebook = Path(srcdir) / "notebooks" / name.replace(".md", ".ipynb")
    return f"{head}/notebooks/{notebook.name}" if notebook.exists() else url


def _point_colab_to_notebooks(app: Any, pagename, templatename, context, doctree) -> None:
    def visit(buttons):
        for button in buttons:
            if button.get("text") == "Colab" and "url" in button:
                button["url"] = colab_notebook_url(button["url"], app.srcdir)
            visit(button.get("buttons", []))

    visit(context.get("header_buttons", []))


def _drop_duplicate_scripts(app: Any, pagename, templatename, context, doctree) -> None:
    """Keep the first of script tags with the same source (or the same inline body):
    a second copy of MathJax or of sphinx-thebe's configuration is a console error."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = getattr(script, "filename", None) or getattr(script, "attributes", {}).get(
            "body", str(script)
        )
        key = str(key).split("?")[0]
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point."""
    app.add_config_value("bnlib_hash_package", "", "env")
    app.add_config_value("bnlib_source_hash", "", "env")  # set in config-inited
    app.connect("config-inited", _on_config_inited)
    app.connect("source-read", _on_source_read)
    app.connect("builder-inited", _serve_plotly)
    # after sphinx-book-theme has made its launch buttons (priority 501)
    app.connect("html-page-context", _point_colab_to_notebooks, priority=502)
    app.connect("html-page-context", _drop_duplicate_scripts, priority=900)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}
