"""The chapters as a reader runs them: in a real JupyterLab, driven in headless Chromium.

A JupyterLab server (the project's own, with ``lab/overrides.json`` as ``make lab``
installs it) is started on localhost with a token; for every chapter, Playwright opens it
(as a notebook: jupytext is the default viewer), runs all cells, and checks that no cell
shows an error and no widget fails to display. For each explorer it changes a control and
presses Run (the figure changes, a progress bar shows), then starts a long run and presses
Stop (the status line says where it stopped; the figure stays), then runs again. Finally it
saves the notebook and checks that the chapter's file is byte-identical, and that the
browser logged no error. Screenshots of each explorer before and after go to
``_build/screenshots/lab/``. The kernels run at the ``smoke`` profile, writing results to a
temporary folder. Slow (minutes): ``make test`` runs it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "_build" / "screenshots" / "lab"
CHAPTERS = sorted(p for p in (REPO / "chapters").glob("*.md") if "jupytext:" in p.read_text()[:400])
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on localhost: yields ``(url, token)``; shut down by its process
    id (its process group: the kernels too) at the end."""
    settings = Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings"
    settings.mkdir(parents=True, exist_ok=True)  # as `make lab` does
    shutil.copy(REPO / "lab" / "overrides.json", settings / "overrides.json")
    home = tmp_path_factory.mktemp("lab")
    token, port = secrets.token_hex(16), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("BNLIB_BOOK_BUILD", "PYTHONPATH")}
    env.update(
        BNLIB_PROFILE="smoke",
        BNLIB_RESULTS=str(home / "results"),
        BNLIB_PROGRESS="1",
        JUPYTER_CONFIG_DIR=str(home / "config"),  # nothing from the user's own setup
        JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
    )
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={REPO}",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = open(home / "server.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (home / "server.log").read_text()[-3000:]
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start: " + (home / "server.log").read_text()[-3000:])
        yield url, token
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(5)
        log.close()


def _wait(condition, seconds: float, what: str) -> None:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > seconds:
            pytest.fail(f"timed out after {seconds} s waiting until {what}")
        time.sleep(0.1)


def _kernel_idle(page) -> bool:
    indicator = page.locator(".jp-Notebook-ExecutionIndicator").first
    return (
        indicator.get_attribute("data-status") == "idle"
        and page.locator(".jp-InputPrompt", has_text="[*]").count() == 0
    )


def _accept_kernel_dialog(page) -> None:
    """JupyterLab may ask which kernel to start ("Select Kernel"; lab/overrides.json asks
    it to start the preferred one without asking); the chapter's own kernel is
    preselected: accept it."""
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    if dialog.count():
        dialog.locator("button", has_text="Select").click()


def _rerun_after_kernel_dialog(page) -> bool:
    """A "Select Kernel" dialog that opens after Run All (a fresh server that learns its
    kernel specs late, on a loaded machine: seen in CI) means the cells queued went with
    no kernel: accept it, wait for the kernel, and run all cells again. Returns False (so
    that the wait goes on)."""
    if not page.locator(".jp-Dialog", has_text="Select Kernel").count():
        return False
    _accept_kernel_dialog(page)
    _wait(lambda: _kernel_idle(page), 120, "the kernel chosen in the dialog is idle")
    if not _all_ran(page):
        _run_all(page)
    return False


def _started(page) -> bool:
    """Whether some code cell is running or has run (``[*]:`` or ``[1]:``)."""
    prompts = page.locator(".jp-Cell.jp-CodeCell .jp-InputPrompt").all_text_contents()
    return any(p.strip() not in ("", "[ ]:") for p in prompts)


def _run_all(page) -> None:
    """Run > Run All Cells. A click that lands while the notebook is still connecting to
    its kernel runs nothing (seen about one time in three), so it is retried; so does one
    while the notebook is not the current widget (the menu's commands act on the current
    one), so each try first clicks the notebook. A kernel dialog that opens meanwhile is
    accepted."""
    for _ in range(5):
        _accept_kernel_dialog(page)
        try:
            page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5}, timeout=5000)
            page.keyboard.press("Escape")  # command mode, no cell being edited
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click(timeout=5000)
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click(timeout=5000)
        except PlaywrightTimeout:  # a dialog opened in between: accept it and retry
            continue
        start = time.monotonic()
        while time.monotonic() - start < 15:
            # Run All on a notebook without a kernel asks for one (the first notebook of a
            # fresh server can open before the kernel specs are known): accept it, or the
            # Escape below would cancel it and leave the notebook without a kernel
            _accept_kernel_dialog(page)
            if _started(page):
                return
            time.sleep(0.2)
        page.keyboard.press("Escape")  # close the menu, should it still be open
    pytest.fail("Run > Run All Cells ran no cell (5 tries)")


def _all_ran(page) -> bool:
    """Whether every code cell shows an execution count (``[3]:``); fails at once when a
    cell shows an error (Run All stops there, so the rest would never run)."""
    errors = page.locator("[data-mime-type='application/vnd.jupyter.stderr']")
    if errors.count():
        pytest.fail("a cell failed: " + errors.first.text_content()[-2000:])
    prompts = page.locator(".jp-Cell.jp-CodeCell .jp-InputPrompt").all_text_contents()
    return bool(prompts) and all(p.strip()[1:-2].isdigit() for p in prompts)


