"""bnlib.book: chapters' data through the registry: the committed full results by default,
recomputed at a smaller profile on request.

Uses ``sigmoid_saturation`` (NumPy, milliseconds) and ``transform_stages`` (one batch of
real MNIST) as real experiments, with the results folder in a temporary directory.
"""

from __future__ import annotations

import json
import re

import pytest

from bnlib import book, experiments
from bnlib.claims import NOT_CHECKED, ClaimFailed, claim, parse_rendered


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLIB_RESULTS", str(tmp_path))
    monkeypatch.delenv("BNLIB_PROFILE", raising=False)
    return tmp_path


def _shifts(frame):
    return sorted(frame["shift"].unique())


@pytest.fixture
def quick(monkeypatch):
    """A reader rebuilding the book at the quick profile (BNLIB_PROFILE=quick make book)."""
    monkeypatch.setenv("BNLIB_PROFILE", "quick")


def test_the_book_reads_the_full_profile_unless_told_otherwise(results, monkeypatch):
    assert book.profile() == "full"
    monkeypatch.setenv("BNLIB_PROFILE", "quick")
    quick = book.result("sigmoid_saturation")
    assert quick.meta["profile"] == "quick"
    assert quick.meta["config"] == experiments.get("sigmoid_saturation").profiles["quick"]
    monkeypatch.setenv("BNLIB_PROFILE", "smoke")
    smoke = book.result("sigmoid_saturation")
    assert smoke.meta["profile"] == "smoke"
    assert len(smoke.frame) < len(quick.frame)  # fewer points


def test_the_full_profile_is_never_computed_by_the_book(results):
    with pytest.raises(ValueError, match=r"python -m bnlib run sigmoid_saturation --profile full"):
        book.result("sigmoid_saturation")
    assert not (results / "full").exists()


def test_a_rerun_at_a_smaller_profile_says_so(results, quick):
    text = repr(book.provenance_note("sigmoid_saturation"))
    assert text.startswith("Data: sigmoid_saturation, recomputed here at the quick profile")
    assert "python -m bnlib run sigmoid_saturation --profile full" in text
    experiments.run("sigmoid_saturation", "full")
    text = repr(book.provenance_note("sigmoid_saturation"))
    assert "the book's pages show the committed paper-scale result" in text


def test_a_committed_full_result_is_what_the_book_shows_with_its_provenance(results, capsys):
    computed = experiments.run("sigmoid_saturation", "full")
    stored = book.full_result("sigmoid_saturation")
    assert stored is not None and stored.current
    assert book.result("sigmoid_saturation").path == computed.path
    full_shifts = experiments.get("sigmoid_saturation").profiles["full"]["shifts"]
    assert _shifts(stored.frame) == sorted(full_shifts)
    note = book.provenance_note("sigmoid_saturation")
    text = repr(note)
    assert text.startswith(f"Data: sigmoid_saturation, {len(full_shifts)} ")
    assert "computed on cpu" in text and " with torch " in text and "older version" not in text
    assert re.search(r"on \d{4}-\d\d-\d\d in .*, git ", text)
    assert "bnlib-provenance-current" in note._repr_html_()
    assert book.provenance("sigmoid_saturation") is None
    assert capsys.readouterr().out.strip() == text  # displayed (as text outside a kernel)


def test_a_full_result_from_older_code_is_marked_stale(results):
    from toy_experiments import as_if_computed_by_older_code

    as_if_computed_by_older_code(experiments.run("sigmoid_saturation", "full").path)
    stored = book.full_result("sigmoid_saturation")
    assert stored is not None and not stored.current
    text = repr(book.provenance_note("sigmoid_saturation"))
    assert "older version" in text and "feedfacefeedface" in text
    # a new full run replaces it: one committed result per experiment
    fresh = experiments.run("sigmoid_saturation", "full", force=True)
    assert sorted(p.name for p in fresh.path.parent.iterdir()) == sorted(
        [fresh.path.name, fresh.path.with_suffix(".json").name]
    )
    assert book.full_result("sigmoid_saturation").current


