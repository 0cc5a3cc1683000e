"""bnlib.widgets: explorers live (with a kernel) and static (in the built book)."""

from __future__ import annotations

import atexit
import builtins
import math
import re
import sys
import threading
import time

import ipywidgets as w
import pytest

from bnlib.widgets import (
    STEP_SIZES,
    Explorer,
    covariate_shift_explorer,
    landscape_explorer,
    large_steps_explorer,
    launch_links,
    running_statistics_explorer,
)


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


def _shown(explorer) -> str:
    """The text of what the explorer's output area shows (one output: the last figure)."""
    (output,) = explorer.output.outputs
    return output["data"]["text/plain"]


def _interrupts_bad_settings_and_failures_leave_the_explorer_usable():
    """Runs of an explorer whose compute succeeds, is interrupted, refuses its settings,
    fails and is stopped; each one ends with the right status line, the Run button enabled,
    the progress bar hidden, and the last complete run's figure left in place."""
    from bnlib.progress import progress_bar, request_stop

    calls = []

    def compute(a, b):
        calls.append((a, b))
        if a == 5:
            raise KeyboardInterrupt
        if a == 1:
            raise ValueError("a must be > 1")
        if b == "y":
            raise RuntimeError("<boom>")
        if a == 3:  # a long run that a stop request ends
            bar = progress_bar(10_000, "long")
            threading.Timer(0.2, request_stop).start()
            for _ in range(10_000):
                time.sleep(0.001)
                bar.update()
        return f"result {a}{b}"

    explorer = make(compute)
    box = explorer.build()
    assert isinstance(box, w.VBox)

    def ready():
        return (
            not explorer.button.disabled
            and explorer.stop_button.disabled
            and explorer.progress.layout.display == "none"
        )

    explorer.controls["a"].value = 4
    explorer.run()
    assert calls[-1] == (4, "x") and explorer.status.value == "" and explorer.error is None
    assert _shown(explorer) == "'result 4x'" and ready()

    explorer.controls["a"].value = 5
    explorer.run()
    assert explorer.status.value.startswith("<b>Interrupted.</b>")
    assert isinstance(explorer.error, KeyboardInterrupt) and ready()
    assert _shown(explorer) == "'result 4x'"  # the last complete run's figure stays

    explorer.controls["a"].value = 3
    explorer.run()
    assert re.fullmatch(
        r"<b>Stopped at step \d+ of 10000\.</b> The figure is the last complete run's\.",
        explorer.status.value,
    ), explorer.status.value
    assert _shown(explorer) == "'result 4x'" and ready()
    assert 0 < explorer.progress_bar.value < 10_000  # the bar showed the run's progress
    assert explorer.progress_bar.max == 10_000

    explorer.controls["a"].value = 1
    explorer.run()
    assert explorer.status.value == "<b>Cannot run:</b> a must be &gt; 1" and ready()

    explorer.controls["a"].value = 2
    explorer.controls["b"].value = "y"
    explorer.run()
    assert explorer.status.value == "<b>Failed:</b> RuntimeError: &lt;boom&gt;"
    assert isinstance(explorer.error, RuntimeError) and ready()

    explorer.controls["b"].value = "x"
    explorer.run()
    assert calls[-1] == (2, "x") and explorer.status.value == "" and explorer.error is None
    assert _shown(explorer) == "'result 2x'" and ready()


def test_live_run_uses_the_controls_and_survives_interrupts_and_bad_settings():
    from IPython import get_ipython

    assert get_ipython() is None
    _interrupts_bad_settings_and_failures_leave_the_explorer_usable()


