"""Where a result came from: bnlib's version and source hash, git revision, device, date.

The book shows this next to every result. The source hash also drives the execution
cache: :mod:`bnlib.sphinx_ext` writes it into each chapter's first cell, so that a change
to bnlib's code re-executes the chapters even when their own cells did not change.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import subprocess
from pathlib import Path

__version__ = "0.1.0"

PACKAGE_DIR = Path(__file__).resolve().parent


def source_hash(package_dir: str | os.PathLike | None = None, length: int = 16) -> str:
    """Hash of every ``.py`` file of a package, by relative path and content.

    Args:
        package_dir: the package folder to hash; bnlib's own folder by default.
        length: number of hexadecimal characters returned (at most 64).

    Returns:
        A hexadecimal SHA-256 prefix that changes whenever any source file is added,
        removed, renamed or edited, and is the same on every machine for the same code.
    """
    root = Path(package_dir) if package_dir is not None else PACKAGE_DIR
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:length]


def git_revision(cwd: str | os.PathLike | None = None) -> str:
    """The git revision of the checkout holding bnlib, with ``-dirty`` if it has changes.

    Returns ``"unknown"`` outside a git checkout (an installed wheel, say).
    """
    cwd = Path(cwd) if cwd is not None else PACKAGE_DIR.parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        )
        return done.stdout.strip()

    try:
        rev = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}-dirty" if dirty else rev


def device_description(device: str | None = None) -> str:
    """A human-readable name of the device results are computed on (GPU model or CPU)."""
    import torch

    from bnlib.device import pick_device

    dev = pick_device(device)
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    cpu = platform.processor() or platform.machine()
    return f"{dev.type} ({cpu}, {os.cpu_count()} cores)"


def provenance(device: str | None = None) -> dict[str, str]:
    """Metadata that identifies a run: what code, where, when.

    Returns:
        A dict with keys ``bnlib_version``, ``bnlib_source``, ``git_revision``,
        ``torch_version``, ``python``, ``device`` and ``date`` (UTC, ISO 8601).
    """
    import torch

    return {
        "bnlib_version": __version__,
        "bnlib_source": source_hash(),
        "git_revision": git_revision(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "device": device_description(device),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def setup_notebook(seed: int = 0, device: str | None = None) -> dict[str, str]:
    """First call of every chapter: seed everything, set the figure style, print provenance.

    Args:
        seed: seed for Python, NumPy and torch generators.
        device: ``"cuda"``, ``"mps"``, ``"cpu"`` or ``None`` to pick the best available.

    Returns:
        The provenance dict (see :func:`provenance`), also printed on two lines.
    """
    from bnlib.device import seed_everything
    from bnlib.figures.style import set_style

    seed_everything(seed)
    set_style()
    info = provenance(device)
    print(
        f"bnlib {info['bnlib_version']} (source {info['bnlib_source']}, "
        f"git {info['git_revision']})\n"
        f"torch {info['torch_version']} | {info['device']} | {info['date']}"
    )
    return info
