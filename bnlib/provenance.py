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
from dataclasses import dataclass
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
    "bnlib.distributed",  # where an experiment's shards run (Ray), not what they compute
    "bnlib.experiments",  # the registry; the profiles' configs are part of a result's key
    "bnlib.figures",
    "bnlib.notebook",
    "bnlib.progress",  # progress bars and Stop: how a run is watched, not what it computes
    "bnlib.provenance",
    "bnlib.results",
    "bnlib.sphinx_ext",
    "bnlib.status",
    "bnlib.validation",
    "bnlib.widgets",
)


def _module_path(module: str, root: Path) -> Path | None:
    """The source file of ``bnlib.x.y`` under ``root`` (bnlib's folder), if any; for a
    module outside bnlib (an experiment registered by a user's or a test's module), the
    file Python imports it from."""
    if module.split(".")[0] != "bnlib":
        import importlib.util

        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return None
        origin = spec.origin if spec is not None else None
        return Path(origin) if origin and origin.endswith(".py") else None
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


#: The module of argument guards (:mod:`bnlib.arguments`): its ``check_*`` functions only
#: raise or return None, so a bare call to one is left out of the code hash.
ARGUMENT_GUARDS = "bnlib.arguments"


def _guard_names(tree: ast.AST) -> tuple[set[str], set[str]]:
    """The names ``tree`` binds to :data:`ARGUMENT_GUARDS` (``from bnlib import
    arguments``, ``import bnlib.arguments as a``) and to its ``check_*`` functions."""
    modules: set[str] = set()
    functions: set[str] = set()
    package, _, leaf = ARGUMENT_GUARDS.rpartition(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                if node.module == package and alias.name == leaf:
                    modules.add(alias.asname or alias.name)
                elif node.module == ARGUMENT_GUARDS and alias.name.startswith("check_"):
                    functions.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update(
                alias.asname
                for alias in node.names
                if alias.name == ARGUMENT_GUARDS and alias.asname
            )
    return modules, functions


#: What a guard's arguments may not contain: anything that could do something besides
#: reading a value (a call, an assignment expression, a generator's step).
_ACTIVE = (ast.Call, ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)
_TRY = (ast.Try, getattr(ast, "TryStar", ast.Try))  # try/except* from Python 3.11


def _bound_names(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    """The names ``function`` binds itself (parameters, assignments, loop and ``with``
    targets, imports): inside it, such a name is not the module's."""
    args = function.args
    names = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
    names |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _strip_guards(tree: ast.AST) -> None:
    """Remove, in place, every statement that is a bare call to an argument guard
    (``arguments.check_number(gain, "gain")``): it raises or does nothing, so it cannot
    change what a computation that completes computes. A block left empty becomes
    ``pass``.

    Only plain guards go: the module's own name for the guard (not one a function rebinds
    to something else), arguments that only read values (no call, no ``:=``), and not
    inside a ``try`` (where catching the guard's error could change what follows).
    Anything else stays in the hash, which errs on the safe side: a stale result."""
    modules, functions = _guard_names(tree)
    if not modules and not functions:
        return

    def is_guard(statement: ast.stmt, shadowed: set[str]) -> bool:
        if not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)):
            return False
        call = statement.value
        if isinstance(call.func, ast.Name):
            named = call.func.id in functions and call.func.id not in shadowed
        else:
            named = (
                isinstance(call.func, ast.Attribute)
                and call.func.attr.startswith("check_")
                and isinstance(call.func.value, ast.Name)
                and call.func.value.id in modules
                and call.func.value.id not in shadowed
            )
        passive = not any(
            isinstance(node, _ACTIVE)
            for argument in [*call.args, *(k.value for k in call.keywords)]
            for node in ast.walk(argument)
        )
        return named and passive

    def visit(node: ast.AST, shadowed: set[str], in_try: bool) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            shadowed = shadowed | _bound_names(node)
        if isinstance(node, _TRY):
            in_try = True
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if not in_try and isinstance(block, list) and block:
                kept = [s for s in block if not is_guard(s, shadowed)]
                if len(kept) < len(block):
                    setattr(node, field, kept or [ast.Pass()])
        for child in ast.iter_child_nodes(node):
            visit(child, shadowed, in_try)

    visit(tree, set(), False)