@pytest.fixture
def ipython_shell(tmp_path, monkeypatch):
    """An active IPython shell (``IPython.get_ipython()``, which ipywidgets' ``Output``
    asks, returns it), as in a kernel; the global state it changes is restored after."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    if InteractiveShell.initialized():
        yield InteractiveShell.instance()
        return
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    saved = (sys.displayhook, sys.excepthook, dict(builtins.__dict__))
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    shell = InteractiveShell.instance(config=config, ipython_dir=str(tmp_path))
    atexit.unregister(shell.atexit_operations)
    try:
        yield shell
    finally:
        shell.atexit_operations()
        InteractiveShell.clear_instance()
        sys.displayhook, sys.excepthook = saved[:2]
        for name in set(builtins.__dict__) - set(saved[2]):
            delattr(builtins, name)
        builtins.__dict__.update(saved[2])


def test_live_run_under_ipython_reports_interrupts_and_errors_in_the_status_line(
    ipython_shell, monkeypatch
):
    """In a kernel, ipywidgets' ``Output`` shows an exception raised in it as a traceback
    and swallows it: the explorer must catch it first (issue 9)."""
    from IPython import get_ipython

    assert get_ipython() is ipython_shell
    tracebacks = []
    monkeypatch.setattr(ipython_shell, "showtraceback", lambda *a, **k: tracebacks.append(a))
    _interrupts_bad_settings_and_failures_leave_the_explorer_usable()
    assert tracebacks == []  # nothing shown as a traceback in the output area


def _long_compute(steps: int = 1_000_000):
    """A stand-in experiment: ``steps`` steps of 1 ms each, reported to a progress bar."""
    from bnlib.progress import progress_bar

    def compute(a, b):
        bar = progress_bar(steps, f"run {a}{b}")
        for _ in range(steps):
            time.sleep(0.001)
            bar.update()
        bar.close()
        return f"result {a}{b}"

    return compute


def _wait(condition, seconds: float = 10.0) -> float:
    """Wait until ``condition()`` holds; return the seconds it took (fails after
    ``seconds``)."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, "timed out"
        time.sleep(0.01)
    return time.monotonic() - start


def test_a_run_started_by_the_run_button_goes_in_a_thread_and_stop_ends_it_within_a_second():
    """The Run button's callback returns at once (the run goes in a worker thread), so a
    Stop click, handled in any thread (a kernel's main thread or a subshell thread), ends
    the run within about a second; the status says so and the next run works."""
    explorer = make(_long_compute())
    explorer.build()
    explorer.button.click()  # as a click from the browser: returns at once
    thread = explorer._thread
    assert thread is not None and thread.is_alive() and explorer.button.disabled
    _wait(lambda: explorer.progress_bar.value > 0)
    assert explorer.progress.layout.display == "flex"
    assert explorer.progress_label.value.startswith("run 3x: ")
    assert explorer.start() is None  # one run at a time

    clicker = threading.Thread(target=explorer.stop_button.click)  # another thread
    clicked = time.monotonic()
    clicker.start()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - clicked < 1.0
    assert re.fullmatch(r"<b>Stopped at step \d+ of 1000000\.</b>.*", explorer.status.value)
    assert not explorer.button.disabled and explorer.stop_button.disabled
    assert explorer.output.outputs == ()  # nothing complete to show yet

    explorer.compute = _long_compute(20)
    explorer.controls["a"].value = 4
    explorer.button.click()
    explorer._thread.join(5)
    assert explorer.status.value == "" and _shown(explorer) == "'result 4x'"


def test_stop_ends_only_its_own_explorer_run():
    first, second = make(_long_compute()), make(_long_compute(300))
    for explorer in (first, second):
        explorer.build()
        explorer.start()
    _wait(lambda: first.progress_bar.value > 0 and second.progress_bar.value > 0)
    first.stop()
    first._thread.join(5)
    second._thread.join(10)
    assert first.status.value.startswith("<b>Stopped at step")
    assert second.status.value == "" and _shown(second) == "'result 3x'"


class Recorded(Exception):
    """Raised by a stand-in experiment once it has recorded its arguments."""


def _recorder(calls: list):
    def experiment(**kwargs):
        calls.append(kwargs)
        raise Recorded("recorded")

    return experiment


def _run_with(explorer, settings: dict, calls: list) -> dict:
    """Set the controls, press Run once, and return the arguments the experiment got."""
    for name, value in settings.items():
        explorer.controls[name].value = value
        assert explorer.controls[name].value == value
    explorer.build()
    explorer.run()
    assert explorer.status.value == "<b>Failed:</b> Recorded: recorded"
    assert len(calls) == 1
    return calls[0]


