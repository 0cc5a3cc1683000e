"""Sphinx extension: a change to bnlib's code re-executes the book's chapters.

jupyter-cache keys a notebook's cached outputs on the code of its cells only, so a chapter
whose cells did not change would keep the outputs of an older bnlib. This extension
writes bnlib's source hash (:func:`bnlib.provenance.source_hash`) into each chapter as it
is read: a comment line after the chapter's ``bnlib.setup_notebook(...)`` call. A new hash
changes that cell's code, so jupyter-cache executes the chapter again; it also changes the
``bnlib_source_hash`` config value, which makes Sphinx re-read every page.

Enable it in ``_config.yml`` with ``sphinx: extra_extensions: [bnlib.sphinx_ext]``.
Config value ``bnlib_hash_package`` (default: bnlib's own folder) names the package to hash.
"""

from __future__ import annotations

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


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point."""
    app.add_config_value("bnlib_hash_package", "", "env")
    app.add_config_value("bnlib_source_hash", "", "env")  # set in config-inited
    app.connect("config-inited", _on_config_inited)
    app.connect("source-read", _on_source_read)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}
