"""Explorers: controls (ipywidgets) that re-run a small experiment with the reader's
settings and redraw its figure, in Jupyter, Binder or Colab.

An explorer needs a running kernel. In the built HTML book there is none, so there an
explorer shows the figure its default settings produce, and says how to launch the
chapter to change them (Binder, Colab, or a local Jupyter), instead of a slider that looks
alive but does nothing. A run shows its progress, and the explorer's Stop button ends it
within about a training step (so does interrupting the kernel, for the first run, which
runs in the cell); either way the explorer is left ready for another run.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable

from bnlib.figures.interactive import in_book_build
from bnlib.provenance import PACKAGE_DIR

__all__ = [
    "Explorer",
    "covariate_shift_explorer",
    "factor_explorer",
    "landscape_explorer",
    "large_steps_explorer",
    "Slicer",
    "launch_links",
    "lr_sweep_slicer",
    "running_statistics_explorer",
    "small_batch_explorer",
]


def launch_links(chapter: str) -> dict[str, str]:
    """Binder and Colab URLs of a chapter, from the book's ``_config.yml``.

    Args:
        chapter: the chapter's file name without suffix, e.g. ``"bn_algorithm"``.

    Returns:
        ``{"Binder": url, "Colab": url}``, or ``{}`` when bnlib is not in the book's
        repository (an installed copy) or the repository is not on GitHub.
    """
    import yaml

    config_path = PACKAGE_DIR.parent / "_config.yml"
    if not config_path.exists():
        return {}
    config = yaml.safe_load(config_path.read_text())
    url = config.get("repository", {}).get("url", "").rstrip("/")
    branch = config.get("repository", {}).get("branch", "main")
    buttons = config.get("launch_buttons", {})
    if "github.com/" not in url:
        return {}
    org_repo = url.split("github.com/", 1)[1]
    links = {}
    if buttons.get("binderhub_url"):
        links["Binder"] = (
            f"{buttons['binderhub_url'].rstrip('/')}/v2/gh/{org_repo}/{branch}"
            f"?urlpath=tree/chapters/{chapter}.md"
        )
    if buttons.get("colab_url"):
        links["Colab"] = (
            f"{buttons['colab_url'].rstrip('/')}/github/{org_repo}/blob/{branch}"
            f"/notebooks/{chapter}.ipynb"
        )
    return links


def _display_once(result) -> None:
    """Display ``result``; a matplotlib figure is then closed, so that the inline backend
    does not show it a second time (outside the explorer) when the cell ends."""
    from IPython.display import display

    display(result)
    _close_if_figure(result)


def _close_if_figure(result) -> None:
    from matplotlib.figure import Figure

    if isinstance(result, Figure):
        import matplotlib.pyplot as plt

        plt.close(result)


def _output_of(result) -> dict:
    """``result`` as one display-data output of an ``ipywidgets.Output`` (its ``outputs``
    entry), formatted as the kernel would display it (a figure: PNG).

    Setting ``Output.outputs`` works from any thread, unlike ``with output:``, which
    routes by the message being handled by the thread that runs the cell."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        data, metadata = {"text/plain": repr(result)}, {}
    else:
        data, metadata = shell.display_formatter.format(result)
    return {"output_type": "display_data", "data": data, "metadata": metadata}


def _label_of(widget) -> object:
    """What a control shows for its value: the option's label for a dropdown or selection
    slider (read from the options: ipywidgets leaves ``label`` unset while the first option
    is selected), else the value itself."""
    for option in getattr(widget, "options", ()):
        if isinstance(option, tuple) and option[1] == widget.value:
            return option[0]
    return widget.value


def _static_notice(title: str, chapter: str, defaults: dict, what: str) -> str:
    """The HTML a static book shows in place of an explorer's controls: the settings of
    the figure shown, ``what`` the explorer does, and how to launch the chapter."""
    links = launch_links(chapter)
    buttons = (
        " or ".join(f'<a href="{html.escape(u)}">{name}</a>' for name, u in links.items())
        or "Binder or Colab"
    )
    settings = ", ".join(f"{k} = {v}" for k, v in defaults.items())
    return (
        '<div class="admonition note bnlib-explorer-static"><p class="admonition-title">'
        f"Explorer: {html.escape(title)}</p><p>This page shows the result for "
        f"{html.escape(settings)}. {html.escape(what)}; it needs a running Python kernel. "
        f"Launch this chapter in {buttons} (the rocket icon at the top of the page), or "
        "open it in a local Jupyter, and run this cell to change them.</p></div>"
    )


