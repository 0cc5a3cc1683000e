"""The book's figure style: one place, so every chapter looks the same."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib as mpl

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure
    from matplotlib.legend import Legend

#: Colors for "without BN" and "with BN" in every figure of the book.
PALETTE = {
    "no BN": "#d95f02",
    "BN": "#1b9e77",
    "BN + noise": "#7570b3",
    "SkipInit": "#e7298a",
    "Fixup": "#1f78b4",
    "ℓ1": "#66a61e",
    "ℓ2": "#e6ab02",
    "ℓ∞": "#a6761d",
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
