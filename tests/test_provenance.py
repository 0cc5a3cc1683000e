"""bnlib.provenance: what produced a result."""

from __future__ import annotations

import re

import bnlib
from bnlib.provenance import git_revision, provenance


def test_provenance_fields():
    info = provenance("cpu")
    assert set(info) == {
        "bnlib_version",
        "bnlib_source",
        "git_revision",
        "torch_version",
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