def _failure_status(error: BaseException | None) -> str:
    """The status line (HTML) after a run that raised ``error`` (``""``: no error)."""
    if error is None:
        return ""
    from bnlib.progress import Stopped

    if isinstance(error, Stopped):
        return f"<b>{html.escape(str(error))}.</b> The figure is the last complete run's."
    if isinstance(error, KeyboardInterrupt):
        return "<b>Interrupted.</b> Change the settings and press Run again."
    if isinstance(error, ValueError):
        return f"<b>Cannot run:</b> {html.escape(str(error))}"
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return f"<b>Failed:</b> {html.escape(message)}"


class Explorer:
    """Controls, a Run button, a progress area and the figure of the last run.

    Args:
        title: what the explorer varies, shown above the controls.
        controls: ipywidgets by the name of the ``compute`` argument they set.
        compute: ``compute(**values)`` runs the experiment and returns a figure (or any
            displayable object).
        chapter: the chapter's file name (for the launch links in the static book).
        defaults: the values the static book shows; default: the controls' own values.
    """

    def __init__(
        self,
        title: str,
        controls: dict,
        compute: Callable[..., object],
        chapter: str,
        defaults: dict | None = None,
    ) -> None:
        self.title, self.controls, self.compute = title, controls, compute
        self.chapter = chapter
        self.defaults = defaults or {name: w.value for name, w in controls.items()}
        self._control = self._thread = None
        self.error: BaseException | None = None

    def values(self) -> dict:
        """The controls' current values, by argument name."""
        return {name: widget.value for name, widget in self.controls.items()}

    def static_notice(self) -> str:
        """The HTML shown in the static book in place of the controls."""
        return _static_notice(
            self.title,
            self.chapter,
            self.defaults,
            "The explorer re-runs the experiment with your own settings",
        )

    def build(self):
        """The live explorer: controls, Run and Stop buttons, a status line, a progress
        bar and an output area (``ipywidgets.VBox``). Sets ``self.button``,
        ``self.stop_button``, ``self.status``, ``self.progress`` (a box holding
        ``self.progress_bar`` and ``self.progress_label``, shown only while a run goes)
        and ``self.output``."""
        import ipywidgets as w

        self.output = w.Output()
        self.progress_bar = w.IntProgress(value=0, min=0, max=1, bar_style="info")
        self.progress_label = w.Label()
        self.progress = w.HBox(
            [self.progress_bar, self.progress_label], layout=w.Layout(display="none")
        )
        self.status = w.HTML()
        self.button = w.Button(description="Run", button_style="primary", icon="play")
        self.button.on_click(lambda _: self.start())
        self.stop_button = w.Button(description="Stop", icon="stop", disabled=True)
        self.stop_button.on_click(lambda _: self.stop())
        header = w.HTML(f"<b>{html.escape(self.title)}</b>")
        buttons = w.HBox([self.button, self.stop_button])
        return w.VBox(
            [header, *self.controls.values(), buttons, self.status, self.progress, self.output]
        )

    def start(self) -> threading.Thread | None:
        """Run (as :meth:`run`) in a new thread, and return the thread (``None`` when a
        run is going already). The Run button calls this: the callback returns at once,
        so that the kernel handles the Stop button's click while the run goes, whichever
        thread (main or subshell) handles widget messages."""
        if self._thread is not None and self._thread.is_alive():
            return None
        self._thread = threading.Thread(target=self.run, name="bnlib explorer", daemon=True)
        self._running()
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Stop the run going, if any, at its next training step (the Stop button)."""
        if self._control is not None:
            self._control.stop()

    def _running(self) -> None:
        self.button.disabled, self.stop_button.disabled = True, False
        self.status.value = "<i>running... (Stop ends the run)</i>"

    def _show_progress(self, desc: str, done: int, total: int) -> None:
        self.progress_bar.max = max(total, 1)
        self.progress_bar.value = min(done, total)
        self.progress_label.value = f"{desc}: {done:,} of {total:,} steps"
        self.progress.layout.display = "flex"

    def run(self, _=None) -> None:
        """Re-run with the controls' values (in this thread) and show the result.

        The progress bar shows while the run goes; the figure of the last complete run
        stays until the new one is ready. Nothing that goes wrong shows as a traceback,
        and the explorer stays ready for the next run: the status line says ``Stopped at
        step n of N.`` (the Stop button: :meth:`stop`), ``Interrupted.`` (the kernel was
        interrupted: this reaches a run in the main thread, started by running the cell),
        ``Cannot run: <message>`` (a ``ValueError``: the experiment refused the settings)
        or ``Failed: <type>: <message>`` (anything else; the exception is kept in
        ``self.error``).

        The figure goes to the output area by setting its ``outputs``, which works from a
        worker thread (:meth:`start`) as from the main thread.
        """
        from bnlib.progress import stoppable

        self._running()
        error = result = None
        try:
            with stoppable(on_progress=self._show_progress) as self._control:
                try:
                    result = self.compute(**self.values())
                except (Exception, KeyboardInterrupt) as caught:
                    error = caught
            if error is None:
                try:
                    self.output.outputs = (_output_of(result),)
                finally:
                    _close_if_figure(result)
            self.status.value = _failure_status(error)
        finally:
            self.error, self._control = error, None
            self.progress.layout.display = "none"
            self.button.disabled, self.stop_button.disabled = False, True

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        if in_book_build():
            display(HTML(self.static_notice()))
            _display_once(self.compute(**self.defaults))
        else:
            display(self.build())
            self.run()


class Slicer:
    """Controls whose every change redraws the figure at once: re-slicing a precomputed
    result, or a measurement of a second or two with no training. No Run button.

    Args:
        title: what the controls choose, shown above them.
        controls: ipywidgets by the name of the ``draw`` argument they set.
        draw: ``draw(**values)`` returns a figure (or any displayable object).
        chapter: the chapter's file name (for the launch links in the static book).
        what: what the controls do in a kernel, for the static book's notice.
    """

    def __init__(
        self,
        title: str,
        controls: dict,
        draw: Callable[..., object],
        chapter: str,
        what: str = "In a running kernel the controls re-slice these precomputed runs at once",
    ) -> None:
        self.title, self.controls, self.draw, self.chapter = title, controls, draw, chapter
        self.what = what
        self.defaults = {name: w.value for name, w in controls.items()}
        #: the settings as the controls show them (a dropdown's label, not its value)
        self.shown = {
            getattr(w, "description", "") or name: _label_of(w) for name, w in controls.items()
        }
        self.error: BaseException | None = None

    def values(self) -> dict:
        """The controls' current values, by argument name."""
        return {name: widget.value for name, widget in self.controls.items()}

    def build(self):
        """The live controls, a status line and an output area (``ipywidgets.VBox``);
        every control redraws on change. Sets ``self.status`` and ``self.output``."""
        import ipywidgets as w

        self.output, self.status = w.Output(), w.HTML()
        for control in self.controls.values():
            control.observe(self.redraw, names="value")
        header = w.HTML(f"<b>{html.escape(self.title)}</b>")
        return w.VBox([header, *self.controls.values(), self.status, self.output])

    def redraw(self, _=None) -> None:
        """Draw with the controls' values; a failure shows in the status line (and is
        kept in ``self.error``), and the last figure stays."""
        error = None
        try:
            result = self.draw(**self.values())
            try:
                self.output.outputs = (_output_of(result),)
            finally:
                _close_if_figure(result)
        except Exception as caught:
            error = caught
        self.error, self.status.value = error, _failure_status(error)

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        if in_book_build():
            display(HTML(_static_notice(self.title, self.chapter, self.shown, self.what)))
            _display_once(self.draw(**self.defaults))
        else:
            display(self.build())
            self.redraw()


