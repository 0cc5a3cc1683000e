"""Where a result came from: bnlib's version and source hash, git revision, device, date.

The book shows this next to every result. The source hash also drives the execution
cache: :mod:`bnlib.sphinx_ext` writes it into each chapter's first cell, so that a change
to bnlib's code re-executes the chapters even when their own cells did not change.
"""

from __future__ import annotations

import ast
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


#: Modules that present, store or describe results but never change what an experiment
#: computes: an edit to them must not invalidate a stored result.
NOT_COMPUTATION = (
    "bnlib",  # the package's __init__: re-exports only
    "bnlib.__main__",
    "bnlib.bench",
    "bnlib.book",
    "bnlib.claims",
    "bnlib.cli",
    "bnlib.experiments",  # the registry; the profiles' configs are part of a result's key
    "bnlib.figures",
    "bnlib.progress",  # progress bars and Stop: how a run is watched, not what it computes
    "bnlib.provenance",
    "bnlib.results",
    "bnlib.sphinx_ext",
    "bnlib.status",
    "bnlib.widgets",
)


def _module_path(module: str, root: Path) -> Path | None:
    """The source file of ``bnlib.x.y`` under ``root`` (bnlib's folder), if any."""
    parts = module.split(".")[1:]
    base = root.joinpath(*parts) if parts else root
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_presentation(module: str) -> bool:
    """Whether ``module`` is in :data:`NOT_COMPUTATION` (packages there with all they hold,
    except ``bnlib`` and ``bnlib.experiments``, whose submodules compute)."""
    if module in NOT_COMPUTATION:
        return True
    return any(
        module.startswith(name + ".")
        for name in NOT_COMPUTATION
        if name not in ("bnlib", "bnlib.experiments")
    )


def _bnlib_imports(tree: ast.AST, module: str, root: Path) -> set[str]:
    """The bnlib modules that ``tree`` (the source of ``module``) imports, anywhere in it."""
    found: set[str] = set()
    package = (
        module
        if (_module_path(module, root) or Path()).name == "__init__.py"
        else (module.rpartition(".")[0])
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from bnlib.x import y``: y may itself be a module
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] == "bnlib" and _module_path(n, root))
    return found


def _is_registration(decorator: ast.expr) -> bool:
    """``@register(...)``: the registry's profiles, which are part of a result's key anyway."""
    call = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(call, ast.Name | ast.Attribute) and (
        getattr(call, "id", None) == "register" or getattr(call, "attr", None) == "register"
    )


def _normalized_source(path: Path) -> str:
    """The module's code without comments, docstrings, formatting or ``@register(...)``
    decorators (``ast.unparse``)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            node.decorator_list = [d for d in node.decorator_list if not _is_registration(d)]
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def computation_modules(module: str, package_dir: str | os.PathLike | None = None) -> list[str]:
    """The bnlib modules whose code can change what ``module`` computes.

    ``module`` itself and, transitively, every bnlib module it imports (at the top or
    inside a function), leaving out :data:`NOT_COMPUTATION` (figures, widgets, the CLI,
    the results store...).

    Args:
        module: a dotted module name, e.g. ``"bnlib.experiments.covariate_shift"``.
        package_dir: bnlib's folder (default: this installation's).

    Returns:
        Sorted dotted names.
    """
    root = Path(package_dir) if package_dir is not None else PACKAGE_DIR
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_path(name, root)
        if path is None:
            raise ValueError(f"no bnlib module {name!r} under {root}")
        seen.add(name)
        if name == module or not _is_presentation(
            name
        ):  # what presentation imports is not followed
            todo.extend(_bnlib_imports(ast.parse(path.read_text()), name, root) - seen)
    return sorted(n for n in seen if n == module or not _is_presentation(n))


def computation_hash(
    module: str, package_dir: str | os.PathLike | None = None, length: int = 16
) -> str:
    """Hash of the code that computes ``module``'s results (see :func:`computation_modules`).

    Comments, docstrings and formatting do not count (each module is hashed as
    ``ast.unparse`` of its syntax tree without docstrings), so editing them keeps every
    stored result; editing a function of the engine, the models, the data loading... that
    an experiment uses changes the hash.

    Returns:
        A hexadecimal SHA-256 prefix of ``length`` characters.
    """
    root = Path(package_dir) if package_dir is not None else PACKAGE_DIR
    digest = hashlib.sha256()
    for name in computation_modules(module, root):
        digest.update(name.encode() + b"\0")
        digest.update(_normalized_source(_module_path(name, root)).encode() + b"\0")
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
    return f"{dev.type} ({_cpu_model()}, {os.cpu_count()} cores)"


def _cpu_model() -> str:
    """The CPU's model name (Linux: ``/proc/cpuinfo``), else the platform's processor."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: str | None = None) -> dict[str, str]:
    """Metadata that identifies a run: what code, where, when.

    Returns:
        A dict with keys ``bnlib_version``, ``bnlib_source``, ``git_revision``,
        ``torch_version``, ``cuda_version`` (``""`` without CUDA), ``python``, ``device``
        and ``date`` (UTC, ISO 8601).
    """
    import torch

    return {
        "bnlib_version": __version__,
        "bnlib_source": source_hash(),
        "git_revision": git_revision(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "",
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
