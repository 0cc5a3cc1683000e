"""bnlib.provenance: what produced a result."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

import bnlib
from bnlib.provenance import (
    PACKAGE_DIR,
    computation_hash,
    computation_modules,
    git_revision,
    provenance,
    reached_definitions,
)
from bnlib.results import cache_key

MODULE = "bnlib.experiments.covariate_shift"


def test_provenance_fields():
    info = provenance("cpu")
    assert set(info) == {
        "bnlib_version",
        "bnlib_source",
        "git_revision",
        "torch_version",
        "cuda_version",
        "python",
        "device",
        "date",
    }
    assert info["bnlib_version"] == bnlib.__version__
    assert re.fullmatch(r"[0-9a-f]{16}", info["bnlib_source"])
    assert info["device"].startswith("cpu")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["date"])


def test_git_revision_outside_a_checkout(tmp_path):
    assert git_revision(tmp_path) == "unknown"


def test_setup_notebook_prints_provenance(capsys):
    info = bnlib.setup_notebook(seed=0, device="cpu")
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"bnlib {bnlib.__version__} (source {info['bnlib_source']}, git ")
    assert info["torch_version"] in out and info["date"] in out


def test_computation_modules_follow_imports_and_leave_out_presentation():
    modules = computation_modules(MODULE)
    for needed in ("bnlib.engine", "bnlib.norm", "bnlib.models", "bnlib.data", "bnlib.probes"):
        assert needed in modules
    for presentation in ("bnlib.figures", "bnlib.widgets", "bnlib.cli", "bnlib.bench"):
        assert not any(m == presentation or m.startswith(presentation + ".") for m in modules)
    assert "bnlib.experiments.algorithm" not in modules  # not imported by this chapter's module


@pytest.fixture
def package(tmp_path) -> Path:
    """A copy of bnlib's source to edit."""
    copy = tmp_path / "bnlib"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _key(package: Path) -> str:
    return cache_key("ics_over_training", {"mlp_steps": 10}, computation_hash(MODULE, package))


def test_a_figure_widget_cli_or_comment_edit_keeps_the_cached_result(package):
    before = _key(package)
    _edit(package / "figures" / "style.py", "def ", "def _added_helper():\n    return 1\n\n\ndef ")
    widget = package / "widgets" / "base.py"
    widget.write_text(widget.read_text() + "\nCHANGED = 1\n")
    _edit(package / "cli.py", "def main(", "def _extra():\n    pass\n\n\ndef main(")
    engine = package / "engine.py"
    engine.write_text("# a new comment\n" + engine.read_text().replace('"""', '"""Edited. ', 1))
    assert _key(package) == before


def test_an_edit_to_the_engines_update_rule_recomputes(package):
    before = _key(package)
    optim = package / "optim.py"
    text = optim.read_text()
    assert "add_(" in text
    optim.write_text(text.replace("add_(", "sub_(", 1))  # a different update
    assert _key(package) != before
    assert computation_hash("bnlib.experiments.algorithm", package) != computation_hash(
        "bnlib.experiments.algorithm", PACKAGE_DIR
    )


def test_an_edit_to_another_chapters_experiments_keeps_this_ones(package):
    before = _key(package)
    _edit(package / "experiments" / "algorithm.py", "def ", "def _new():\n    return 2\n\n\ndef ")
    assert _key(package) == before


def test_an_edit_to_a_registered_profile_keeps_the_code_hash(package):
    before = computation_hash(MODULE, package)
    _edit(
        package / "experiments" / "covariate_shift.py",
        'smoke={"mlp_steps": 10',
        'smoke={"mlp_steps": 11',
    )
    assert computation_hash(MODULE, package) == before  # the config is part of the key itself


LR = "bnlib.experiments.learning_rate"
INIT = "bnlib.experiments.initialization"


def _experiment_hashes(package: Path) -> dict[str, str]:
    return {
        name: computation_hash(module, package, function=name)
        for module, name in [
            (LR, "lr_sweep"),
            ("bnlib.experiments.gradient_noise", "gradient_noise"),
            ("bnlib.experiments.gradient_noise", "lr_batch_sweep"),
            (INIT, "skipinit_sweep"),
            (INIT, "gaussian_products"),
        ]
    }


def test_an_edit_to_a_helper_changes_only_the_experiments_that_reach_it(package):
    before = _experiment_hashes(package)
    # lr_sweep's learning-rate drop; gradient_noise and skipinit_sweep import other
    # names from the same module, and lr_batch_sweep calls lr_sweep
    _edit(
        package / "experiments" / "learning_rate.py",
        "optimizer.lr.mul_(factor)",
        "optimizer.lr.mul_(factor * 1)",
    )
    after = _experiment_hashes(package)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"lr_sweep", "lr_batch_sweep"}


def test_an_edit_two_modules_away_reaches_the_experiment(package):
    before = _experiment_hashes(package)
    _edit(package / "optim.py", "add_(", "sub_(")  # the update rule, through the engine
    after = _experiment_hashes(package)
    assert after["lr_sweep"] != before["lr_sweep"]
    assert after["gaussian_products"] == before["gaussian_products"]  # trains nothing


def test_a_module_used_bare_counts_whole(package):
    (package / "helper_module.py").write_text(
        "def used():\n    return 1\n\n\ndef other():\n    return 2\n"
    )
    (package / "experiments" / "probe_module.py").write_text(
        "from bnlib import helper_module\n\n\n"
        "def by_attribute():\n    return helper_module.used()\n\n\n"
        "def bare():\n    return helper_module\n"
    )
    module = "bnlib.experiments.probe_module"
    attribute = computation_hash(module, package, function="by_attribute")
    bare = computation_hash(module, package, function="bare")
    _edit(package / "helper_module.py", "return 2", "return 3")
    assert computation_hash(module, package, function="by_attribute") == attribute
    assert computation_hash(module, package, function="bare") != bare


