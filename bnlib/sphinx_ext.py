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

**Claims and reproductions.** Every claim a chapter states through :func:`bnlib.claims.claim`
renders as a line whose HTML carries the claim's record. When a chapter is read, its
claims are collected with their section; the directive ``{bnlib-claims}`` (on the appendix
page) becomes a table of all chapters' claims, in the book's order, each linked to its
line in the page.

**Colab opens notebooks.** Colab cannot open the chapters' MyST Markdown; the launch
button is pointed at ``notebooks/<chapter>.ipynb`` instead (made by ``make notebooks``
with jupytext, and kept in sync by a test).

Enable it in ``_config.yml`` with ``sphinx: extra_extensions: [bnlib.sphinx_ext]``.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive

from bnlib.claims import parse_rendered
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


def committed_results_hash(length: int = 8) -> str:
    """Hash of the committed full-profile results' metadata (``results/full/*/*.json``):
    the chapters show them, so a new or recomputed full result re-executes the chapters."""
    from bnlib.results import results_dir

    digest = hashlib.sha256()
    for path in sorted((results_dir() / "full").glob("*/*.json")):
        digest.update(path.parent.name.encode() + b"/" + path.name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:length]


def _on_config_inited(app: Any, config: Any) -> None:
    from bnlib.book import profile

    config.bnlib_source_hash = (  # the profile too: BNLIB_PROFILE=quick must not reuse full runs
        f"{source_hash(config.bnlib_hash_package or None)}, full results "
        f"{committed_results_hash()}, profile {profile()}"
    )


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


CLAIMS_CSS = """
.bnlib-claim { margin: 0.2em 0 0.8em; padding: 0.35em 0.7em; border-left: 4px solid #1b9e77;
  background: rgba(27, 158, 119, 0.07); font-size: 0.92em; line-height: 1.45; }
.bnlib-claim-disagrees { border-left-color: #d95f02; background: rgba(217, 95, 2, 0.08); }
.bnlib-claim-badge { font-weight: 600; text-transform: uppercase; font-size: 0.78em;
  letter-spacing: 0.03em; color: #11705a; margin-right: 0.3em; }
.bnlib-claim-disagrees .bnlib-claim-badge { color: #a04500; }
.bnlib-claim-differs { border-left-color: #7570b3; background: rgba(117, 112, 179, 0.08); }
.bnlib-claim-differs .bnlib-claim-badge { color: #4f4a8c; }
.bnlib-claim-differs-why { color: var(--pst-color-text-muted, #555); margin-left: 0.4em; }
.bnlib-claim-differs-why::before { content: "| "; }
.bnlib-claim-unchecked { border-left-color: #999; }
.bnlib-provenance { font-size: 0.85em; color: #555; border-left: 3px solid #7570b3;
  padding-left: 0.6em; }
.bnlib-provenance-stale { border-left-color: #d95f02; }
.bnlib-claim-book, .bnlib-claim-paper, .bnlib-claim-full { color: var(--pst-color-text-muted, #555);
  margin-left: 0.4em; }
.bnlib-claim-book::before, .bnlib-claim-paper::before, .bnlib-claim-full::before { content: "| "; }
details.bnlib-evidence { margin: 0.4em 0 1em; border: 1px solid var(--pst-color-border, #ddd);
  border-radius: 4px; padding: 0.3em 0.7em; }
details.bnlib-evidence > summary { cursor: pointer; font-size: 0.9em; font-weight: 600;
  color: var(--pst-color-text-muted, #444); }
details.bnlib-evidence[open] > summary { margin-bottom: 0.4em; }
table.bnlib-claims-table td, table.bnlib-claims-table th { vertical-align: top;
  font-size: 0.88em; }
/* Nothing is cut off at the page's right edge: a display equation or a code line wider
   than the text column scrolls, visibly, instead (the browser test checks it). */
mjx-container[display="true"] { display: block; max-width: 100%; overflow-x: auto;
  overflow-y: hidden; padding-bottom: 2px; }
div.math, div.highlight pre, div.cell_output { max-width: 100%; overflow-x: auto; }
/* Results tables (pandas) in small print, so that the wide ones fit the column. */
div.cell_output table { font-size: 0.82em; }
"""


def _collect_claims(app: Any, doctree: Any) -> None:
    """Record the claims rendered in a page, with the chapter and section they are in."""
    docname = app.env.docname
    found = []
    title = next(iter(doctree.findall(nodes.title)), None)
    chapter = title.astext() if title is not None else docname
    for raw in doctree.findall(nodes.raw):
        records = parse_rendered(raw.astext())
        if not records:
            continue
        section = raw.parent
        while section is not None and not isinstance(section, nodes.section):
            section = section.parent
        section_title, section_id = chapter, ""
        if section is not None:
            section_title = section[0].astext() if len(section) else chapter
            section_id = section["ids"][0] if section["ids"] else ""
        for record in records:
            found.append(
                {
                    **record,
                    "docname": docname,
                    "chapter": chapter,
                    "section": section_title,
                    "section_id": section_id,
                }
            )
    claims = getattr(app.env, "bnlib_claims", {})
    claims[docname] = found
    app.env.bnlib_claims = claims