def lr_sweep_slicer(frame) -> Slicer:
    """Re-slices a learning-rate sweep (:func:`bnlib.experiments.learning_rate.lr_sweep`)
    in the chapter "Large learning rates": pick a learning rate of the sweep and a seed
    (or their mean); the figure (:func:`bnlib.figures.learning_rate.one_learning_rate`)
    marks it on the accuracy curves and shows its runs with and without BN over
    training."""
    import ipywidgets as w

    from bnlib.figures import learning_rate as figures

    style = {"description_width": "110px"}
    lrs = sorted(frame["lr"].unique())
    seeds = sorted(frame["seed"].unique())
    controls = {
        "lr": w.SelectionSlider(
            options=[(f"{v:.2g}", float(v)) for v in lrs],
            value=figures.nearest_lr(lrs, 0.1),
            description="learning rate",
            style=style,
        ),
        "seed": w.Dropdown(
            # not None: an ipywidgets dropdown reads the value None as "nothing selected"
            options=[("mean over seeds", -1), *((f"seed {s}", int(s)) for s in seeds)],
            value=-1,
            description="runs",
            style=style,
        ),
    }
    return Slicer(
        "the learning-rate sweep, one learning rate at a time",
        controls,
        lambda lr, seed: figures.one_learning_rate(frame, lr, None if seed == -1 else seed),
        chapter="large_learning_rates",
    )