def test_reached_definitions_follow_imports_and_skip_presentation():
    reached = reached_definitions(LR, "lr_sweep")
    assert "bnlib.engine:StackedRun" in reached and "bnlib.probes:test_accuracy" in reached
    assert f"{LR}:_scale_learning_rates" in reached
    assert f"{LR}:final_rows" not in reached  # defined beside it, not used by it
    assert not any(label.startswith(("bnlib.figures", "bnlib.progress")) for label in reached)
    assert all("@register" not in code for code in reached.values())


def test_reached_definitions_name_a_missing_function():
    with pytest.raises(ValueError, match="defines no 'no_such_experiment'"):
        reached_definitions(LR, "no_such_experiment")
    with pytest.raises(ValueError, match="no module"):
        reached_definitions("bnlib.no_such_module", "f")


def test_a_definition_inside_an_if_block_is_followed(package):
    (package / "experiments" / "probe_module.py").write_text(
        "import math\n\nif math.pi > 3:\n\n    def helper():\n        return 1\n\n\n"
        "def uses():\n    return helper()\n"
    )
    module = "bnlib.experiments.probe_module"
    before = computation_hash(module, package, function="uses")
    _edit(package / "experiments" / "probe_module.py", "return 1", "return 2")
    assert computation_hash(module, package, function="uses") != before


def test_an_error_message_edit_keeps_the_hash(package):
    before = _experiment_hashes(package)
    _edit(package / "data.py", "unknown dataset {name!r}", "no dataset called {name!r}")
    assert _experiment_hashes(package) == before
    _edit(package / "data.py", "if key not in DATASETS:", "if key not in DATASETS and key:")
    assert _experiment_hashes(package)["lr_sweep"] != before["lr_sweep"]  # the condition counts


def test_provenance_imports_no_figure_code():
    import ast

    from bnlib.provenance import PACKAGE_DIR

    tree = ast.parse((PACKAGE_DIR / "provenance.py").read_text())
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert not [m for m in imported if m.startswith(("bnlib.figures", "bnlib.widgets"))]


def test_a_bare_guard_call_is_left_out_of_the_hash(package):
    """A bare call to a ``bnlib.arguments.check_*`` guard only raises or does nothing, so
    adding one keeps every committed result current; a guard whose value is used, or any
    statement that computes, changes the hash."""
    source = package / "experiments" / "guarded.py"
    module = "bnlib.experiments.guarded"

    def hash_with(statement: str) -> str:
        source.write_text(
            "from bnlib import arguments\n"
            "from bnlib.arguments import check_nonempty as nonempty\n\n\n"
            f"def run(lr, xs):\n{statement}    return lr * len(xs)\n"
        )
        return computation_hash(module, package, function="run")

    before = hash_with("")
    assert (
        hash_with('    arguments.check_number(lr, "lr", above=0)\n    nonempty(xs, "xs")\n')
        == before
    )
    assert hash_with("    lr = abs(lr)\n") != before
    assert hash_with('    lr = arguments.check_number(lr, "lr") or lr\n') != before
    assert hash_with('    arguments.other(lr, "lr")\n') != before  # not a check_* guard


#: Private names one bnlib module still reads from another, with why they stay: renaming a
#: definition that committed results reach changes their code hash (hours of revalidation).
PRIVATE_IMPORTS_KEPT = {("bnlib.cifar", "bnlib.data", "_download_allowed")}


def test_no_private_name_is_used_across_modules():
    """Issue 29: a module's private names are its own; what another module needs is public
    (documented, in ``__all__``)."""
    found = set()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        module = ".".join(("bnlib", *path.relative_to(PACKAGE_DIR).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        aliases = {
            alias.asname or alias.name: f"{node.module}.{alias.name}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bnlib")
            for alias in node.names
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bnlib"):
                found |= {
                    (module, node.module, a.name)
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                }
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
            ):
                found.add((module, aliases[node.value.id], node.attr))
    assert found - PRIVATE_IMPORTS_KEPT == set()


@pytest.mark.parametrize(
    ("body", "without_guard"),
    [
        ('    arguments.check_number((y := lr * 2), "lr")\n    lr = y\n', "    lr = y\n"),
        ('    arguments.check_number(abs(lr), "lr")\n', ""),
        (
            '    try:\n        arguments.check_number(lr, "lr")\n    except ValueError:\n'
            "        lr = 0.1\n",
            "    try:\n        pass\n    except ValueError:\n        lr = 0.1\n",
        ),
        (
            "    def inner(arguments):\n        arguments.check_x(lr)\n    inner(xs)\n",
            "    def inner(arguments):\n        pass\n    inner(xs)\n",
        ),
    ],
    ids=["walrus", "call", "try", "shadowed"],
)
def test_a_guard_that_could_do_something_stays_in_the_hash(package, body, without_guard):
    """Only plain guards leave the hash: a guard whose arguments compute, one inside a
    ``try`` that may catch its error, or a name a function rebinds, all stay in."""
    source = package / "experiments" / "guarded.py"
    module = "bnlib.experiments.guarded"

    def hash_with(statement: str) -> str:
        source.write_text(
            f"from bnlib import arguments\n\n\ndef run(lr, xs):\n{statement}    return lr\n"
        )
        return computation_hash(module, package, function="run")

    assert hash_with(body) != hash_with(without_guard)