def _strip(tree: ast.AST) -> ast.AST:
    """``tree`` without docstrings, ``@register(...)`` decorators, argument guards
    (:func:`_strip_guards`) or the messages of ``raise`` and ``assert`` statements (edited
    in place): none of them changes a result (an error ends the computation whatever it
    says)."""
    _strip_guards(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            node.exc.args, node.exc.keywords = [], []
        if isinstance(node, ast.Assert):
            node.msg = None
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
    return tree


def _normalized_source(path: Path) -> str:
    """The module's code without comments, docstrings, formatting or ``@register(...)``
    decorators (``ast.unparse``)."""
    return ast.unparse(_strip(ast.parse(path.read_text())))


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
    module: str,
    package_dir: str | os.PathLike | None = None,
    length: int = 16,
    function: str | None = None,
) -> str:
    """Hash of the code that computes ``module``'s results, or one function's.

    Without ``function``: every module of :func:`computation_modules`, whole. With
    ``function`` (an experiment's name in ``module``): only the definitions it reaches
    (:func:`reached_definitions`), so that editing a helper one experiment uses keeps
    the results of the experiments that do not use it.

    Comments, docstrings, error messages and formatting do not count (code is hashed as
    ``ast.unparse`` of its syntax tree without them), so editing them keeps every stored
    result; editing a function of the engine, the models, the data loading... that an
    experiment uses changes the hash.

    Returns:
        A hexadecimal SHA-256 prefix of ``length`` characters.
    """
    root = Path(package_dir) if package_dir is not None else PACKAGE_DIR
    # the same code hashes the same: keyed by the text of every file it can reach (bnlib's
    # and the module's own, which may lie outside bnlib: a user's experiments)
    start = _module_path(module, root)
    key = (module, function, str(root), _tree_digest(root), _file_digest(start) if start else "")
    if key not in _HASHES:
        digest = hashlib.sha256()
        if function is None:
            for name in computation_modules(module, root):
                digest.update(name.encode() + b"\0")
                digest.update(_normalized_source(_module_path(name, root)).encode() + b"\0")
        else:
            for label, code in reached_definitions(module, function, root).items():
                digest.update(label.encode() + b"\0" + code.encode() + b"\0")
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key][:length]


#: Computation hashes already computed, by what they depend on (:func:`computation_hash`).
_HASHES: dict[tuple, str] = {}


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_digest(root: Path) -> str:
    """One digest of the text of every Python file under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@dataclass
class _ModuleIndex:
    """A module's top level: what each name is defined by, and what it imports."""

    definitions: dict[str, list[ast.stmt]]
    imports: dict[str, str]  # local name -> dotted target (a module, or module.name)
    rest: list[ast.stmt]  # statements that define no name (if/try blocks, calls...)


def _import_targets(node: ast.Import | ast.ImportFrom, module: str, root: Path) -> dict:
    """Local name -> dotted target of one import statement."""
    if isinstance(node, ast.Import):
        return {
            (alias.asname or alias.name.split(".")[0]): (
                alias.name if alias.asname else alias.name.split(".")[0]
            )
            for alias in node.names
        }
    base = node.module or ""
    if node.level:  # relative import
        is_package = (_module_path(module, root) or Path()).name == "__init__.py"
        package = module if is_package else module.rpartition(".")[0]
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    return {(alias.asname or alias.name): f"{base}.{alias.name}" for alias in node.names}


#: Parsed module indexes by (module, file, digest of its text): ``status`` hashes every
#: experiment's code (three times each), and parsing and stripping the same modules again
#: for each took most of its time. The text's digest keys it, so an edited file is parsed
#: anew.
_INDEXES: dict[tuple[str, str, str], _ModuleIndex] = {}


def _index(module: str, root: Path) -> _ModuleIndex:
    path = _module_path(module, root)
    text = path.read_text()
    key = (module, str(path), hashlib.sha256(text.encode()).hexdigest())
    if key not in _INDEXES:
        _INDEXES[key] = _parse_index(module, root, text)
    return _INDEXES[key]


def _parse_index(module: str, root: Path, text: str) -> _ModuleIndex:
    tree = _strip(ast.parse(text))
    index = _ModuleIndex({}, {}, [])
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            index.imports.update(_import_targets(node, module, root))
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names = [node.name]
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            # ``X = ...``, ``X: T = ...``, and writes into a global (``X[k] = ...``)
            names = [
                n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)
            ]
        else:
            names = []
        for name in names:
            index.definitions.setdefault(name, []).append(node)
        if not names:
            index.rest.append(node)
    return index


def _references(node: ast.AST) -> list[tuple[str, ...]]:
    """The names ``node`` uses, each with the attributes read from it: ``a.b.c`` gives
    ``("a", "b", "c")``, a bare ``a`` gives ``("a",)``."""
    chains = []
    inner = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Attribute) and id(child) not in inner:
            attrs = []
            base: ast.AST = child
            while isinstance(base, ast.Attribute):
                inner.add(id(base))
                attrs.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name):
                inner.add(id(base))
                chains.append((base.id, *reversed(attrs)))
    for child in ast.walk(node):
        if isinstance(child, ast.Name) and id(child) not in inner:
            chains.append((child.id,))
    return chains