def test_running_statistics_explorer_passes_the_controls_to_its_experiment(monkeypatch):
    import bnlib.experiments.algorithm

    calls = []
    monkeypatch.setattr(bnlib.experiments.algorithm, "running_statistics", _recorder(calls))
    explorer = running_statistics_explorer()  # imports the experiment: patch it first
    settings = {"momentum": None, "batch_size": 16, "lr": 0.1, "activation": "relu", "steps": 150}
    got = _run_with(explorer, settings, calls)
    assert got["momenta"] == (None,)
    assert {k: got[k] for k in ("batch_size", "lr", "activation", "steps")} == {
        "batch_size": 16,
        "lr": 0.1,
        "activation": "relu",
        "steps": 150,
    }


def test_covariate_shift_explorer_passes_the_controls_to_its_experiment(monkeypatch):
    import bnlib.experiments.covariate_shift

    calls = []
    monkeypatch.setattr(bnlib.experiments.covariate_shift, "ioffe_figure1", _recorder(calls))
    explorer = covariate_shift_explorer()  # imports the experiment: patch it first
    settings = {
        "activation": "tanh",
        "bn": False,
        "layer": 2,
        "unit": 7,
        "lr": 0.1,
        "steps": 200,
    }
    got = _run_with(explorer, settings, calls)
    assert {k: got[k] for k in ("activation", "norms", "layer", "units", "lr", "steps")} == {
        "activation": "tanh",
        "norms": ("none",),
        "layer": 2,
        "units": (7,),
        "lr": 0.1,
        "steps": 200,
    }
    explorer.controls["bn"].value = True
    explorer.run()
    assert calls[-1]["norms"] == ("bnlib",)


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


def _holds(widget) -> bool:
    """Whether the browser can show ``widget.value`` as it is (no snapping to a grid)."""
    if isinstance(widget, w.FloatLogSlider):
        position = (math.log(widget.value, widget.base) - widget.min) / widget.step
        return abs(position - round(position)) < 1e-9
    if isinstance(widget, w.IntSlider | w.FloatSlider):
        position = (widget.value - widget.min) / widget.step
        return widget.min <= widget.value <= widget.max and abs(position - round(position)) < 1e-9
    if hasattr(widget, "options"):
        values = [o[1] if isinstance(o, tuple) else o for o in widget.options]
        return widget.value in values
    return True


@pytest.mark.parametrize(
    "make_explorer", [running_statistics_explorer, covariate_shift_explorer, large_steps_explorer]
)
def test_every_control_default_is_a_value_the_control_can_hold(make_explorer):
    explorer = make_explorer()
    for name, widget in explorer.controls.items():
        assert _holds(widget), f"{name}: default {widget.value!r} is not on the control's grid"
    if "lr" in explorer.controls:
        assert explorer.controls["lr"].value == 0.5
    else:
        assert explorer.controls["step_size"].value == 1e-3 and 1e-3 in STEP_SIZES


def test_large_steps_explorer_passes_the_controls_to_its_experiments(monkeypatch):
    import bnlib.experiments.large_steps

    calls = []
    monkeypatch.setattr(bnlib.experiments.large_steps, "relative_loss", _recorder(calls))
    explorer = large_steps_explorer()  # imports the experiment: patch it first
    settings = {"bn": True, "depth": 20, "init": "lecun", "step_size": 0.2}
    got = _run_with(explorer, settings, calls)
    assert {k: got[k] for k in ("depths", "norms", "inits", "batches")} == {
        "depths": (20,),
        "norms": ("torch",),
        "inits": ("lecun",),
        "batches": (1,),
    }


@pytest.mark.slow
def test_large_steps_explorer_draws_one_network():
    from matplotlib.figure import Figure

    explorer = large_steps_explorer()
    explorer.controls["depth"].value = 20
    result = explorer.compute(**explorer.values())
    assert isinstance(result, Figure) and "ResNet-20" in result.get_suptitle()


