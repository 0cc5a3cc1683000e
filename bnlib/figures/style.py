"""The book's figure style: one place, so every chapter looks the same."""

from __future__ import annotations

import matplotlib as mpl

#: Colors for "without BN" and "with BN" in every figure of the book.
PALETTE = {"no BN": "#d95f02", "BN": "#1b9e77", "BN + noise": "#7570b3"}


def set_style() -> None:
    """Seaborn's whitegrid theme with a size and resolution that read well in the HTML."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    mpl.rcParams.update(
        {
            "figure.figsize": (7.0, 3.6),
            "figure.dpi": 110,
            "savefig.dpi": 110,
            "axes.titlesize": "medium",
            "figure.autolayout": False,
            "figure.constrained_layout.use": True,
        }
    )