def _claims_about_shifts(frame):
    largest = max(_shifts(frame))
    return [
        claim("The largest shift is at least 6", largest >= 6, book=largest),
        claim("The quick profile has four shifts", len(_shifts(frame)) == 4, book=4, only="quick"),
    ]


def test_at_the_book_s_profile_claims_rest_on_the_committed_data_alone(results):
    def largest_shift(frame):
        largest = max(_shifts(frame))
        return [claim("The largest shift is at least 6", largest >= 6, book=largest)]

    experiments.run("sigmoid_saturation", "full")
    (shown,) = book.check(largest_shift, "sigmoid_saturation")
    assert (shown.profile, shown.book, shown.full_status) == ("full", "6", "")
    assert "book: 6" in shown._repr_html_() and "profile):" not in shown._repr_html_()


def test_check_carries_the_full_number_beside_the_quick_one(results, quick):
    quick_only = book.check(_claims_about_shifts, "sigmoid_saturation")
    assert [c.full_status for c in quick_only] == ["", ""]
    experiments.run("sigmoid_saturation", "full")
    both = book.check(_claims_about_shifts, "sigmoid_saturation")
    first, second = both
    assert first.full_status == "holds" and first.full == "6"
    assert second.full_status == ""  # a claim about the quick profile only
    record = parse_rendered(both._repr_html_())[0]
    assert record["full"] == "6" and record["full_status"] == "holds"
    assert "full profile: 6" in both._repr_html_()


def test_a_claim_that_fails_on_the_full_result_fails_the_build(results, monkeypatch):
    experiments.run("sigmoid_saturation", "full")

    def at_most_four_shifts(frame):
        n = len(_shifts(frame))
        return [claim("There are at most four shifts", n <= 4, book=n)]

    with pytest.raises(ClaimFailed, match="do not support this claim"):
        book.check(at_most_four_shifts, "sigmoid_saturation")
    monkeypatch.setenv("BNLIB_PROFILE", "quick")  # four shifts hold at the quick profile
    with pytest.raises(ClaimFailed, match="at the full profile"):
        book.check(at_most_four_shifts, "sigmoid_saturation")


def test_smoke_profile_computes_claims_without_enforcing_them(results, monkeypatch):
    monkeypatch.setenv("BNLIB_PROFILE", "smoke")

    def wrong(frame):
        return [claim("No shift at all", frame.empty, book=len(frame))]

    shown = book.check(wrong, "sigmoid_saturation")
    assert shown[0].status == "does not hold"

    def crashes(frame):
        raise KeyError("a quantity a smoke run is too short to have")

    assert "smoke profile" in repr(book.check(crashes, "sigmoid_saturation")[0])


def test_a_claim_about_the_full_profile_only_is_not_checked_on_quick_data(results, quick):
    shown = claim("Fifty thousand steps", False, book=0, only="full")
    assert shown.status == NOT_CHECKED


def test_describe_config_names_the_scale():
    assert book.describe_config({"steps": 50_000, "seeds": [0, 1, 2, 3, 4]}) == (
        "50,000 steps, 5 seeds"
    )
    assert "10,000 deep linear steps" in book.describe_config(
        {"mlp_steps": 10_000, "linear_steps": 10_000}
    )
    assert book.describe_config({"seeds": [0], "momenta": [0.1]}) == "1 seed, 1 momentum"
    assert book.describe_config({"steps": 600, "blocks": 32}) == "600 steps, 32 residual blocks"


def test_check_takes_several_experiments_and_their_full_results_together(results, quick):
    def shifts_against_stages(saturation, stages):
        n = len(_shifts(saturation))
        return [claim("Both frames arrive, in order", n >= 4 and "shift" not in stages, book=n)]

    names = ["sigmoid_saturation", "transform_stages"]
    only_quick = book.check(shifts_against_stages, names)
    assert only_quick[0].status == "holds" and only_quick[0].full_status == ""
    experiments.run("sigmoid_saturation", "full")  # one full result is not enough
    assert book.check(shifts_against_stages, names)[0].full_status == ""
    experiments.run("transform_stages", "full")
    both = book.check(shifts_against_stages, names)
    assert both[0].full_status == "holds" and both[0].full == "6"