def test_a_slicer_redraws_on_every_change_and_keeps_the_last_figure_on_a_failure():
    from bnlib.widgets import Slicer

    def draw(a, b):
        if a == 5:
            raise KeyError("no such slice")
        return f"slice a={a} b={b}"

    controls = {"a": w.IntSlider(value=3, min=1, max=5), "b": w.Dropdown(options=["x", "y"])}
    slicer = Slicer("a slicer", controls, draw, chapter="large_learning_rates")
    slicer.build()
    slicer.redraw()
    assert _shown(slicer) == "'slice a=3 b=x'"
    controls["b"].value = "y"  # no Run button: the change redraws
    assert _shown(slicer) == "'slice a=3 b=y'" and slicer.status.value == ""
    controls["a"].value = 5
    assert "Failed:</b> KeyError" in slicer.status.value
    assert _shown(slicer) == "'slice a=3 b=y'"
    controls["a"].value = 4
    assert _shown(slicer) == "'slice a=4 b=y'" and slicer.status.value == ""


def test_lr_sweep_slicer_offers_the_sweeps_learning_rates_and_seeds(small_sweep):
    from matplotlib.figure import Figure

    from bnlib.widgets import lr_sweep_slicer

    slicer = lr_sweep_slicer(small_sweep)
    lr, seed = slicer.controls["lr"], slicer.controls["seed"]
    assert [v for _, v in lr.options] == pytest.approx([0.01, 10, 1e4])
    # the default is the sweep's rate nearest 0.1 on a log scale
    assert lr.value == pytest.approx(0.01) and seed.label == "mean over seeds"
    assert [label for label, _ in seed.options] == ["mean over seeds", "seed 0", "seed 1"]
    # the static book names the settings as the controls show them
    assert slicer.shown == {"learning rate": "0.01", "runs": "mean over seeds"}
    assert _holds(lr) and _holds(seed)
    fig = slicer.draw(lr=1e4, seed=1)
    title = fig.axes[1].get_title()
    assert isinstance(fig, Figure) and title.startswith("learning rate 1e+04")
    assert "no BN diverged at step" in title  # one seed: its own divergence step


def test_initialization_explorer_remeasures_a_fresh_network_on_every_change():
    from bnlib.widgets import initialization_explorer

    explorer = initialization_explorer()
    for name, widget in explorer.controls.items():
        assert _holds(widget), f"{name}: default {widget.value!r} is not on the control's grid"
    explorer.controls["depth"].value = 4
    explorer.controls["width"].value = 64
    explorer.build()
    explorer.redraw()
    assert explorer.status.value == "" and _shown(explorer).startswith("<Figure")
    explorer.output.outputs = ()
    explorer.controls["bn"].value = True  # no Run button: the change re-measures
    assert explorer.status.value == "" and _shown(explorer).startswith("<Figure")
    titles = {
        (bn, residual): explorer.draw(**{**explorer.values(), "bn": bn, "residual": residual})
        .get_suptitle()
        .split(";")[0]
        for bn in (False, True)
        for residual in (False, True)
    }
    assert titles[(False, False)] == "4 layers, relu, no BN"
    assert titles[(True, True)] == "2 residual blocks, relu, BN"
    assert "re-measures a fresh network" in explorer.what


def test_landscape_explorer_passes_the_controls_to_its_experiment(monkeypatch):
    import bnlib.experiments.landscape

    calls = []
    monkeypatch.setattr(bnlib.experiments.landscape, "landscape", _recorder(calls))
    explorer = landscape_explorer()  # imports the experiment: patch it first
    for name, widget in explorer.controls.items():
        assert _holds(widget), f"{name}: default {widget.value!r} is not on the control's grid"
    settings = {"bn": False, "lr": 1.0, "weight_decay": 1e-3, "steps": 200, "at": "end"}
    got = _run_with(explorer, settings, calls)
    assert {k: got[k] for k in ("network", "norms", "lr", "weight_decay", "steps")} == {
        "network": "mlp",
        "norms": ("none",),
        "lr": 1.0,
        "weight_decay": 1e-3,
        "steps": 200,
    }


@pytest.mark.slow
def test_landscape_explorer_draws_one_network():
    from matplotlib.figure import Figure

    explorer = landscape_explorer()
    explorer.controls["steps"].value = 200
    result = explorer.compute(**explorer.values())
    assert isinstance(result, Figure) and "step 100" in result.axes[2].get_title()