def _purge_claims(app: Any, env: Any, docname: str) -> None:
    getattr(env, "bnlib_claims", {}).pop(docname, None)


def _merge_claims(app: Any, env: Any, docnames: Any, other: Any) -> None:
    claims = getattr(env, "bnlib_claims", {})
    claims.update(getattr(other, "bnlib_claims", {}))
    env.bnlib_claims = claims


def _claims_pages(app: Any, env: Any) -> list[str]:
    """The appendix is written on every build: it lists other pages' claims."""
    return sorted(getattr(env, "bnlib_claims_pages", set()) & set(env.found_docs))


def _book_order(env: Any) -> list[str]:
    order: list[str] = []

    def walk(doc: str) -> None:
        if doc in order:
            return
        order.append(doc)
        for child in env.toctree_includes.get(doc, []):
            walk(child)

    walk(env.config.root_doc)
    return order


class claims_table(nodes.General, nodes.Element):  # noqa: N801 (docutils' node naming)
    """Placeholder for the claims table, filled in when the page is written."""


class ClaimsDirective(Directive):
    """``{bnlib-claims}``: the table of every chapter's claims (filled at write time)."""

    has_content = False

    def run(self):
        env = self.state.document.settings.env
        pages = getattr(env, "bnlib_claims_pages", set())
        pages.add(env.docname)
        env.bnlib_claims_pages = pages
        return [claims_table("")]


def claims_table_html(claims: list[dict], link: Any) -> str:
    """The appendix table as HTML.

    Args:
        claims: claim records with ``docname, chapter, section, section_id`` (in order).
        link: ``link(docname, anchor) -> href`` relative to the appendix page.

    Returns:
        A ``<table>`` with one row per claim: chapter and section (linked), the claim,
        the paper's number, the book's number, the status. A book built at the full
        profile (the default) has one number per claim; one rebuilt at a smaller profile
        shows that profile's number beside the committed full one.
    """
    from html import escape

    from bnlib.claims import short_citation

    rerun = any(c.get("profile", "full") != "full" for c in claims)
    rows = []
    for c in claims:
        where = (
            f'<a href="{escape(link(c["docname"], ""))}">{escape(c["chapter"])}</a><br>'
            f'<a href="{escape(link(c["docname"], c["section_id"]))}">'
            f"{escape(c['section'])}</a>"
        )
        paper = escape(c.get("paper", ""))
        if c.get("cite"):
            paper = (
                f"{paper} ({escape(short_citation(c['cite']))})"
                if paper
                else escape(short_citation(c["cite"]))
            )
        quick = escape(c["book"]) if c.get("profile", "full") != "full" else ""
        if c.get("profile", "full") == "full":  # the book's own scale
            full = escape(c["book"])
        elif c.get("full_status"):  # a committed full result, checked beside the rerun
            full = escape(c["full"])
        elif c.get("only") and c.get("only") != "full":
            full = f"(about the {escape(c['only'])} profile only)"
        else:
            full = "not yet computed"
        numbers = f"<td>{quick or '&mdash;'}</td><td>{full}</td>" if rerun else f"<td>{full}</td>"
        status = escape(c["status"])
        if c.get("differs"):
            status += f"<br>({escape(c['differs'])})"
        css = {
            "holds": "bnlib-claim-holds",
            "disagrees with the paper": "bnlib-claim-disagrees",
            "not comparable: the setup differs": "bnlib-claim-differs",
        }.get(c["status"], "bnlib-claim-unchecked")
        rows.append(
            f"<tr class='{css}'><td>{where}</td>"
            f'<td><a href="{escape(link(c["docname"], c["id"]))}">{escape(c["text"])}</a></td>'
            f"<td>{paper or '&mdash;'}</td>{numbers}"
            f"<td>{status}</td></tr>"
        )
    profile = next((c["profile"] for c in claims if c.get("profile", "full") != "full"), "")
    book = (
        f"<th>book, {escape(profile)} profile</th><th>book, full profile</th>"
        if rerun
        else "<th>book</th>"
    )
    head = (
        "<thead><tr><th>chapter and section</th><th>claim</th><th>paper</th>"
        f"{book}<th>status</th></tr></thead>"
    )
    return f'<table class="table bnlib-claims-table">{head}<tbody>{"".join(rows)}</tbody></table>'