#: Learning rates an explorer offers: a 1-2-5 grid, so that the default (0.5) is one of
#: them. (A log slider on a 0.25 grid has no 0.5: the browser would snap it to 0.562 and
#: the first Run would not draw the figure shown.)
LEARNING_RATES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def _learning_rate_slider(w, style: dict):
    return w.SelectionSlider(
        options=LEARNING_RATES, value=0.5, description="learning rate", style=style
    )


def running_statistics_explorer() -> Explorer:
    """Explorer for "how good are the running averages?" in the chapter "The BN algorithm".

    Re-runs :func:`bnlib.experiments.algorithm.running_statistics` for one momentum with
    the reader's batch size, learning rate, activation and number of steps (a few
    seconds on a 2-core CPU at the defaults, at most about 30 s) and draws
    :func:`bnlib.figures.algorithm.running_statistics`.
    """
    import ipywidgets as w

    from bnlib.experiments.algorithm import running_statistics
    from bnlib.figures import algorithm as figures

    style = {"description_width": "110px"}
    controls = {
        "momentum": w.Dropdown(
            options=[
                ("0.3", 0.3),
                ("0.1 (PyTorch)", 0.1),
                ("0.01", 0.01),
                ("None (cumulative)", None),
            ],
            value=0.1,
            description="momentum",
            style=style,
        ),
        "batch_size": w.Dropdown(
            options=[4, 8, 16, 32, 60, 128], value=60, description="batch size", style=style
        ),
        "lr": _learning_rate_slider(w, style),
        "activation": w.Dropdown(
            options=["sigmoid", "tanh", "relu"],
            value="sigmoid",
            description="activation",
            style=style,
        ),
        "steps": w.IntSlider(
            value=300, min=50, max=1000, step=50, description="steps", style=style
        ),
    }

    def compute(momentum, batch_size, lr, activation, steps):
        df = running_statistics(
            steps=steps,
            momenta=(momentum,),
            batch_size=batch_size,
            lr=lr,
            activation=activation,
            points=10,
            population_examples=5000,
        )
        return figures.running_statistics(df)

    return Explorer(
        "running averages: momentum, batch size, learning rate",
        controls,
        compute,
        chapter="bn_algorithm",
    )


def covariate_shift_explorer() -> Explorer:
    """Explorer for "does BN keep a sigmoid's input distribution still?" in the chapter
    "Internal covariate shift".

    Re-runs :func:`bnlib.experiments.covariate_shift.ioffe_figure1` for one network (the
    reader's activation, BN on or off, learning rate) and draws the percentiles of the
    chosen unit's input in the chosen hidden layer, with the test accuracy (about 10 s on
    a 2-core CPU at the defaults).
    """
    import ipywidgets as w

    from bnlib.experiments.covariate_shift import ioffe_figure1
    from bnlib.figures.covariate_shift import percentiles_over_training

    style = {"description_width": "110px"}
    controls = {
        "activation": w.Dropdown(
            options=["sigmoid", "tanh", "relu"],
            value="sigmoid",
            description="activation",
            style=style,
        ),
        "bn": w.Checkbox(value=True, description="batch normalization"),
        "layer": w.Dropdown(options=[1, 2, 3], value=3, description="hidden layer", style=style),
        "unit": w.IntSlider(value=0, min=0, max=99, description="unit", style=style),
        "lr": _learning_rate_slider(w, style),
        "steps": w.IntSlider(
            value=1000, min=100, max=3000, step=100, description="steps", style=style
        ),
    }

    def compute(activation, bn, layer, unit, lr, steps):
        df = ioffe_figure1(
            steps=steps,
            seeds=(0,),
            lr=lr,
            activation=activation,
            units=(unit,),
            norms=("bnlib",) if bn else ("none",),
            layer=layer,
            points=12,
        )
        return percentiles_over_training(df)

    return Explorer(
        "a sigmoid's input over training: activation, BN, layer, unit, learning rate",
        controls,
        compute,
        chapter="covariate_shift",
    )