def _factor_sweep():
    from bnlib.experiments import factors

    return factors.factor_study(
        activations=("sigmoid", "relu"),
        optimizers=("sgd",),
        batch_sizes=(16, 64),
        sgd_lrs=[0.3, 1.0],
        steps=2,
        measure_points=1,
        validation=300,
    )


def test_factor_explorer_offers_every_setting_and_redraws_on_change():
    from bnlib.widgets import factor_explorer

    explorer = factor_explorer(_factor_sweep())
    setting = explorer.controls["setting"]
    labels = [label for label, _ in setting.options]
    assert labels == [
        "activation: sigmoid",
        "activation: ReLU",
        "optimizer: SGD",
        "batch size: 16",
        "batch size: 64",
    ]
    assert setting.value == ("activation", "sigmoid") and _holds(setting)
    explorer.build()
    explorer.redraw()
    assert explorer.status.value == ""
    setting.value = ("batch_size", 16)
    assert explorer.status.value == "" and _shown(explorer).startswith("<Figure")
    assert explorer.draw(("batch_size", 16)).get_suptitle().startswith("batch size: 16")


def test_small_batch_explorer_reslices_by_base_learning_rate_and_norm():
    from bnlib.experiments import factors
    from bnlib.widgets import small_batch_explorer

    sweep = factors.small_batches(
        batch_sizes=[4, 16],
        norms=["bn", "layer", "none"],
        base_lrs=[0.02, 0.05],
        examples=32,
        validation=200,
        test_examples=200,
    )
    explorer = small_batch_explorer(sweep)
    rate, norms = explorer.controls["base_lr"], explorer.controls["norms"]
    assert [v for _, v in rate.options] == [-1.0, 0.02, 0.05]
    assert set(norms.value) == {"bn", "layer", "none"}
    explorer.build()
    explorer.redraw()
    assert explorer.status.value == ""
    norms.value = ("layer",)
    legend = explorer.draw(0.05, ("layer",)).legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["LayerNorm"]
    norms.value = ()
    assert "choose at least one normalization" in explorer.status.value


def test_a_failure_before_any_figure_does_not_claim_one_is_shown():
    from bnlib.progress import Stopped

    def compute(a, b):
        raise Stopped(3, 100)

    explorer = make(compute)
    explorer.build()
    explorer.run()
    assert "No run has completed yet" in explorer.status.value
    assert "last complete run" not in explorer.status.value


def test_an_error_reads_as_numbers_and_fits_a_status_line():
    def compute(a, b):
        raise ValueError("lr must be positive, got " + ", ".join(["np.float64(-0.5)"] * 40))

    explorer = make(compute)
    explorer.build()
    explorer.run()
    text = explorer.status.value
    assert "np.float64" not in text and "-0.5" in text
    assert len(re.sub("<[^>]+>", "", text)) < 200 and text.endswith("…")
    assert "np.float64" in str(explorer.error)  # the whole error is kept


@pytest.mark.parametrize(
    ("values", "message"),
    [({"unit": 100}, "units 0 to 99, not 100"), ({"unit": -1}, "not -1"), ({"layer": 4}, "1 to 3")],
)
def test_covariate_shift_explorer_refuses_a_unit_the_network_lacks(values, message):
    explorer = covariate_shift_explorer()
    explorer.build()
    for name, value in values.items():  # as code (or a widget with other bounds) would
        explorer.controls[name] = type("Fixed", (), {"value": value})()
    explorer.run()
    assert "Cannot run:" in explorer.status.value and message in explorer.status.value


@pytest.mark.parametrize(
    ("make_slicer", "given", "message"),
    [
        ("small_batch_explorer", "empty", "has no rows"),
        ("factor_explorer", "other", "no column 'activation'"),
        ("lr_sweep_slicer", "list", "re-slices a DataFrame, got list"),
    ],
)
def test_a_slicer_given_the_wrong_data_says_what_to_pass(make_slicer, given, message):
    import pandas as pd

    import bnlib.widgets

    frame = {"empty": pd.DataFrame(), "other": pd.DataFrame({"x": [1]}), "list": [1, 2]}[given]
    with pytest.raises(ValueError, match=message) as info:
        getattr(bnlib.widgets, make_slicer)(frame)
    assert "book.result(" in str(info.value)
