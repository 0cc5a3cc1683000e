r"""Executable claims: every sentence of the book that rests on its own data is checked.

A chapter states a quantitative claim through one call, in a code cell next to the prose
that makes it::

    claim("BN's deep linear network has the lower median cosine",
          bn_cos < plain_cos,
          book={"BN": bn_cos, "no BN": plain_cos},
          paper="BN's G and G' almost uncorrelated", cite="santurkar2018how")

- ``holds`` is a boolean computed from the experiment's result.
- ``book`` is the book's number(s) behind it; ``paper`` the paper's, where it gives one,
  with its citation key from ``references.bib``.

The call renders as one short line in the page: the claim, the book's number beside the
paper's, and its status. A claim that does not hold **raises** :class:`ClaimFailed`, so the
cell fails and the book's build fails: the prose must then be changed to say what the data
show. The one exception is a declared disagreement with a paper: ``disagrees=True`` states
the *paper's* claim, which the book's data contradict (``holds`` is False); it renders as
a disagreement, and the text must discuss it. A declared disagreement that the data no
longer show (``holds`` is True) fails the build as well, since the text discussing it would
then be wrong.

Each rendered claim carries its record (JSON) in the HTML; :mod:`bnlib.sphinx_ext` collects
them from every chapter into the appendix "Claims and reproductions".
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import numbers
import os
import re
from dataclasses import asdict, dataclass, field
from functools import cache

from bnlib.provenance import PACKAGE_DIR

__all__ = [
    "Claim",
    "ClaimFailed",
    "Claims",
    "claim",
    "claims",
    "format_number",
    "parse_rendered",
    "short_citation",
]

#: The statuses a rendered claim can have.
HOLDS, DISAGREES = "holds", "disagrees with the paper"


class ClaimFailed(AssertionError):
    """A claim of the book that its own data do not support (fails the build)."""


def format_number(value: object) -> str:
    """A number as the book prints it: 4 significant digits, no trailing zeros.

    Integers print in full; NaN prints as ``nan``; anything else with ``str``.
    """
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(value)


def _format_book(book: object) -> str:
    if isinstance(book, dict):
        return ", ".join(f"{k} {format_number(v)}" for k, v in book.items())
    if isinstance(book, (list, tuple)):
        return ", ".join(format_number(v) for v in book)
    return format_number(book)


@cache
def _bibliography() -> dict[str, str]:
    """``key -> "Surname et al. YEAR"`` from the book's ``references.bib`` (if present)."""
    path = PACKAGE_DIR.parent / "references.bib"
    if not path.exists():
        return {}
    entries = {}
    for match in re.finditer(r"@\w+\{([^,]+),(.*?)\n\}", path.read_text(), flags=re.S):
        key, body = match.group(1).strip(), match.group(2)
        authors = re.search(r"author\s*=\s*\{(.*?)\},?\s*\n", body, flags=re.S)
        year = re.search(r"year\s*=\s*\{?(\d{4})", body)
        if not (authors and year):
            continue
        names = [a.split(",")[0].strip() for a in authors.group(1).split(" and ")]
        who = (
            names[0]
            if len(names) == 1
            else (f"{names[0]} & {names[1]}" if len(names) == 2 else f"{names[0]} et al.")
        )
        entries[key] = f"{who} {year.group(1)}"
    return entries


def short_citation(key: str | None) -> str:
    """``"santurkar2018how"`` -> ``"Santurkar et al. 2018"`` (the key itself if unknown)."""
    if not key:
        return ""
    return _bibliography().get(key, key)


