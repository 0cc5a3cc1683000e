"""The first call of every chapter (:func:`setup_notebook`): seeds, figure style, provenance.

It sits above :mod:`bnlib.figures` in the layering (it sets the figures' style), so that
:mod:`bnlib.provenance`, which the results store and the experiments use, imports no
figure code.
"""

from __future__ import annotations

from bnlib.device import seed_everything
from bnlib.figures.style import set_style
from bnlib.provenance import provenance

__all__ = ["setup_notebook"]


def setup_notebook(seed: int = 0, device: str | None = None) -> dict[str, str]:
    """First call of every chapter: seed everything, set the figure style, print provenance.

    Args:
        seed: seed for Python, NumPy and torch generators.
        device: ``"cuda"``, ``"mps"``, ``"cpu"`` or ``None`` to pick the best available.

    Returns:
        The provenance dict (see :func:`bnlib.provenance.provenance`), also printed on two
        lines.
    """
    seed_everything(seed)
    set_style()
    info = provenance(device)
    print(
        f"bnlib {info['bnlib_version']} (source {info['bnlib_source']}, "
        f"git {info['git_revision']})\n"
        f"torch {info['torch_version']} | {info['device']} | {info['date']}"
    )
    return info