#: Step sizes the large-steps explorer offers: a 1-2-5 grid from 1e-5 to 1.
STEP_SIZES = tuple(round(m * 10.0**e, 12) for e in range(-5, 0) for m in (1, 2, 5)) + (1.0,)


def large_steps_explorer() -> Explorer:
    """Explorer for "one gradient step" in the chapter "Large learning rates".

    For a fresh ResNet of the reader's depth, initialization and normalization it
    measures, without any training, the relative loss of one gradient step against its
    size (:func:`bnlib.experiments.large_steps.relative_loss`, first mini-batch) and the
    size of the activations at every block
    (:func:`bnlib.experiments.large_steps.activation_growth`), and marks the chosen step
    size (a few seconds for ResNet-20, about 15 s for ResNet-110 on a 2-core CPU).
    """
    import ipywidgets as w

    from bnlib.experiments.large_steps import INITIALIZATIONS, activation_growth, relative_loss
    from bnlib.figures import large_steps as figures

    style = {"description_width": "110px"}
    controls = {
        "bn": w.Checkbox(value=False, description="batch normalization"),
        "depth": w.Dropdown(options=[20, 56, 110], value=56, description="depth", style=style),
        "init": w.Dropdown(
            options=[(figures.INIT_LABELS[k], k) for k in INITIALIZATIONS],
            value="he",
            description="initialization",
            style=style,
        ),
        "step_size": w.SelectionSlider(
            options=STEP_SIZES, value=1e-3, description="step size", style=style
        ),
    }

    def compute(bn, depth, init, step_size):
        norms = ("torch",) if bn else ("none",)
        relative = relative_loss(
            depths=(depth,), norms=norms, inits=(init,), batches=(1,), step_count=13
        )
        growth = activation_growth(depth=depth, norms=norms, inits=(init,))
        return figures.one_network(relative, growth, step_size)

    return Explorer(
        "one gradient step at initialization: BN, depth, initialization, step size",
        controls,
        compute,
        chapter="large_learning_rates",
    )


def initialization_explorer() -> Slicer:
    """Explorer of the chapter "Random initialization": one fresh network, re-measured
    at every change of its depth, width, initialization, gain, BN, residual blocks or
    activation (:func:`bnlib.experiments.initialization.fresh_network`, no training: a
    second or two on a CPU). The figure
    (:func:`bnlib.figures.initialization.fresh_network`) shows the activations' size
    against depth, the singular values of the Jacobian across the hidden layers, and the
    share of test images given the most frequent class."""
    import ipywidgets as w

    from bnlib.experiments.initialization import fresh_network
    from bnlib.figures import initialization as figures

    style = {"description_width": "110px"}
    controls = {
        "depth": w.SelectionSlider(
            options=[4, 6, 10, 20, 30, 50, 100], value=20, description="depth", style=style
        ),
        "width": w.Dropdown(options=[64, 128, 256], value=128, description="width", style=style),
        "init": w.Dropdown(
            options=[
                ("PyTorch default", "default"),
                ("Xavier/Glorot", "xavier"),
                ("He", "he"),
                ("orthogonal", "orthogonal"),
            ],
            value="he",
            description="initialization",
            style=style,
        ),
        "gain_factor": w.SelectionSlider(
            options=[0.5, 0.8, 0.9, 1.0, 1.1, 1.2, 1.5, 2.0],
            value=1.0,
            description="gain x",
            style=style,
        ),
        "bn": w.Checkbox(value=False, description="batch normalization"),
        "residual": w.Checkbox(value=False, description="residual blocks"),
        "activation": w.Dropdown(
            options=["relu", "tanh", "sigmoid", "linear"],
            value="relu",
            description="activation",
            style=style,
        ),
    }

    def draw(depth, width, init, gain_factor, bn, residual, activation):
        frame = fresh_network(
            depth=depth,
            width=width,
            init=init,
            gain_factor=gain_factor,
            norm="torch" if bn else "none",
            residual=residual,
            activation=activation,
        )
        kind = f"{depth // 2} residual blocks" if residual else f"{depth} layers"
        title = f"{kind}, {activation}, {'BN' if bn else 'no BN'}"
        return figures.fresh_network(frame, title)

    return Slicer(
        "one fresh network: depth, width, initialization, gain, BN, residual, activation",
        controls,
        draw,
        chapter="random_initialization",
        what="In a running kernel every change re-measures a fresh network at once (no training)",
    )