def _edit_rows(result, keep):
    result.frame.iloc[:keep].to_parquet(result.path, index=False)


def _drop_a_column(result):
    result.frame.drop(columns=result.frame.columns[-1]).to_parquet(result.path, index=False)


def _edit_config(result):
    meta_path = result.path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["config"]["points"] = 10
    meta_path.write_text(json.dumps(meta))


def _edit_data_without_its_checksum(result):
    """Change the data and delete the checksum that would have shown it."""
    frame = result.frame.copy()
    frame[frame.columns[-1]] = 999
    frame.to_parquet(result.path)
    meta_path = result.path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    del meta["data_sha256"]
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda r: _edit_rows(r, 0), "rows"),
        (lambda r: _edit_rows(r, 5), "rows"),
        (_drop_a_column, "checksum differs"),
        (_edit_config, "the JSON was edited"),
        (lambda r: r.path.with_suffix(".json").write_text("[1, 2]"), "not an object"),
        (lambda r: (r.path.parent / "notes.json").write_text("{}"), "cannot be read"),
        (_edit_data_without_its_checksum, "records no data_sha256"),
    ],
)
def test_an_edited_committed_full_result_is_never_served(results, edit, problem):
    from bnlib.status import format_status, status

    edit(experiments.run("sigmoid_saturation", "full"))
    with pytest.raises(ValueError, match=problem):
        book.full_result("sigmoid_saturation")
    table = status()  # the other experiments are still listed
    row = table.set_index("experiment").loc["sigmoid_saturation"]
    assert row["full"].startswith("unusable") and len(table) == len(experiments.REGISTRY)
    assert "git checkout" in format_status(table)


@pytest.mark.parametrize("text", ["[1, 2]", '{"experiment": "sigmoid_saturation"}'])
def test_an_unusable_cached_result_counts_as_absent_in_status(results, text):
    from bnlib.status import status

    cached = experiments.run("sigmoid_saturation", "quick")
    cached.path.with_suffix(".json").write_text(text)
    with pytest.warns(UserWarning, match="computing it again"):
        table = status()
    assert table.set_index("experiment").loc["sigmoid_saturation", "quick"] == "-"


def test_a_committed_result_is_read_once_and_each_caller_gets_its_own_copy(results, monkeypatch):
    """A chapter asks for a result's frame, its provenance line and its claims: the files
    are read once while unchanged, and an edit to one caller's frame reaches no other."""
    experiments.run("sigmoid_saturation", "full")  # a committed result, in tmp_path
    reads = []
    read = book._read_stored
    monkeypatch.setattr(book, "_read_stored", lambda folder: reads.append(folder) or read(folder))
    first = book.result("sigmoid_saturation")
    first.frame.loc[:, "density"] = -1.0
    first.meta["config"]["std"] = 99
    second = book.result("sigmoid_saturation")
    book.provenance_note("sigmoid_saturation")
    assert len(reads) == 1
    assert (second.frame["density"] >= 0).all() and second.meta["config"].get("std") != 99
    meta_path = next((results / "full" / "sigmoid_saturation").glob("*.json"))
    meta_path.write_text(meta_path.read_text() + " ")  # the files changed: read again
    book.result("sigmoid_saturation")
    assert len(reads) == 2


@pytest.mark.parametrize("spread", [None, 2.0])
def test_the_label_of_a_reproduced_result_says_how_it_was_compared(results, spread):
    computed = experiments.run("sigmoid_saturation", "full")
    meta_path = computed.path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    record = {
        "code_hash": meta["code_hash"],
        "git_revision": "0123456789ab",
        "date": "2026-12-08T00:00:00Z",
        "rows_compared": 1200,
        "max_abs_deviation": 1.24,
        "seed_spread": spread,
    }
    meta_path.write_text(json.dumps({**meta, "validations": [record]}))
    text = repr(book.provenance_note("sigmoid_saturation"))
    assert "reproduced by the current code at git 0123456789ab on 2026-12-08" in text
    assert "1,200 rows recomputed" in text and "largest" in text and "1.2" in text
    assert ("within 2 times the seeds' spread" in text) == (spread is not None)
