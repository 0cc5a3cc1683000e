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

A disagreement is not the same as a different setup. Where the book's stand-in differs
from the paper's setup in a way that could explain the difference (a shallower network, a
different dataset, a fifth of an epoch), ``differs="how the setup differs"`` declares the
paper's claim **not comparable**: it renders as "setup differs", with the reason, and
is checked like a disagreement (it must not hold on the book's data).

Claims made from a committed full-profile result as well (:func:`bnlib.book.check` calls
the same checking function on both results) carry the full number too: :func:`with_full`
joins the two. A claim that only one profile's data can support says so with
``only="quick"`` or ``only="full"``; it is checked, and shown, for that profile only.
At the ``smoke`` profile (a few steps, for tests that only execute the chapters) claims are
computed but not enforced.

Each rendered claim carries its record (JSON) in the HTML; :mod:`bnlib.sphinx_ext` collects
them from every chapter into the appendix "Claims and reproductions".
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import html
import json
import math
import numbers
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache

import numpy as np

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
#: A paper's claim the book's data do not reproduce in a setup that differs (not a
#: contradiction).
NOT_COMPARABLE = "not comparable: the setup differs"
#: Statuses of claims that are not enforced (smoke profile, or checked against the other
#: profile's data by :func:`with_full`).
DOES_NOT_HOLD, AGREES_NOW = "does not hold", "agrees with the paper after all"
NOT_CHECKED = "not checked for this profile"

_PROFILE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "claims_profile", default=None
)
_ENFORCE: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "claims_enforce", default=None
)


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
        status: ``"holds"``, ``"disagrees with the paper"`` or ``"not comparable: the
            setup differs"``.
        profile: the experiments' profile the book was computed with (``BNLIB_PROFILE``).
        id: a stable anchor for the claim's line in the page.
        full: the book's number(s) from the committed full-profile result, formatted
            (``""`` if there is none).
        full_status: the claim's status on the full-profile data (``""`` if none).
        only: ``""``, or the one profile whose data the claim is about.
        differs: for a claim not comparable, how the book's setup differs from the
            paper's (else ``""``).
    """

    text: str
    holds: bool
    book: str
    paper: str = ""
    cite: str = ""
    status: str = HOLDS
    profile: str = "full"
    id: str = field(default="")
    full: str = ""
    full_status: str = ""
    only: str = ""
    differs: str = ""

    def record(self) -> dict:
        """The claim as a JSON-serializable dict (what the appendix reads)."""
        return asdict(self)

    def __repr__(self) -> str:
        mark = {HOLDS: "✓", DISAGREES: "✗ disagrees:", NOT_COMPARABLE: "~ setup differs:"}.get(
            self.status, "? not checked:"
        )
        paper = f"; paper: {self.paper}" if self.paper else ""
        paper += f"; setup differs: {self.differs}" if self.differs else ""
        cite = f" ({short_citation(self.cite)})" if self.cite else ""
        full = f"; full profile: {self.full} ({self.full_status})" if self.full_status else ""
        return f"{mark} {self.text} [book: {self.book}{full}{paper}{cite}]"

    def _repr_html_(self) -> str:
        css, badge = {
            HOLDS: ("bnlib-claim-holds", "holds"),
            DISAGREES: ("bnlib-claim-disagrees", "disagrees with the paper"),
            NOT_COMPARABLE: ("bnlib-claim-differs", "setup differs"),
        }.get(self.status, ("bnlib-claim-unchecked", self.status))
        paper = ""
        if self.paper or self.cite:
            cite = f" ({html.escape(short_citation(self.cite))})" if self.cite else ""
            said = html.escape(self.paper) or "&mdash;"
            paper = f' <span class="bnlib-claim-paper">paper{cite}: {said}</span>'
        if self.differs:
            why = html.escape(self.differs)
            paper += f' <span class="bnlib-claim-differs-why">how: {why}</span>'
        data = html.escape(json.dumps(self.record()), quote=True)
        return (
            f'<div class="bnlib-claim {css}" id="{self.id}" data-claim="{data}">'
            f'<span class="bnlib-claim-badge">{badge}</span> '
            f'<span class="bnlib-claim-text">{html.escape(self.text)}</span> '
            f"{self._book_html()}{self._full_html()}{paper}</div>"
        )

    def _book_html(self) -> str:
        if not self.book:  # a claim about the full profile only
            return ""
        only = " (about this profile only)" if self.only == self.profile else ""
        # the book's pages state the full profile's data; only a rerun at another scale
        # names its profile
        where = "" if self.profile == "full" else f" ({html.escape(self.profile)} profile)"
        return f'<span class="bnlib-claim-book">book{where}: {html.escape(self.book)}{only}</span>'

    def _full_html(self) -> str:
        if not self.full_status:
            return ""
        return (
            f' <span class="bnlib-claim-full">full profile: {html.escape(self.full)}'
            f" ({html.escape(self.full_status)})</span>"
        )


def claim(
    text: str,
    holds: object,
    *,
    book: object,
    paper: str | None = None,
    cite: str | None = None,
    disagrees: bool = False,
    differs: str | None = None,
    only: str | None = None,
) -> Claim:
    """State a claim that rests on the book's data, check it and render it.

    Args:
        text: the claim, as one sentence (for ``disagrees=True``: the paper's claim).
        holds: whether the data support it: a bool (or a NumPy or one-element torch
            boolean), computed from the experiment's result. A NaN, a number or a string
            is refused (TypeError): ``bool()`` would call NaN and ``"False"`` true.
        book: the book's number(s) behind the claim: a number, a ``{label: number}`` dict,
            a sequence of numbers, or a short string.
        paper: the paper's number or statement where it gives one.
        cite: the paper's key in ``references.bib``, e.g. ``"santurkar2018how"``.
        disagrees: declare that the book's data contradict this claim of the paper.
        differs: declare instead that the book's data do not reproduce this claim of the
            paper in a setup that differs, and say how (a phrase: "an 8-layer MLP, not
            ResNet-110"); the claim is then not comparable rather than contradicted.
        only: ``"quick"`` or ``"full"``: the claim is about that profile's data only (for
            example the length of the quick run); on other data it is shown as not
            checked.

    Returns:
        The :class:`Claim`, which Jupyter renders as one line.

    Raises:
        ClaimFailed: the claim does not hold (and is not a declared disagreement), or a
            declared disagreement no longer shows in the data.
        TypeError: ``text`` is empty or not a string, or ``holds`` or ``disagrees`` is
            not a boolean.
    """
    if not isinstance(text, str) or not text.strip():
        raise TypeError("claim(text, ...): text must be a non-empty sentence")
    if only not in (None, "quick", "full"):
        raise ValueError(f"only must be 'quick', 'full' or None, got {only!r}")
    profile = _current_profile()
    anchor = "claim-" + hashlib.sha256(text.encode()).hexdigest()[:10]
    if only and only != profile:
        return Claim(
            text=text.strip(),
            holds=False,
            book="",
            paper=paper or "",
            cite=cite or "",
            status=NOT_CHECKED,
            profile=profile,
            id=anchor,
            only=only,
        )
    holds = _as_bool(holds, "holds")
    disagrees = _as_bool(disagrees, "disagrees")
    if differs is not None:
        if not isinstance(differs, str) or not differs.strip():
            raise TypeError("claim(differs=...): say how the setup differs, in a phrase")
        if disagrees:
            raise ValueError(
                "claim(): give disagrees=True (the data contradict the paper) or differs= "
                "(the setup differs), not both"
            )
    not_reproduced = disagrees or differs is not None
    book_text = _format_book(book)
    status = NOT_COMPARABLE if differs else DISAGREES if disagrees else HOLDS
    enforced = _ENFORCE.get() is not False and profile != "smoke"
    if holds == not_reproduced:  # not supported, or a declared difference the data no longer show
        if enforced and not not_reproduced:
            raise ClaimFailed(
                f"the book's data do not support this claim: {text!r} (book: {book_text}). "
                "Change the text to say what the data show."
            )
        if enforced:
            raise ClaimFailed(
                f"declared as {'not comparable' if differs else 'a disagreement'} with the "
                "paper, but the book's data now agree: "
                f"{text!r} (book: {book_text}). Rewrite the text that discusses the "
                "disagreement."
            )
        status = AGREES_NOW if not_reproduced else DOES_NOT_HOLD
    return Claim(
        text=text.strip(),
        holds=holds,
        book=book_text,
        paper=paper or "",
        cite=cite or "",
        status=status,
        profile=profile,
        id=anchor,
        only=only or "",
        differs=(differs or "").strip(),
    )


def _as_bool(value: object, name: str) -> bool:
    """``value`` as a bool if it is one (Python, NumPy, or a one-element torch boolean);
    anything else (a NaN, a number, a string such as ``"False"``) is a TypeError: a claim's
    verdict must be a comparison's result, never a value that ``bool()`` happens to accept.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    torch = sys.modules.get("torch")  # a torch value can only come from a loaded torch
    if (
        torch is not None
        and isinstance(value, torch.Tensor)
        and value.dtype == torch.bool
        and value.numel() == 1
    ):
        return bool(value.item())
    raise TypeError(
        f"claim(..., {name}=...) must be a boolean (True/False, or a NumPy or torch boolean), "
        f"got {type(value).__name__} {value!r}: compute it with a comparison, e.g. "
        f"{name}=bool(measured > threshold)"
    )


def _current_profile() -> str:
    # the book's own default: its pages state the committed full-profile data
    return _PROFILE.get() or os.environ.get("BNLIB_PROFILE") or "full"


@contextlib.contextmanager
def checking(profile: str, enforce: bool = True) -> Iterator[None]:
    """Within the block, claims are about ``profile``'s data, and raise only if ``enforce``.

    :func:`bnlib.book.check` uses it to run a chapter's checks on a committed full-profile
    result next to the quick one.
    """
    tokens = _PROFILE.set(profile), _ENFORCE.set(enforce)
    try:
        yield
    finally:
        _PROFILE.reset(tokens[0])
        _ENFORCE.reset(tokens[1])


def with_full(main: Sequence[Claim], full: Sequence[Claim], source: str = "") -> Claims:
    """The claims ``main`` with the numbers and status of the same claims made from the
    full-profile data (``full``, from the same checking function, so in the same order).

    Raises:
        ClaimFailed: a claim that does not hold on the full-profile data (or a declared
            disagreement the full data do not show): the text must say what they show,
            or the claim must be marked ``only="quick"``.
    """
    if [c.text for c in main] != [c.text for c in full]:
        raise ValueError("with_full: the two lists must hold the same claims in the same order")
    joined = []
    for quick_claim, full_claim in zip(main, full, strict=True):
        if full_claim.status in (DOES_NOT_HOLD, AGREES_NOW):
            raise ClaimFailed(
                f"at the full profile{(' (' + source + ')') if source else ''}: "
                f"{full_claim.status}: {full_claim.text!r} (book: {full_claim.book}). "
                "Change the text to say what the full profile shows, or mark the claim "
                'only="quick".'
            )
        if full_claim.status == NOT_CHECKED:  # a claim about the quick profile only
            joined.append(quick_claim)
            continue
        if quick_claim.status == NOT_CHECKED:  # a claim about the full profile only
            joined.append(
                dataclasses.replace(
                    full_claim,
                    profile=quick_claim.profile,
                    book="",
                    full=full_claim.book,
                    full_status=full_claim.status,
                )
            )
            continue
        joined.append(
            dataclasses.replace(quick_claim, full=full_claim.book, full_status=full_claim.status)
        )
    return Claims(joined)


class Claims(list):
    """Several claims shown together, one line each (what :func:`claims` returns)."""

    def __repr__(self) -> str:
        return "\n".join(repr(c) for c in self)

    def _repr_html_(self) -> str:
        """One collapsible "Evidence" block: a summary line (how many claims hold, how many
        of the papers' claims the data contradict or cannot compare), and the claims, each
        with its status, the book's number and the paper's. It opens by itself when a link
        (from the appendix) points at a claim inside it."""
        rendered = "".join(c._repr_html_() for c in self)
        checked = [c for c in self if isinstance(c, Claim)]
        if not checked:  # a note in place of claims (the smoke profile)
            return rendered
        return (
            f'<details class="bnlib-evidence"><summary>{html.escape(evidence_summary(checked))}'
            f"</summary>{rendered}</details>"
        )


def evidence_summary(claims: Sequence[Claim]) -> str:
    """``"Evidence: 5 claims; 4 hold, 1 disagrees with the paper"``: what a block holds."""
    counts = {status: sum(c.status == status for c in claims) for status in SUMMARY_WORDS}
    parts = []
    for status, (one, many) in SUMMARY_WORDS.items():
        n = counts[status]
        if n:
            parts.append(f"{n} {one if n == 1 else many}")
    noun = "claim" if len(claims) == 1 else "claims"
    checked = " checked on the data" if not counts[NOT_CHECKED] else ""
    return f"Evidence: {len(claims)} {noun}{checked}; " + ", ".join(parts)


#: How the summary of an evidence block names each status (one, several).
SUMMARY_WORDS = {
    HOLDS: ("holds", "hold"),
    DISAGREES: ("disagrees with the paper", "disagree with the paper"),
    NOT_COMPARABLE: ("not comparable (setup differs)", "not comparable (setup differs)"),
    DOES_NOT_HOLD: ("does not hold", "do not hold"),
    AGREES_NOW: ("agrees with the paper after all", "agree with the paper after all"),
    NOT_CHECKED: ("not checked", "not checked"),
}


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