def landscape_explorer() -> Explorer:
    """Explorer for the chapter "Why BN tolerates large steps".

    Trains the deep ReLU MLP of the chapter "Large learning rates" on Fashion-MNIST with
    the reader's learning rate, weight decay and normalization
    (:func:`bnlib.experiments.landscape.landscape`, ``network="mlp"``), and draws the
    weight norm and effective learning rate over training and the loss along the
    gradient at the start, middle or end of training (a few seconds on a 2-core CPU).
    """
    import ipywidgets as w

    from bnlib.experiments.landscape import landscape
    from bnlib.figures import landscape as figures

    style = {"description_width": "110px"}
    controls = {
        "bn": w.Checkbox(value=True, description="batch normalization"),
        "lr": w.SelectionSlider(
            options=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0],
            value=0.1,
            description="learning rate",
            style=style,
        ),
        "weight_decay": w.Dropdown(
            options=[0.0, 1e-4, 1e-3, 1e-2], value=0.0, description="weight decay", style=style
        ),
        "steps": w.Dropdown(options=[200, 500, 1000], value=500, description="steps", style=style),
        "at": w.Dropdown(
            options=["start", "middle", "end"], value="middle", description="probe at", style=style
        ),
    }

    def compute(bn, lr, weight_decay, steps, at):
        frame = landscape(
            network="mlp",
            norms=("bn",) if bn else ("none",),
            steps=steps,
            lr=lr,
            weight_decay=weight_decay,
            points=11,
        )
        measured = sorted(frame["step"].unique())
        at_step = {"start": measured[0], "middle": measured[len(measured) // 2]}.get(
            at, measured[-1]
        )
        return figures.explorer_view(frame, lr, at_step)

    return Explorer(
        "training a deep MLP: learning rate, weight decay, BN",
        controls,
        compute,
        chapter="why_large_steps",
    )


def factor_explorer(frame) -> Slicer:
    """Explorer of the chapter "What else changes BN's effect", Part 1: pick a setting of
    the factor study (:func:`bnlib.experiments.factors.factor_study`: one factor changed
    from the baseline) and see its runs at once, re-sliced from the precomputed sweep
    (:func:`bnlib.figures.factors.factor_curves`): accuracy against the learning rate, and
    the training curves at each network's best learning rate."""
    import ipywidgets as w

    from bnlib.figures import factors as figures

    options = []
    for factor, title in figures.FACTORS.items():
        values = figures.factor_values(frame, factor)[factor].unique()
        for value in sorted(values, key=figures._sort_key(factor)):
            options.append((f"{title}: {figures._value_label(factor, value)}", (factor, value)))
    baseline = next(v for label, v in options if v == ("activation", "sigmoid"))
    controls = {
        "setting": w.Dropdown(
            options=options,
            value=baseline,
            description="setting",
            style={"description_width": "80px"},
            layout=w.Layout(width="380px"),
        )
    }
    return Slicer(
        "the factor study, one setting at a time",
        controls,
        lambda setting: figures.factor_curves(frame, *setting),
        chapter="what_else",
    )


def small_batch_explorer(frame) -> Slicer:
    """Explorer of the chapter "What else changes BN's effect", Part 2: the small-batch
    sweep (:func:`bnlib.experiments.factors.small_batches`) re-sliced at once: pick the
    base learning rate (or each normalization's best on the validation split) and the
    normalizations shown (:func:`bnlib.figures.factors.small_batches`)."""
    import ipywidgets as w

    from bnlib.figures import factors as figures

    style = {"description_width": "120px"}
    rates = sorted(float(v) for v in frame["base_lr"].unique())
    controls = {
        "base_lr": w.Dropdown(
            options=[("best on validation", -1.0), *((f"{r:g}", r) for r in rates)],
            value=-1.0,
            description="base learning rate",
            style=style,
        ),
        "norms": w.SelectMultiple(
            options=[
                (label, norm)
                for norm, label in figures.NORM_LABELS.items()
                if norm in set(frame["norm"])
            ],
            value=tuple(n for n in figures.NORM_LABELS if n in set(frame["norm"])),
            description="normalizations",
            style=style,
        ),
    }

    def draw(base_lr, norms):
        part = frame[frame["norm"].isin(norms)]
        if part.empty:
            raise ValueError("choose at least one normalization")
        return figures.small_batches(part, None if base_lr < 0 else base_lr)

    return Slicer("the small-batch sweep", controls, draw, chapter="what_else")