def reached_definitions(
    module: str, function: str, package_dir: str | os.PathLike | None = None
) -> dict[str, str]:
    """The code ``function`` of ``module`` can run: every bnlib definition it reaches.

    Starting from ``function``, each name a definition uses is followed: to a top-level
    function, class or assignment of the same module, or through an import to one of
    another bnlib module (``probes.test_accuracy`` and ``from bnlib.data import Split``
    alike). A module used bare (passed around rather than read an attribute of) counts
    whole. Every module reached also contributes its top-level statements that define
    no name (``if``/``try`` blocks, calls). Modules in :data:`NOT_COMPUTATION` are not
    followed, and neither are names from outside bnlib.

    Returns:
        ``{"module:name": code}`` (and ``"module:"`` for each module's other statements),
        sorted; ``code`` is ``ast.unparse`` without docstrings or ``@register``.

    Raises:
        ValueError: ``module`` is not a bnlib module or does not define ``function``.
    """
    root = Path(package_dir) if package_dir is not None else PACKAGE_DIR
    if _module_path(module, root) is None:
        raise ValueError(f"no module {module!r} under {root} or on Python's path")
    indexes: dict[str, _ModuleIndex] = {}

    def index(name: str) -> _ModuleIndex:
        if name not in indexes:
            indexes[name] = _index(name, root)
        return indexes[name]

    if function not in index(module).definitions:
        raise ValueError(f"{module} defines no {function!r}")
    found: dict[str, str] = {}
    todo = [(module, function)]

    def follow(target: str, attrs: tuple[str, ...]) -> None:
        """Queue what the dotted ``target`` (read further by ``attrs``) names."""
        parts = [*target.split("."), *attrs]
        if parts[0] != "bnlib":
            return
        for cut in range(len(parts), 0, -1):  # the longest prefix that is a module
            name = ".".join(parts[:cut])
            if _module_path(name, root) is not None:
                break
        if _is_presentation(name):
            return
        if cut < len(parts):
            todo.append((name, parts[cut]))
        else:  # the module itself, used bare
            todo.extend((name, definition) for definition in index(name).definitions)
            todo.append((name, ""))

    while todo:
        where, name = todo.pop()
        label = f"{where}:{name}"
        if label in found:
            continue
        mod = index(where)
        if not name:
            found[label] = ast.unparse(ast.Module(body=mod.rest, type_ignores=[]))
            continue
        if name not in mod.definitions:
            found[label] = ""
            todo.append((where, ""))  # it may be defined there (in an ``if`` block, say)
            if name in mod.imports:  # a name this module re-exports
                follow(mod.imports[name], ())
            continue
        nodes = mod.definitions[name]
        found[label] = "\n".join(ast.unparse(node) for node in nodes)
        todo.append((where, ""))
        local_imports = {}
        for node in nodes:
            for child in ast.walk(node):
                if isinstance(child, ast.Import | ast.ImportFrom):
                    local_imports.update(_import_targets(child, where, root))
        for node in nodes:
            for first, *attrs in _references(node):
                if first in local_imports:
                    follow(local_imports[first], tuple(attrs))
                elif first in mod.definitions:
                    todo.append((where, first))
                elif first in mod.imports:
                    follow(mod.imports[first], tuple(attrs))
    return dict(sorted(found.items()))


def git_revision(cwd: str | os.PathLike | None = None) -> str:
    """The git revision of the checkout holding bnlib, with ``-dirty`` if it has changes.

    Changes count in tracked files outside ``results/`` (a result being written is not a
    change of the code that computes it) and in untracked files under ``bnlib/`` (a new
    module an experiment may import). Returns ``"unknown"`` outside a git checkout (an
    installed wheel, say).
    """
    cwd = Path(cwd) if cwd is not None else PACKAGE_DIR.parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        )
        return done.stdout.strip()

    try:
        rev = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results")
        new = git("status", "--porcelain", "--untracked-files=all", "--", "bnlib")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}-dirty" if dirty or new else rev


def clean_revision(cwd: str | os.PathLike | None = None) -> str | None:
    """The commit of a checkout without changes (:func:`git_revision`), else None.

    Outside a git checkout, ``"unknown"``: nothing there can be committed.
    """
    revision = git_revision(cwd)
    return None if revision.endswith("-dirty") else revision


def is_clean_commit(revision: object) -> bool:
    """Whether a recorded git revision names a commit without uncommitted changes."""
    return (
        isinstance(revision, str)
        and revision not in ("", "unknown")
        and not (revision.endswith("-dirty"))
    )


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