@dataclass
class Claim:
    """One checked claim, as rendered in the page and collected into the appendix.

    Attributes:
        text: the sentence claimed.
        holds: whether the book's data support ``text``.
        book: the book's number(s), formatted.
        paper: the paper's number or statement, where it gives one (else ``""``).
        cite: the citation key of the paper (``references.bib``), or ``""``.
        status: ``"holds"`` or ``"disagrees with the paper"``.
        profile: the experiments' profile the book was computed with (``BNLIB_PROFILE``).
        id: a stable anchor for the claim's line in the page.
    """

    text: str
    holds: bool
    book: str
    paper: str = ""
    cite: str = ""
    status: str = HOLDS
    profile: str = "quick"
    id: str = field(default="")

    def record(self) -> dict:
        """The claim as a JSON-serializable dict (what the appendix reads)."""
        return asdict(self)

    def __repr__(self) -> str:
        mark = "✓" if self.status == HOLDS else "✗ disagrees:"
        paper = f"; paper: {self.paper}" if self.paper else ""
        cite = f" ({short_citation(self.cite)})" if self.cite else ""
        return f"{mark} {self.text} [book: {self.book}{paper}{cite}]"

    def _repr_html_(self) -> str:
        css = "bnlib-claim-holds" if self.status == HOLDS else "bnlib-claim-disagrees"
        badge = "holds" if self.status == HOLDS else "disagrees with the paper"
        paper = ""
        if self.paper or self.cite:
            cite = f" ({html.escape(short_citation(self.cite))})" if self.cite else ""
            said = html.escape(self.paper) or "&mdash;"
            paper = f' <span class="bnlib-claim-paper">paper{cite}: {said}</span>'
        data = html.escape(json.dumps(self.record()), quote=True)
        return (
            f'<div class="bnlib-claim {css}" id="{self.id}" data-claim="{data}">'
            f'<span class="bnlib-claim-badge">{badge}</span> '
            f'<span class="bnlib-claim-text">{html.escape(self.text)}</span> '
            f'<span class="bnlib-claim-book">book ({html.escape(self.profile)} profile): '
            f"{html.escape(self.book)}</span>{paper}</div>"
        )


def claim(
    text: str,
    holds: object,
    *,
    book: object,
    paper: str | None = None,
    cite: str | None = None,
    disagrees: bool = False,
) -> Claim:
    """State a claim that rests on the book's data, check it and render it.

    Args:
        text: the claim, as one sentence (for ``disagrees=True``: the paper's claim).
        holds: whether the data support it: a bool, or anything ``bool()`` accepts (a
            NumPy or torch boolean), computed from the experiment's result.
        book: the book's number(s) behind the claim: a number, a ``{label: number}`` dict,
            a sequence of numbers, or a short string.
        paper: the paper's number or statement where it gives one.
        cite: the paper's key in ``references.bib``, e.g. ``"santurkar2018how"``.
        disagrees: declare that the book's data contradict this claim of the paper.

    Returns:
        The :class:`Claim`, which Jupyter renders as one line.

    Raises:
        ClaimFailed: the claim does not hold (and is not a declared disagreement), or a
            declared disagreement no longer shows in the data.
        TypeError: ``text`` is empty or not a string.
    """
    if not isinstance(text, str) or not text.strip():
        raise TypeError("claim(text, ...): text must be a non-empty sentence")
    holds = bool(holds)
    book_text = _format_book(book)
    if not disagrees and not holds:
        raise ClaimFailed(
            f"the book's data do not support this claim: {text!r} (book: {book_text}). "
            "Change the text to say what the data show."
        )
    if disagrees and holds:
        raise ClaimFailed(
            f"declared as a disagreement with the paper, but the book's data now agree: "
            f"{text!r} (book: {book_text}). Rewrite the text that discusses the disagreement."
        )
    anchor = "claim-" + hashlib.sha256(text.encode()).hexdigest()[:10]
    return Claim(
        text=text.strip(),
        holds=holds,
        book=book_text,
        paper=paper or "",
        cite=cite or "",
        status=DISAGREES if disagrees else HOLDS,
        profile=os.environ.get("BNLIB_PROFILE") or "quick",
        id=anchor,
    )


class Claims(list):
    """Several claims shown together, one line each (what :func:`claims` returns)."""

    def __repr__(self) -> str:
        return "\n".join(repr(c) for c in self)

    def _repr_html_(self) -> str:
        return "".join(c._repr_html_() for c in self)


def claims(*items: Claim) -> Claims:
    """Show several claims of one cell together: ``claims(claim(...), claim(...))``.

    Each is checked when made (:func:`claim`), so the first that fails stops the cell.
    """
    for item in items:
        if not isinstance(item, Claim):
            raise TypeError(f"claims() takes Claim objects (from claim(...)), got {item!r}")
    return Claims(items)


def parse_rendered(html_text: str) -> list[dict]:
    """The claim records embedded in rendered HTML (what :meth:`Claim._repr_html_` writes).

    Args:
        html_text: any HTML, e.g. one output of a chapter.

    Returns:
        The records, in order of appearance.
    """
    return [
        json.loads(html.unescape(m.group(1)))
        for m in re.finditer(r'class="bnlib-claim [^"]*"[^>]*data-claim="([^"]*)"', html_text)
    ]