def _figure(explorer) -> str | None:
    """The ``src`` of the explorer's figure (a data URL), or ``None``."""
    image = explorer.locator(".widget-output img")
    return image.first.get_attribute("src") if image.count() else None


def _status(explorer) -> str:
    """The status line's text (the last HTML widget that is not the title)."""
    return explorer.locator(".widget-html-content").nth(1).inner_text().strip()


def _idle(explorer) -> bool:
    return explorer.locator("button", has_text="Run").is_enabled()


def _set_steps(explorer, end: str) -> None:
    """Move the ``steps`` slider to its maximum (``"End"``) or minimum (``"Home"``)."""
    slider = explorer.locator(".widget-slider", has_text="steps")
    slider.locator(".noUi-handle").press(end)
    value = slider.locator(".noUi-handle").get_attribute(
        "aria-valuemax" if end == "End" else "aria-valuemin"
    )
    _wait(
        lambda: float(slider.locator(".widget-readout").inner_text()) == float(value),
        10,
        f"the steps slider shows {value}",
    )


def _run(explorer, *, stop: bool = False, shot: Path | None = None) -> bool:
    """Press Run, and Stop once the progress bar shows (``stop``); wait until the run
    ends. Returns whether the progress bar showed. ``shot``: a screenshot of the explorer
    while the bar shows."""
    run = explorer.locator("button", has_text="Run")
    run.click()
    # the kernel disables Run when the run starts: until then the button looks idle
    _wait(lambda: not run.is_enabled(), 30, "the run starts")
    progress = explorer.locator(".widget-hprogress")
    seen = False
    start = time.monotonic()
    while time.monotonic() - start < 600:
        if not seen and progress.is_visible():
            seen = True
            if shot is not None:
                explorer.screenshot(path=shot)
        if stop and seen:
            explorer.locator("button", has_text="Stop").click()
            stop = False
        if _idle(explorer) and not explorer.locator("button", has_text="Stop").is_enabled():
            return seen
        time.sleep(0.05)
    pytest.fail("the explorer's run did not end within 10 minutes")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_in_jupyterlab_and_its_explorers_respond(chapter, lab, chromium):
    url, token = lab
    before = chapter.read_bytes()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        # a workspace of its own: no tab of another chapter is restored beside it
        page.goto(f"{url}/lab/workspaces/{chapter.stem}/tree/chapters/{chapter.name}?token={token}")
        page.wait_for_selector(".jp-Notebook", timeout=120_000)  # a notebook, not an editor
        _wait(lambda: _accept_kernel_dialog(page) or _kernel_idle(page), 120, "the kernel is idle")

        _run_all(page)
        _wait(
            lambda: _rerun_after_kernel_dialog(page) or (_kernel_idle(page) and _all_ran(page)),
            600,
            "all cells have run",
        )

        stderr = page.locator("[data-mime-type='application/vnd.jupyter.stderr']")
        assert stderr.count() == 0, stderr.all_text_contents()
        assert page.get_by_text("Error displaying widget").count() == 0
        assert page.get_by_text("Traceback").count() == 0

        explorers = page.locator(".widget-vbox").filter(has=page.locator("button", has_text="Stop"))
        for i in range(explorers.count()):
            explorer = explorers.nth(i)
            explorer.scroll_into_view_if_needed()
            first = _figure(explorer)
            assert first, "the explorer shows no figure after its cell ran"
            explorer.screenshot(path=SHOTS / f"{chapter.stem}-explorer{i + 1}-before.png")

            # change a control (the first dropdown's next option), press Run
            select = explorer.locator("select").first
            options = select.locator("option").all_inner_texts()
            current = select.evaluate("s => s.selectedIndex")
            select.select_option(index=(current + 1) % len(options))
            assert _run(explorer), "no progress bar showed while the explorer ran"
            assert _status(explorer) == ""
            changed = _figure(explorer)
            assert changed and changed != first, "the figure did not change"

            # a long run, stopped (an explorer without a steps slider: the run as it is)
            has_steps = explorer.locator(".widget-slider", has_text="steps").count() > 0
            if has_steps:
                _set_steps(explorer, "End")
            _run(explorer, stop=True, shot=SHOTS / f"{chapter.stem}-explorer{i + 1}-running.png")
            assert _status(explorer).startswith("Stopped at step"), _status(explorer)
            explorer.screenshot(path=SHOTS / f"{chapter.stem}-explorer{i + 1}-stopped.png")
            assert "Traceback" not in explorer.inner_text()
            assert _figure(explorer) == changed  # the last complete run's figure stays

            # the next run works (with other settings, so that the figure must change)
            if has_steps:
                _set_steps(explorer, "Home")
            else:
                select.select_option(index=current)
            _run(explorer)
            assert _status(explorer) == ""
            assert _figure(explorer) not in (None, changed)
            explorer.screenshot(path=SHOTS / f"{chapter.stem}-explorer{i + 1}-after.png")

        page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
        page.keyboard.press("Escape")
        page.keyboard.press("Control+s")  # save: the file must not change
        _wait(lambda: page.locator(".lm-TabBar-tab.jp-mod-dirty").count() == 0, 30, "saved")
        page.screenshot(path=SHOTS / f"{chapter.stem}.png")
    except BaseException:
        page.screenshot(path=SHOTS / f"{chapter.stem}-failed.png")
        raise
    finally:
        page.close()
    assert chapter.read_bytes() == before, "opening, running and saving changed the chapter"
    assert errors == [], errors
