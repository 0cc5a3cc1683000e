"""Binder's environment, proved: binder/requirements.txt installed into a fresh virtual
environment (as Binder does, plus postBuild's editable install of bnlib) executes every
chapter. A chapter that imports something Binder lacks fails here, not on Binder.

The CPU-only wheel index that binder/requirements.txt names is left out (it cannot be
reached from the build machines). PyTorch and what it depends on are not installed a second
time: the new environment sees this environment's copies (a path file points at links to
them and to nothing else), which spares the several GB of CUDA wheels a second install would
write to disk. Everything else Binder installs, it installs from the file. Slow: it builds a
new environment with JupyterLab in it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (REPO / "chapters").glob("*.md") if "jupytext:" in p.read_text()[:400])


def _closure(*names: str) -> list[metadata.Distribution]:
    """The installed distributions ``names`` need to run: themselves and, recursively, the
    requirements their metadata declares for this platform (extras left out)."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in found:
            continue
        dist = metadata.distribution(name)
        found[key] = dist
        for line in dist.requires or ():
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(found.values())


def _link_torch(target: Path) -> Path:
    """A folder of links to this environment's torch, torchvision and their dependencies,
    each package's top-level files and its metadata; returns the folder."""
    target.mkdir()
    for dist in _closure("torch", "torchvision"):
        for file in dist.files or ():
            top = file.parts[0]
            source = Path(dist.locate_file(top))
            if top != ".." and source.exists() and not (target / top).exists():
                (target / top).symlink_to(source)
    return target


@pytest.fixture(scope="module")
def binder_python(tmp_path_factory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("binder")
    requirements = root / "requirements.txt"
    requirements.write_text(
        "".join(
            line + "\n"
            for line in (REPO / "binder" / "requirements.txt").read_text().splitlines()
            if not line.strip().startswith("--extra-index-url")
        )
    )
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "bnlib_torch.pth").write_text(f"{_link_torch(root / 'torch')}\n")

    def pip(*args: str) -> None:
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *args],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    pip("-r", str(requirements))
    pip("--no-deps", "--no-build-isolation", "-e", str(REPO))  # what binder/postBuild does
    yield python
    shutil.rmtree(root, ignore_errors=True)  # a JupyterLab environment: GBs on a small disk


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_in_binders_environment(binder_python, chapter, tmp_path, run_chapter):
    run_chapter(chapter, tmp_path, python=binder_python)
