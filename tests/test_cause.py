"""Causes from interventions (geomprobe.report.cause): each fires on a hand-made record; judge carries them."""

import pytest

from geomprobe.report import cause as C
from geomprobe.report.records import Measurement
from geomprobe.report.verdict import judge

BASE = dict(editor="memit-merge", editor_rule="covariance", case_id="c", label="Canada · capital", subject="Canada",
            relation="capital", form="instruction", success_after=0.0, decl_success_after=1.0)

CASES = [
    ("near-duplicate", dict(collision_cosine=0.95, collision_subject="Kanada", patched_success=1.0,
                            written_share=0.2)),
    ("declarative-failed", dict(decl_success_after=0.0, patched_success=1.0, written_share=0.2)),
    ("value-not-reached", dict(form="declarative", patched_success=0.0, written_share=0.9)),
    ("write-side", dict(patched_success=1.0, written_share=0.3, edited_patched_success=1.0)),
    ("magnitude", dict(patched_success=0.0, written_share=0.95, crossing_scale=2.0)),
    ("read-side", dict(patched_success=0.0, written_share=0.95, crossing_scale=None)),
    ("interference", dict(patched_success=1.0, written_share=0.95, edited_patched_success=0.0)),
    ("unexplained", dict(patched_success=None)),
]


@pytest.mark.parametrize("want,fields", CASES, ids=[c for c, _ in CASES])
def test_each_cause_fires_on_its_record(want, fields):
    m = {**BASE, **fields}
    assert C.cause(m) == want
    got = C.explain(m)
    assert got["cause"] == want and got["cause_text"] and "n/a" not in got["cause_text"].split(":")[0]
    assert (got["confirmed_by"] != "") == (want != "unexplained")
    assert got["cause_confirmed"] == (want != "unexplained")
    v = judge(Measurement(**m))  # the verdict carries the cause beside the paper's rules
    assert v.cause == want and v.cause_text == got["cause_text"] and not v.ok
    assert v.cause_confirmed == got["cause_confirmed"]


def test_the_edited_patch_decides_write_side_against_interference():
    """Delivering δ exactly in the edited model is the intervention; the written share only stands in without it."""
    m = {**BASE, "patched_success": 1.0, "written_share": 0.95}
    assert C.cause({**m, "edited_patched_success": 1.0}) == "write-side"  # rescued although 95% is written
    assert C.cause({**m, "written_share": 0.2, "edited_patched_success": 0.0}) == "interference"
    assert C.confirmed({**m, "edited_patched_success": 0.0}) is True
    assert C.cause(m) == "interference" and C.confirmed(m) is False  # no edited patch: the share stands in
    assert C.confirmed({**m, "success_after": 1.0}) is None


def test_no_cause_for_a_form_that_succeeds_or_was_not_measured():
    assert C.cause({**BASE, "success_after": 1.0, "patched_success": 0.0}) is None
    assert C.cause({**BASE, "success_after": None, "patched_success": 0.0}) is None
    assert C.cause({**BASE, "success_after": float("nan")}) is None
    v = judge(Measurement(**{**BASE, "success_after": 1.0}))
    assert v.ok and v.cause is None and v.cause_numbers == {}


def test_thresholds_are_named_and_move_the_boundary():
    m = {**BASE, "patched_success": 1.0, "written_share": 0.85}
    assert C.cause(m) == "interference"  # 0.85 >= WRITTEN_OK (0.8)
    assert C.cause(m, {"WRITTEN_OK": 0.9}) == "write-side"
    assert set(C.CAUSES) == set(C.SAYS) == set(C.REMEDY) == set(C.CONFIRMED_BY)
