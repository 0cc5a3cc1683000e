"""The book's figure style: one place, so every chapter looks the same."""

from __future__ import annotations

import matplotlib as mpl

#: Colors for "without BN" and "with BN" in every figure of the book.
PALETTE = {"no BN": "#d95f02", "BN": "#1b9e77", "BN + noise": "#7570b3"}


#: Line styles of the 15th, 50th and 85th percentiles, distinguishable in print.
PERCENTILE_STYLES = {"p85": "--", "p50": "-", "p15": ":"}


def set_style() -> None:
    """Seaborn's whitegrid theme, sized for the book's page.

    The page's text column is about 750-800 pixels wide, and the book's figures are 6.5 to
    11 inches wide, so the browser shows them at about 70-120 pixels per inch. Fonts of
    13-15 points then appear about as large as the page's small print (about 13 pixels),
    and 160 dpi keeps lines and text sharp when the browser scales the image down.
    """
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=1.3)
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
