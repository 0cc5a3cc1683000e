"""Launching chapters: Binder's environment, Colab's notebooks and install cell."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import jupytext
import pytest
import tomllib
import yaml

from bnlib.sphinx_ext import colab_notebook_url

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (REPO / "chapters").glob("*.md") if "jupytext:" in p.read_text()[:400])
# import name -> distribution name, where they differ
DISTRIBUTIONS = {"yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn"}


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[<>=!~\[ ;@]", line)[0].lower())
    return names


def _chapter_imports(path: Path) -> set[str]:
    notebook = jupytext.read(path)
    modules = set()
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(  # a magic (%pip) becomes `pass`, keeping the indentation
            line[: len(line) - len(line.lstrip())] + "pass"
            if line.lstrip().startswith(("%", "!"))
            else line
            for line in cell.source.splitlines()
        )
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules.add(node.module.split(".")[0])
    return modules


def test_there_are_chapters():
    assert CHAPTERS


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_binder_environment_names_every_package_a_chapter_imports(chapter):
    listed = _requirement_names(REPO / "binder" / "requirements.txt")
    for module in _chapter_imports(chapter) - set(sys.stdlib_module_names) - {"bnlib"}:
        assert DISTRIBUTIONS.get(module, module).lower() in listed, module


def test_binder_installs_bnlib_and_its_dependencies():
    listed = _requirement_names(REPO / "binder" / "requirements.txt")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        assert re.split(r"[<>=!~\[ ;]", requirement)[0].lower() in listed, requirement
    assert "jupytext" in listed  # MyST chapters open as notebooks
    assert (
        "pip install --no-deps --no-build-isolation -e ."
        in (REPO / "binder" / "postBuild").read_text()
    )
    assert "download.pytorch.org/whl/cpu" in (REPO / "binder" / "requirements.txt").read_text()


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_colab_notebook_exists_and_matches_the_chapter(chapter):
    notebook = REPO / "notebooks" / f"{chapter.stem}.ipynb"
    assert notebook.exists(), "run `make notebooks`"
    ours = [(c.cell_type, c.source) for c in jupytext.read(chapter).cells]
    theirs = [(c.cell_type, c.source) for c in jupytext.read(notebook).cells]
    assert ours == theirs, "notebooks/ is out of date: run `make notebooks`"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_first_cell_installs_bnlib_in_colab_only(chapter):
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    first = next(c for c in jupytext.read(chapter).cells if c.cell_type == "code")
    assert 'if "google.colab" in sys.modules:' in first.source
    url, branch = config["repository"]["url"], config["repository"]["branch"]
    # the repository itself, not only the package: the chapter reads the committed results
    assert (
        f"git clone --quiet --depth 1 --branch {branch} {url} /content/bn-textbook" in first.source
    )
    assert "%pip install --quiet /content/bn-textbook" in first.source
    assert 'os.environ["BNLIB_RESULTS"] = "/content/bn-textbook/results"' in first.source
    assert "remove-cell" in first.metadata.get("tags", [])


def test_colab_url_points_to_the_notebook(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "ch.ipynb").write_text("{}")
    base = "https://colab.research.google.com/github/o/r/blob/main"
    assert colab_notebook_url(f"{base}/chapters/ch.md", tmp_path) == f"{base}/notebooks/ch.ipynb"
    assert colab_notebook_url(f"{base}/chapters/other.md", tmp_path) == f"{base}/chapters/other.md"


PAGES = sorted((REPO / "pages").glob("*.md"))
#: The kernelspec JupyterLab writes into a notebook once its kernel has started.
LAB_KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def test_the_plain_pages_are_not_notebooks():
    assert PAGES and not any("jupytext:" in p.read_text()[:400] for p in PAGES)


@pytest.mark.parametrize("page", CHAPTERS + PAGES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_opening_and_saving_a_page_in_jupyterlab_leaves_it_unchanged(page, tmp_path):
    """JupyterLab opens every Markdown page (a chapter or a plain page) as a notebook
    through jupytext's contents manager, with the repository's jupytext.toml files, and
    sets the kernelspec once the kernel starts; saving must write back the same bytes."""
    from jupyter_server.services.contents.largefilemanager import LargeFileManager
    from jupytext.sync_contentsmanager import build_sync_jupytext_contents_manager_class

    for config in [REPO / "jupytext.toml", *REPO.glob("*/jupytext.toml")]:
        copy = tmp_path / config.relative_to(REPO)
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(config.read_bytes())
    path = page.relative_to(REPO).as_posix()
    copy = tmp_path / path
    copy.parent.mkdir(exist_ok=True)
    copy.write_bytes(page.read_bytes())
    manager = build_sync_jupytext_contents_manager_class(LargeFileManager)(root_dir=str(tmp_path))
    model = manager.get(path, content=True, type="notebook")
    assert model["content"]["cells"]
    model["content"]["metadata"]["kernelspec"] = dict(LAB_KERNELSPEC)
    manager.save(model, path)
    assert copy.read_bytes() == page.read_bytes(), (
        f"saving {path} from JupyterLab rewrites it: canonicalize it with jupytext "
        "(captions on one line) or adjust the jupytext.toml that applies to it"
    )
