"""The built book in a real browser (headless Chromium, driven by Playwright).

For every page: no JavaScript console error, no request to any host but localhost, every
image loaded, math typeset; on each interactive figure, clicking a legend item or moving
a slider changes what is drawn. Every page is saved as PNG screenshots (in pieces, top
to bottom) under ``_build/screenshots/``. Run by ``make test`` after the build (``pytest -m book``).
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("BNLIB_BOOK_HTML") or REPO / "_build" / "html")
SHOTS = HTML.parent / "screenshots"
pytestmark = pytest.mark.book
LOCAL = {"127.0.0.1", "localhost"}


def pages() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    return [toc["root"], *(entry["file"] for entry in toc.get("chapters", []))]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    assert HTML.exists(), "build the book first (make book)"
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(HTML))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser(chromium):
    """The shared Chromium (``conftest.chromium``)."""
    return chromium


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = {"console": [], "external": []}
    page.on("console", lambda m: problems["console"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems["console"].append(str(e)))

    def route(r):
        if urlparse(r.request.url).hostname in LOCAL or r.request.url.startswith("data:"):
            r.continue_()
        else:
            problems["external"].append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(url, wait_until="load")
    for y in range(0, page.evaluate("document.body.scrollHeight"), 700):  # lazy images
        page.evaluate(f"window.scrollTo(0, {y})")
        page.wait_for_timeout(30)
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
    page.evaluate("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
    return page, problems


#: Height in pixels of one screenshot piece. Chromium leaves most of a full-page capture
#: unpainted (blank, but for the math) once a page is some 50,000 pixels tall, so a
#: page is captured in pieces.
PIECE = 2400


def _screenshots(page, stem: str) -> None:
    """Save the whole page as PNG pieces ``<stem>_00.png``, ``<stem>_01.png``, ... of
    :data:`PIECE` pixels each (earlier pieces of that page are removed first)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob(f"{stem}_[0-9][0-9].png"):
        old.unlink()
    (SHOTS / f"{stem}.png").unlink(missing_ok=True)  # the single file of earlier versions
    width = page.evaluate("document.documentElement.scrollWidth")
    height = page.evaluate("document.documentElement.scrollHeight")
    for k, top in enumerate(range(0, height, PIECE)):
        clip = {"x": 0, "y": top, "width": width, "height": min(PIECE, height - top)}
        page.screenshot(path=str(SHOTS / f"{stem}_{k:02d}.png"), full_page=True, clip=clip)


#: JavaScript: the display equations, code blocks and tables wider than their box that
#: neither they nor a box around them (inside the article) scroll: content the reader
#: cannot see, cut off at the right edge.
CLIPPED = """() => {
  const clipped = [];
  const wide = 'article mjx-container[display="true"], article pre, article table';
  for (const el of document.querySelectorAll(wide)) {
    if (el.scrollWidth <= el.clientWidth + 1) continue;
    let node = el, scrolls = false;
    while (node && node.tagName !== 'ARTICLE') {
      const overflow = getComputedStyle(node).overflowX;
      if (overflow === 'auto' || overflow === 'scroll') { scrolls = true; break; }
      node = node.parentElement;
    }
    if (!scrolls) clipped.push(el.tagName + ': ' + el.textContent.trim().slice(0, 60));
  }
  return clipped;
}"""


@pytest.mark.parametrize("name", pages())
def test_page_loads_offline_without_errors(name, server, browser):
    page, problems = _open(browser, f"{server}/{name}.html")
    try:
        assert not problems["external"], f"requests outside localhost: {problems['external']}"
        assert not problems["console"], f"console errors: {problems['console']}"
        broken = page.evaluate(
            "() => Array.from(document.images)"
            ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
        )
        assert not broken, f"images that did not load: {broken}"
        if page.locator("span.math, div.math").count():
            assert page.locator("mjx-container").count() > 0, "math was not typeset"
        clipped = page.evaluate(CLIPPED)
        assert not clipped, f"content cut off at the column's right edge: {clipped}"
        wide = page.evaluate(
            "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert wide[0] <= wide[1], f"the page is wider than the window ({wide}): it shifts sideways"
        page.evaluate("window.scrollTo(0, 0)")  # else the sticky header lands mid-page
        page.wait_for_timeout(100)
        _screenshots(page, name.replace("/", "_"))
    finally:
        page.close()


def _drawn(page, index: int) -> str:
    """Everything the figure has drawn (its SVG layers)."""
    return page.evaluate(
        f"() => Array.from(document.querySelectorAll('.plotly-graph-div')[{index}]"
        ".querySelectorAll('svg.main-svg')).map(s => s.innerHTML).join('')"
    )


@pytest.mark.parametrize("name", pages())
def test_interactive_figures_respond(name, server, browser):
    page, _ = _open(browser, f"{server}/{name}.html")
    try:
        figures = page.locator(".plotly-graph-div")
        for i in range(figures.count()):
            figure = figures.nth(i)
            figure.scroll_into_view_if_needed()
            before = _drawn(page, i)
            slider = figure.locator(".slider-rail-touch-rect")
            if slider.count():
                box = slider.first.bounding_box()
                page.mouse.click(box["x"] + box["width"] - 3, box["y"] + box["height"] / 2)
            else:
                figure.locator(".legendtoggle").first.click()
            page.wait_for_timeout(1000)  # plotly waits to tell a click from a double-click
            assert _drawn(page, i) != before, f"figure {i} on {name} did not change"
    finally:
        page.close()


def test_book_has_interactive_figures(server, browser):
    counts = {}
    for name in pages():
        page, _ = _open(browser, f"{server}/{name}.html")
        counts[name] = page.locator(".plotly-graph-div").count()
        page.close()
    assert sum(counts.values()) >= 2, counts


def test_a_link_to_a_claim_opens_its_evidence_block(server, browser):
    """Claims sit in collapsed "Evidence" blocks; following the appendix's link to one
    opens its block and shows it."""
    page, problems = _open(browser, f"{server}/pages/claims.html")
    try:
        href = page.locator("table.bnlib-claims-table td a[href*='#claim-']").first
        target = href.get_attribute("href")
        page.goto(f"{server}/pages/{target}", wait_until="load")
        claim_id = target.split("#", 1)[1]
        page.wait_for_function(
            f"() => document.getElementById('{claim_id}').closest('details').open"
        )
        assert page.locator(f"#{claim_id}").is_visible()
        closed = page.evaluate(
            "() => Array.from(document.querySelectorAll('details.bnlib-evidence'))"
            ".filter(d => !d.open).length"
        )
        assert closed > 0, "the other evidence blocks stay folded"
        assert not problems["console"], problems["console"]
    finally:
        page.close()
