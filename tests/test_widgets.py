"""bnlib.widgets: explorers live (with a kernel) and static (in the built book)."""

from __future__ import annotations

import ipywidgets as w
import pytest

from bnlib.widgets import Explorer, launch_links, running_statistics_explorer


def make(compute):
    controls = {"a": w.IntSlider(value=3, min=1, max=5), "b": w.Dropdown(options=["x", "y"])}
    return Explorer("a test", controls, compute, chapter="bn_algorithm")


def test_launch_links_follow_the_book_config():
    links = launch_links("bn_algorithm")
    assert set(links) == {"Binder", "Colab"}
    assert links["Binder"].startswith("https://mybinder.org/v2/gh/")
    assert links["Binder"].endswith("?urlpath=tree/chapters/bn_algorithm.md")
    assert links["Colab"].endswith("/blob/main/notebooks/bn_algorithm.ipynb")


def test_static_notice_says_how_to_get_a_kernel_and_shows_the_settings():
    notice = make(lambda a, b: None).static_notice()
    assert "needs a running Python kernel" in notice
    assert "a = 3, b = x" in notice
    assert "mybinder.org" in notice and "colab.research.google.com" in notice


def test_live_run_uses_the_controls_and_survives_interrupts_and_bad_settings():
    calls = []

    def compute(a, b):
        calls.append((a, b))
        if a == 5:
            raise KeyboardInterrupt
        if a == 1:
            raise ValueError("a must be > 1")
        return f"result {a}{b}"

    explorer = make(compute)
    box = explorer.build()
    assert isinstance(box, w.VBox)
    explorer.controls["a"].value = 4
    explorer.run()
    assert calls[-1] == (4, "x") and explorer.status.value == ""
    explorer.controls["a"].value = 5
    explorer.run()
    assert "Interrupted" in explorer.status.value and not explorer.button.disabled
    explorer.controls["a"].value = 1
    explorer.run()
    assert "a must be &gt; 1" in explorer.status.value and not explorer.button.disabled
    explorer.controls["a"].value = 2
    explorer.run()
    assert calls[-1] == (2, "x") and explorer.status.value == ""


@pytest.mark.slow
def test_running_statistics_explorer_runs_its_experiment():
    from matplotlib.figure import Figure

    explorer = running_statistics_explorer()
    results = []
    compute = explorer.compute
    explorer.compute = lambda **values: results.append(compute(**values)) or results[-1]
    explorer.controls["steps"].value = 50
    explorer.controls["activation"].value = "tanh"
    explorer.build()
    explorer.run()
    assert explorer.status.value == ""
    assert len(results) == 1 and isinstance(results[0], Figure)
