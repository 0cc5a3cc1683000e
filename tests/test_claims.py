"""bnlib.claims: checked claims, their rendering, and the appendix table."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bnlib.claims import Claim, ClaimFailed, claim, claims, format_number, parse_rendered
from bnlib.sphinx_ext import claims_table_html


def test_a_claim_that_holds_renders_its_numbers_and_the_papers():
    c = claim(
        "BN's cosine is lower",
        np.float64(0.3) < 0.9,  # a NumPy boolean, as computed from a DataFrame
        book={"BN": 0.3, "no BN": 0.91234},
        paper="almost uncorrelated",
        cite="santurkar2018how",
    )
    assert c.status == "holds" and c.holds is True
    assert c.book == "BN 0.3, no BN 0.9123"
    text = repr(c)
    assert "BN's cosine is lower" in text and "Santurkar et al. 2018" in text
    page = c._repr_html_()
    assert 'class="bnlib-claim bnlib-claim-holds"' in page and "almost uncorrelated" in page
    assert parse_rendered(page) == [c.record()]


def test_a_claim_that_does_not_hold_fails_and_says_what_to_do():
    with pytest.raises(ClaimFailed, match="do not support this claim.*book: 0.5.*Change the text"):
        claim("accuracy above 0.9", 0.5 > 0.9, book=0.5)


def test_a_declared_disagreement_renders_as_such_and_fails_once_the_data_agree():
    c = claim("noise prevents training", False, book=0.87, paper="entirely", disagrees=True)
    assert c.status == "disagrees with the paper"
    assert "bnlib-claim-disagrees" in c._repr_html_()
    with pytest.raises(ClaimFailed, match="now agree"):
        claim("noise prevents training", True, book=0.1, disagrees=True)


def test_claims_of_one_cell_render_together_and_bad_input_is_refused():
    both = claims(claim("a", True, book=1), claim("b", True, book=2))
    assert [r["text"] for r in parse_rendered(both._repr_html_())] == ["a", "b"]
    with pytest.raises(TypeError, match="Claim objects"):
        claims("a sentence")
    with pytest.raises(TypeError, match="non-empty sentence"):
        claim("  ", True, book=1)


@pytest.mark.parametrize(
    "verdict", [float("nan"), np.nan, "False", "yes", 0.0001, 1, None, np.array([True, False])]
)
def test_a_verdict_that_is_not_a_boolean_is_refused(verdict):
    # bool() would call NaN, "False" and 0.0001 true: a claim would pass on them
    with pytest.raises(TypeError, match="must be a boolean"):
        claim("accuracy above 0.9", verdict, book=0.5)
    with pytest.raises(TypeError, match="must be a boolean"):
        claim("noise prevents training", False, book=0.5, disagrees=verdict)


def test_numpy_and_torch_booleans_are_verdicts():
    import torch

    assert claim("a", np.bool_(True), book=1).holds is True
    assert claim("b", torch.tensor(1.0) > 0, book=1).holds is True
    with pytest.raises(TypeError, match="must be a boolean"):
        claim("c", torch.tensor(float("nan")), book=1)
    with pytest.raises(ClaimFailed):
        claim("d", torch.tensor([False]), book=1)


def test_html_special_characters_survive_the_round_trip():
    c = claim('cos < 0 & "quoted"', True, book={"a<b": 1e-15})
    (record,) = parse_rendered(c._repr_html_())
    assert record["text"] == 'cos < 0 & "quoted"' and record["book"] == "a<b 1e-15"


def test_numbers_are_printed_with_four_significant_digits():
    assert format_number(0.945123) == "0.9451"
    assert format_number(12345678.0) == "1.23e+07"
    assert format_number(3) == "3" and format_number(20000) == "20,000"
    assert format_number(float("nan")) == "nan" and format_number(True) == "True"


def test_the_appendix_table_links_each_claim_with_one_number_at_the_book_s_profile():
    first = Claim("a claim", True, "0.5", paper="0.6", cite="ioffe2015batch", id="claim-x")
    second = Claim("another", True, "0.7", status="holds", id="claim-y")
    where = {"docname": "chapters/a", "chapter": "A", "section": "S", "section_id": "s"}
    rows = [{**first.record(), **where}, {**second.record(), **where}]
    table = claims_table_html(rows, lambda doc, anchor: f"{doc}.html#{anchor}")
    assert table.count("<tr class=") == 2
    assert 'href="chapters/a.html#claim-x"' in table and 'href="chapters/a.html#s"' in table
    assert "0.6 (Ioffe &amp; Szegedy 2015)" in table
    assert "<th>book</th>" in table and "profile" not in table
    assert "<td>0.5</td><td>holds</td>" in table


def test_the_appendix_of_a_smaller_rerun_shows_both_profiles():
    quick = Claim("a claim", True, "0.5", profile="quick", id="claim-x")
    where = {"docname": "chapters/a", "chapter": "A", "section": "S", "section_id": "s"}
    table = claims_table_html([{**quick.record(), **where}], lambda doc, a: f"{doc}.html#{a}")
    assert "<th>book, quick profile</th><th>book, full profile</th>" in table
    assert "not yet computed" in table  # the quick claim has no full-profile number


def test_the_appendix_shows_a_committed_full_number_beside_the_quick_one():
    from bnlib.claims import checking, with_full

    with checking("quick"):
        quick = [
            claim("x is positive", True, book=0.5),
            claim("short run", True, book=1, only="quick"),
        ]
    with checking("full", enforce=False):
        full = [
            claim("x is positive", True, book=0.25),
            claim("short run", False, book=9, only="quick"),
        ]
    joined = with_full(quick, full, "committed result")
    where = {"docname": "chapters/a", "chapter": "A", "section": "S", "section_id": "s"}
    table = claims_table_html(
        [{**c.record(), **where} for c in joined], lambda doc, anchor: f"{doc}.html#{anchor}"
    )
    assert "<td>0.5</td><td>0.25</td>" in table
    assert "(about the quick profile only)" in table
    with checking("full", enforce=False):
        failing = [claim("x is positive", False, book=-1.0), full[1]]
    with pytest.raises(ClaimFailed, match="at the full profile.*x is positive"):
        with_full(quick, failing)


def test_a_different_setup_is_not_a_disagreement():
    c = claim(
        "BN gains ten points",
        False,
        book=0.6,
        paper="ten points",
        differs="an 8-layer MLP that trains without BN, not ResNet-110",
    )
    assert c.status == "not comparable: the setup differs"
    page = c._repr_html_()
    assert "bnlib-claim-differs" in page and "8-layer MLP" in page and "disagrees" not in page
    with pytest.raises(ClaimFailed, match="declared as not comparable"):
        claim("BN gains ten points", True, book=10, differs="a smaller network")
    with pytest.raises(ValueError, match="not both"):
        claim("BN gains ten points", False, book=0.6, disagrees=True, differs="smaller")
    with pytest.raises(TypeError, match="say how the setup differs"):
        claim("BN gains ten points", False, book=0.6, differs=" ")
    from bnlib.sphinx_ext import claims_appendix_html

    where = {"docname": "chapters/a", "chapter": "A", "section": "S", "section_id": "s"}
    appendix = claims_appendix_html([{**c.record(), **where}], lambda d, a: f"{d}.html#{a}")
    assert "0 disagree with the paper, 1 are not comparable" in appendix
    assert 'id="claims-not-comparable-the-setup-differs"' in appendix


def test_the_appendix_groups_claims_by_status_with_counts():
    from bnlib.sphinx_ext import claims_appendix_html

    where = {"docname": "chapters/a", "chapter": "A", "section": "S", "section_id": "s"}
    made = [
        Claim("first", True, "1", id="claim-1"),
        Claim("second", False, "2", status="disagrees with the paper", id="claim-2"),
        Claim("third", True, "3", id="claim-3"),
        Claim("fourth", False, "", status="not checked for this profile", id="claim-4"),
    ]
    page = claims_appendix_html(
        [{**c.record(), **where} for c in made], lambda doc, anchor: f"{doc}.html#{anchor}"
    )
    assert "4 claims in 1 chapters: 2 hold, 1 disagree with the paper, 0 are not comparable" in page
    headings = re.findall(r"<h3 id=\"([a-z-]+)\">[^<]*\((\d)\)</h3>", page)
    assert headings == [
        ("claims-holds", "2"),
        ("claims-disagrees-with-the-paper", "1"),
        ("claims-not-checked-for-this-profile", "1"),
    ]
    holds = page.split("<h3")[1]
    assert holds.index("first") < holds.index("third") and "second" not in holds


def test_a_cell_s_claims_render_as_one_folded_evidence_block():
    shown = claims(
        claim("x is positive", True, book=0.5),
        claim("y is small", True, book=0.01),
        claim("BN gains ten points", False, book=0.5, disagrees=True),
    )
    rendered = shown._repr_html_()
    assert rendered.startswith('<details class="bnlib-evidence"><summary>')
    summary = rendered.split("<summary>", 1)[1].split("</summary>", 1)[0]
    assert summary == ("Evidence: 3 claims checked on the data; 2 hold, 1 disagrees with the paper")
    assert [c["text"] for c in parse_rendered(rendered)] == [c.text for c in shown]


def test_the_evidence_summary_names_unenforced_statuses():
    """A claim checked against the other profile's data that does not hold is not "not
    checked", and a block with unchecked claims does not say it was checked on the data."""
    import dataclasses

    from bnlib.claims import DOES_NOT_HOLD, NOT_CHECKED, evidence_summary

    base = claim("x is positive", True, book=0.5)
    shown = [base, dataclasses.replace(base, status=DOES_NOT_HOLD)]
    assert (
        evidence_summary(shown)
        == "Evidence: 2 claims checked on the data; 1 holds, 1 does not hold"
    )
    shown.append(dataclasses.replace(base, status=NOT_CHECKED))
    assert evidence_summary(shown) == "Evidence: 3 claims; 1 holds, 1 does not hold, 1 not checked"
