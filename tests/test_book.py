"""Checks of the built HTML book (run by `make test` after `make book`: pytest -m book)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
HTML = REPO / "_build" / "html"
pytestmark = pytest.mark.book


def toc_files() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    return [toc["root"], *(entry["file"] for entry in toc.get("chapters", []))]


def notebook_chapters() -> list[str]:
    """Pages that are notebooks (a jupytext header): they must show figures."""
    return [f for f in toc_files() if "jupytext:" in (REPO / f"{f}.md").read_text()[:400]]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.classes: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        self.classes.append(attrs.get("class") or "")


def parse(page: str) -> tuple[_Page, str]:
    path = HTML / f"{page}.html"
    assert path.exists(), f"{path} was not built: run `make book` first"
    text = path.read_text()
    parsed = _Page()
    parsed.feed(text)
    return parsed, text


@pytest.mark.parametrize("page", toc_files())
def test_every_toc_page_is_built_without_errors(page):
    parsed, text = parse(page)
    assert "Traceback" not in text, f"{page}: a traceback is in the page"
    for marker in ("output stderr", "output error", "output traceback"):
        assert not any(marker in c for c in parsed.classes), f"{page}: has '{marker}' output"
    assert not re.search(r"\b(Error|Exception):\s", re.sub(r"<[^>]+>", "", text)), (
        f"{page}: an exception message is shown"
    )


@pytest.mark.parametrize("page", notebook_chapters())
def test_chapter_figures_are_images_that_exist(page):
    parsed, _ = parse(page)
    figures = [src for src in parsed.images if "_images/" in src]
    assert len(figures) >= 3, f"{page}: only {len(figures)} figures"
    for src in figures:
        assert (HTML / Path(page).parent / src).resolve().exists(), f"{page}: missing {src}"


@pytest.mark.parametrize("page", notebook_chapters())
def test_chapter_shows_its_provenance(page):
    _, text = parse(page)
    assert re.search(r"bnlib \d+\.\d+\.\d+ \(source [0-9a-f]{16}, git ", text), (
        f"{page}: no provenance line (bnlib.setup_notebook) in the output"
    )


def test_bibliography_and_cross_references_resolve():
    _, text = parse("pages/references")
    for author in ("Ioffe", "Bjorck", "Santurkar"):
        assert author in text
    _, chapter = parse("chapters/bn_algorithm")
    prose = re.sub(r"<pre>.*?</pre>", "", chapter, flags=re.S)  # code cells name keys
    assert "ioffe2015batch" not in re.sub(r"<[^>]+>", "", prose), "unresolved citation"


def test_claims_appendix_lists_every_claim_of_every_chapter():
    from bnlib.claims import parse_rendered

    in_chapters = []
    for page in notebook_chapters():
        _, text = parse(page)
        found = parse_rendered(text)
        in_chapters += [(page, c["id"], c["text"]) for c in found]
    assert len(in_chapters) >= 20, "the chapters state too few claims"
    _, appendix = parse("pages/claims")
    rows = re.findall(r"<tr class='bnlib-claim-[a-z]+'>(.*?)</tr>", appendix, flags=re.S)
    assert len(rows) == len(in_chapters)
    for page, anchor, _ in in_chapters:
        assert f"{Path(page).name}.html#{anchor}" in appendix, f"{page}#{anchor} not linked"
    assert re.search(r"\d+ claims in \d+ chapters: \d+ hold, \d+ disagree", appendix)


def test_every_experiment_shown_names_where_its_data_come_from():
    """The book shows one set of numbers, the committed full-profile results: every
    experiment a chapter uses has one provenance line (its configuration, device, date and
    commit), no committed result is stale, and the claims carry one number each, in the
    chapters and in the appendix."""
    from bnlib import experiments
    from bnlib.claims import parse_rendered

    experiments.load_all()
    lines, claims = [], []
    for page in notebook_chapters():
        _, text = parse(page)
        assert "bnlib-provenance-stale" not in text and "bnlib-provenance-recomputed" not in text
        found = re.findall(r'class="bnlib-provenance bnlib-provenance-current">(.*?)</p>', text)
        for line in found:
            assert re.fullmatch(
                r"Data: [a-z0-9_]+, .+; computed on \S+.* with torch \S+ on "
                r"\d{4}-\d\d-\d\d in .+, git [0-9a-f]{7,}.*\.",
                line,
            ), line
        lines += found
        claims += parse_rendered(text)
    shown = {line.split(",", 1)[0].removeprefix("Data: ") for line in lines}
    used = {n for n, e in experiments.REGISTRY.items() if e.chapter}
    assert not used - shown, f"no provenance line for {sorted(used - shown)}"
    assert claims and all(c["profile"] == "full" and not c["full_status"] for c in claims)
    _, appendix = parse("pages/claims")
    assert "<th>book</th>" in appendix and "profile</th>" not in appendix


#: The profiles' names used as words of the reading text ("the quick run", "the full
#: profile's 50,000 steps"): the book states one set of numbers, the committed one.
PROFILE_WORDS = re.compile(r"\bquick\b|\bfull[- ](profile|run|one|data|result)s?\b", re.I)


def reading_text(html_text: str) -> str:
    """What a reader reads of a built page: the article, without code, scripts and styles."""
    article = html_text.split('<article class="bd-article"', 1)[-1].split("</article>", 1)[0]
    article = re.sub(r"<(pre|code|script|style)\b.*?</\1>", " ", article, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", article))


@pytest.mark.parametrize("page", toc_files())
def test_reading_text_states_one_set_of_numbers(page):
    _, text = parse(page)
    found = [m.group(0) for m in PROFILE_WORDS.finditer(reading_text(text))]
    assert not found, f"{page}: the reading text names a profile: {found[:5]}"