#: The appendix's groups, in order: (status, heading, what the group means).
GROUPS = (
    ("holds", "Claims the book's data support", "the book measured it, and it holds"),
    (
        "disagrees with the paper",
        "Claims of the papers the book's data contradict",
        "stated as the paper's; each chapter discusses the disagreement where it occurs",
    ),
    (
        "not comparable: the setup differs",
        "Claims of the papers the book's stand-ins do not reproduce: the setup differs",
        "stated as the paper's, with how the book's setup differs; not evidence against the paper",
    ),
    (
        "not checked for this profile",
        "Claims not checked on these data",
        "claims about another profile's runs (for example the length of a run)",
    ),
)


def claims_appendix_html(claims: list[dict], link: Any) -> str:
    """The appendix: a line of counts, then one table (:func:`claims_table_html`) per
    status (:data:`GROUPS`, any other status after them), each under a heading with its
    count; claims keep their reading order within a group."""
    from html import escape

    count = {status: sum(c["status"] == status for c in claims) for status, _, _ in GROUPS}
    summary = (
        f"<p>{len(claims)} claims in {len({c['docname'] for c in claims})} chapters: "
        f"{count['holds']} hold, {count['disagrees with the paper']} disagree with the paper, "
        f"{count['not comparable: the setup differs']} are not comparable (the setup "
        "differs), "
        f"{count['not checked for this profile']} are not checked on these data.</p>"
    )
    known = {status for status, _, _ in GROUPS}
    others = sorted({c["status"] for c in claims} - known)
    groups = [*GROUPS, *((status, f"Claims that {status}", "") for status in others)]
    parts = [summary]
    for status, heading, meaning in groups:
        members = [c for c in claims if c["status"] == status]
        if not members:
            continue
        anchor = "claims-" + re.sub(r"[^a-z]+", "-", status).strip("-")
        parts.append(
            f'<h3 id="{anchor}">{escape(heading)} ({len(members)})</h3>'
            + (f"<p>{escape(meaning[0].upper() + meaning[1:])}.</p>" if meaning else "")
            + claims_table_html(members, link)
        )
    return "".join(parts)


def _fill_claims_tables(app: Any, doctree: Any, fromdocname: str) -> None:
    placeholders = list(doctree.findall(claims_table))
    if not placeholders:
        return
    env = app.env
    by_doc = getattr(env, "bnlib_claims", {})
    order = [d for d in _book_order(env) if d in by_doc] + sorted(
        d for d in by_doc if d not in _book_order(env)
    )
    claims = [c for doc in order for c in by_doc[doc]]

    def link(docname: str, anchor: str) -> str:
        uri = app.builder.get_relative_uri(fromdocname, docname)
        return f"{uri}#{anchor}" if anchor else uri

    table = nodes.raw("", claims_appendix_html(claims, link), format="html")
    for node in placeholders:
        node.replace_self(table.deepcopy())


def _skip(self: Any, node: Any) -> None:
    raise nodes.SkipNode


#: A link to a claim (from the appendix, or shared) opens the evidence block it is in.
EVIDENCE_JS = """
function bnlibOpenEvidence() {
  var id = decodeURIComponent(location.hash.slice(1));
  var target = id && document.getElementById(id);
  var block = target && target.closest("details.bnlib-evidence");
  if (block) { block.open = true; target.scrollIntoView(); }
}
window.addEventListener("hashchange", bnlibOpenEvidence);
document.addEventListener("DOMContentLoaded", bnlibOpenEvidence);
"""


def _write_claims_css(app: Any) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bnlib-css-"))
    (folder / "bnlib-claims.css").write_text(CLAIMS_CSS)
    (folder / "bnlib-evidence.js").write_text(EVIDENCE_JS)
    app.config.html_static_path.append(str(folder))
    app.add_css_file("bnlib-claims.css")
    app.add_js_file("bnlib-evidence.js")


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point."""
    app.add_config_value("bnlib_hash_package", "", "env")
    app.add_config_value("bnlib_source_hash", "", "env")  # set in config-inited
    app.connect("config-inited", _on_config_inited)
    app.connect("source-read", _on_source_read)
    app.connect("builder-inited", _serve_plotly)
    app.connect("builder-inited", _write_claims_css)
    app.add_node(claims_table, html=(_skip, _skip))
    app.add_directive("bnlib-claims", ClaimsDirective)
    app.connect("doctree-read", _collect_claims)
    app.connect("env-purge-doc", _purge_claims)
    app.connect("env-merge-info", _merge_claims)
    app.connect("env-get-updated", _claims_pages)
    app.connect("doctree-resolved", _fill_claims_tables)
    # after sphinx-book-theme has made its launch buttons (priority 501)
    app.connect("html-page-context", _point_colab_to_notebooks, priority=502)
    app.connect("html-page-context", _drop_duplicate_scripts, priority=900)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}
