"""The book's figure style: one place, so every chapter looks the same."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib as mpl

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.legend import Legend

#: Colors for "without BN" and "with BN" in every figure of the book.
PALETTE = {
    "no BN": "#d95f02",
    "BN": "#1b9e77",
    "BN + noise": "#7570b3",
    "SkipInit": "#e7298a",
    "Fixup": "#1f78b4",
    # the l_p norms stand beside "no BN" (orange) and "BN" (green): blue, pink and grey,
    # far from both
    "ℓ1": "#0072b2",
    "ℓ2": "#cc79a7",
    "ℓ∞": "#4d4d4d",
    "LayerNorm": "#1f78b4",
    "GroupNorm": "#6a3d9a",
    "batch renorm": "#e7298a",
}


#: Colours, in order, for series the palette does not name (sweep values, units); the
#: colorblind-safe Okabe-Ito sequence (close to, not the same as, seaborn's "colorblind").
SEQUENCE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")


def color(label: object, index: int = 0) -> str:
    """The book's colour for a series: the palette's for a label it names (``"BN"``,
    ``"no BN"``, ...), else the ``index``-th of :data:`SEQUENCE`."""
    return PALETTE.get(str(label), SEQUENCE[index % len(SEQUENCE)])


#: Line styles of the 15th, 50th and 85th percentiles, distinguishable in print.
PERCENTILE_STYLES = {"p85": "--", "p50": "-", "p15": ":"}


def set_style() -> None:
    """Seaborn's whitegrid theme, sized for the book's page.

    The page's text column is about 690 pixels wide on a 1280-pixel screen, and the book's
    figures are 6.5 to 10 inches wide, so the browser shows them at about 70-105 pixels
    per inch. Tick labels of 16 points then appear about 15 pixels high, the size of the
    page's small print (figure captions), and 160 dpi keeps lines and text sharp when the
    browser scales the image down. Wider content is laid out in rows, not more columns.
    """
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=1.45)
    mpl.rcParams.update(
        {
            "figure.figsize": (7.0, 3.6),
            "figure.dpi": 160,
            "savefig.dpi": 160,
            "axes.titlesize": "medium",
            "legend.fontsize": "small",
            "legend.title_fontsize": "small",
            "legend.framealpha": 0.9,
            "figure.autolayout": False,
            "figure.constrained_layout.use": True,
        }
    )


def decade_labels(ax: Axes, axis: str = "y") -> None:
    """Readable labels on a log ``axis`` that spans one to two decades.

    Matplotlib labels such an axis's minor ticks (2x10^0, 3x10^0, 4x10^0, ...), and at
    the book's 16-point labels they overlap. Here the ticks at 1, 2 and 5 times a power
    of ten are labelled, in plain numbers (0.2, 0.5, 1, 2, 5, 10, ...), and the others
    not. Axes spanning less than a decade, or more than two (where matplotlib labels the
    powers of ten only), keep matplotlib's labels.
    Call it after the data are drawn (it reads the limits).
    """
    from matplotlib.ticker import FuncFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    low, high = ax.get_ylim() if axis == "y" else ax.get_xlim()
    if target.get_scale() != "log" or low <= 0 or not 1 <= math.log10(high / low) <= 2:
        return

    def label(value: float, _position: int) -> str:
        if value <= 0:
            return ""
        mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
        return f"{value:g}" if min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-6 else ""

    target.set_major_formatter(FuncFormatter(label))
    target.set_minor_formatter(FuncFormatter(label))


def legend_below(
    fig: Figure,
    handles: Sequence[Artist],
    labels: Sequence[str],
    ncol: int | None = None,
    **kwargs,
) -> Legend:
    """One legend for the whole figure, below its panels and off the data.

    The figure must use constrained layout (:func:`set_style` turns it on), which makes
    room for the legend under the panels. ``ncol`` defaults to one column per entry;
    further keyword arguments (``title``, ...) go to :meth:`Figure.legend`.
    """
    return fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=len(labels) if ncol is None else ncol,
        frameon=False,
        **kwargs,
    )
