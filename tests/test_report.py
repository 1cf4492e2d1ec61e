"""diagnose / compare: verdict rules on hand-made records, real toy cases, report files, bad input.

Toy cases (toy-llama).  The shipped toys' known subjects barely route their answers through the subject
token, so edits of them do not take; an *unknown* subject (a word outside the toy vocabulary, tokenised as
``<unk>``) has only a default guess, and edits of it do take.  With the preset (layers 0-1, 30 steps):

* succeeding case — ``rose-no-hki`` (isotropic update) on one request (Blorptang's occupation -> sailor):
  the target wins on the declarative, question and instruction forms;
* failing case — ``memit-merge`` jointly on two relations of the same subject (occupation -> sailor,
  favourite colour -> orange) with a tighter clamp (``value_clamp=0.6``, :data:`FAIL_SET`; 30 steps as
  preset): the joint value leaves the occupation target below P = 0.5, so its radius is ρ = 0 under the
  probability criterion, yet the edit wins on the declarative prompt (P(sailor) > P(pilot)) and fails on the
  instruction form with Δ > 0 (drift-exceeds-tolerance); the colour value does not reach its target at all
  (value-not-reached on the declarative form; relation conflict ≈ 0.55, below the conflict rule's 0.8).
  The window is narrow on the toy: clamp 0.55 loses the occupation edit, 0.7 gives it ρ > 0; with the
  preset clamp 0.75 (or the earlier colour target green) both values predict their targets (ρ ≈ 57).
  Its requests carry no case ids (they get ``r0``, ``r1`` in the JSON; people read ``Blorptang · occupation``).
"""

import json
import math
import re
import shlex

import pytest
import torch

import geomprobe as gp
from geomprobe.cli import build_parser, main
from geomprobe.editors.options import parse_overrides
from geomprobe.report import verdict as V
from geomprobe.report.records import Measurement, Run, Verdict
from geomprobe.report.render import summary_compare, summary_diagnose
from geomprobe.report.compare import REPORT_KEYS as COMPARE_KEYS, TABLE_FIELDS
from geomprobe.report.diagnose import REPORT_KEYS, SCHEMA

OCC = {"case_id": "b-occ", "subject": "Blorptang", "relation": "occupation", "prompt": "The occupation of {} is",
       "target_new": "sailor", "target_true": "pilot"}
COL = {"case_id": "b-col", "subject": "Blorptang", "relation": "favourite_colour",
       "prompt": "The favourite colour of {} is", "target_new": "orange", "target_true": "yellow"}
#: Editor options of the failing joint case (see the module docstring): a clamp below the preset's 0.75.
FAIL_SET = {"value_clamp": 0.6}
OCC_LABEL, COL_LABEL = "Blorptang · occupation", "Blorptang · favourite_colour"


def _no_id(req):
    return {k: v for k, v in req.items() if k != "case_id"}


# ---- the rules on hand-made measurement records --------------------------------------------------------------
def rec(**kw):
    base = {"editor": "memit", "editor_rule": "covariance", "case_id": "c1", "subject": "S", "relation": "r",
            "form": "instruction", "success_before": 0.0, "success_after": 0.0, "decl_success_after": 1.0,
            "rho": 2.6, "rho_rel": 0.3, "value_predicts": True, "delta": 1.0, "delta_covariance": 1.0,
            "delta_identity": 1.0, "amplification": 1.0, "key_cosine": 0.9, "conflict": None, "n_relations": 1,
            "collision_subject": None, "collision_cosine": None}
    base.update(kw)
    return base


@pytest.mark.parametrize("kw, expected", [
    (dict(success_after=1.0), ["ok"]),
    (dict(success_after=1.0, success_before=1.0), ["ok", "already-true"]),
    (dict(form="declarative", decl_success_after=0.0, value_predicts=False, rho=0.0), ["value-not-reached"]),
    (dict(form="declarative", decl_success_after=0.0, value_predicts=True), ["not-written"]),
    (dict(decl_success_after=0.0), ["decl-failed"]),
    (dict(delta=7.9), ["drift-exceeds-tolerance"]),
    (dict(delta=7.9, amplification=11.0, delta_covariance=7.9, delta_identity=0.7),
     ["drift-exceeds-tolerance", "covariance-amplifies"]),
    (dict(delta=7.9, amplification=11.0, editor_rule="identity"), ["drift-exceeds-tolerance"]),
    (dict(delta=1.0, conflict=0.9, rho_rel=0.05, n_relations=3), ["conflict-collapses-rho", "not-the-drift"]),
    (dict(delta=1.0, conflict=0.9, rho_rel=0.05, n_relations=1), ["not-the-drift"]),
    (dict(delta=1.0), ["not-the-drift"]),
    (dict(delta=1.0, collision_subject="iPhone 11", collision_cosine=0.95), ["not-the-drift", "near-duplicate"]),
    (dict(delta=None, rho=None), ["unexplained"]),
    # missing values are never failures: a rule whose input is missing does not fire
    (dict(decl_success_after=None), ["unexplained"]),
    (dict(form="declarative", decl_success_after=None, value_predicts=None), ["unexplained"]),
    (dict(success_after=None), ["not-evaluable"]),
])
def test_each_rule_fires_on_its_numbers(kw, expected):
    v = V.judge(rec(**kw))
    assert isinstance(v, Verdict) and list(v.rules) == expected
    assert v.ok == ("ok" in expected)
    assert v.status == ("ok" if v.ok else "not-evaluable" if expected == ["not-evaluable"] else "fails")
    assert tuple(v.to_dict()) == V.VERDICT_FIELDS
    assert v.verdict.startswith("succeeds" if v.ok else "not evaluated on the instruction form" if
                                v.status == "not-evaluable" else "fails on the instruction form" if
                                rec(**kw)["form"] == "instruction" else "fails on the declarative form")
    # the typed record and its JSON form give the same verdict
    assert V.judge(Measurement.from_dict(rec(**kw))) == v


#: Records on which each rule fires (from the table above), to blank their inputs one at a time.
_FIRING = [dict(success_after=1.0, success_before=1.0),
           dict(form="declarative", decl_success_after=0.0, value_predicts=False, rho=0.0),
           dict(form="declarative", decl_success_after=0.0, value_predicts=True), dict(decl_success_after=0.0),
           dict(delta=7.9, amplification=11.0, delta_covariance=7.9, delta_identity=0.7),
           dict(delta=1.0, conflict=0.9, rho_rel=0.05, n_relations=3),
           dict(delta=1.0, collision_subject="iPhone 11", collision_cosine=0.95)]


@pytest.mark.parametrize("kw", _FIRING)
def test_a_missing_value_never_makes_a_rule_fire_or_a_form_fail(kw):
    """Blanking any one measured field (None, as in the JSON, or NaN) fires no rule that did not fire with it:
    a missing value is never read as a failure; a missing success makes the record not evaluable."""
    base = rec(**kw)
    before = set(V.fired(base))
    for field in V.MEASUREMENT_FIELDS:
        if field == "form":  # which form a record is on is its identity, not a measurement
            continue
        for blank in (None, math.nan):
            if field not in base and blank is not None:
                continue
            m = {**base, field: blank}
            got = set(V.fired(m))
            if field == "success_after":
                assert got == {"not-evaluable"}, (field, got)
                v = V.judge(m)
                assert not v.ok and v.status == "not-evaluable" and "fails" not in v.verdict
                continue
            assert got <= before | {"unexplained"}, (field, blank, got - before)


def test_not_evaluated_forms_say_why_and_the_criterion_is_stated():
    v = V.judge(rec(success_after=None, not_evaluated="relation 'job' has no template pool", n_prompts=0))
    assert v.verdict == "not evaluated on the instruction form: relation 'job' has no template pool"
    assert v.rules == ("not-evaluable",) and v.remedies == () and v.remedy_commands == ()
    assert Verdict.from_dict(v.to_dict()) == v
    greedy = V.judge(rec(success_after=1.0, criterion="beats-greedy", true_target="Ottawa"))
    assert greedy.ok and "unedited model's own answer 'Ottawa'" in greedy.verdict and greedy.criterion == "beats-greedy"
    failing = V.judge(rec(form="declarative", decl_success_after=0.0, value_predicts=True, criterion="prob>0.5"))
    assert failing.verdict.startswith("fails on the declarative form (P(target) > 0.5 on 0% of its prompts")
    plain = V.judge(rec(success_after=1.0, criterion="beats-true"))
    assert plain.verdict == "succeeds on the instruction form (target wins on 100% of its prompts)"
    assert set(V.CRITERIA) == {"beats-true", "beats-greedy", "prob>0.5"}
    from geomprobe.evaluate import CRITERIA

    assert set(CRITERIA) == set(V.CRITERIA)


def test_the_issue_example_sentence_comes_from_the_numbers():
    m = rec(delta=7.9, rho=2.6, rho_rel=0.05, amplification=11.0, delta_covariance=7.9, delta_identity=1.4,
            conflict=0.88, n_relations=4)
    v = V.judge(m)
    assert list(v.rules) == ["drift-exceeds-tolerance", "covariance-amplifies", "conflict-collapses-rho"]
    s = v.verdict
    assert s.startswith("fails on the instruction form: Δ = 7.9 exceeds ρ = 2.6 (3.0×)")
    assert "amplifies the prompt drift 11×" in s and "would give Δ = 1.4" in s
    assert "four" not in s and "4 relations are near-orthogonal (conflict 0.88)" in s
    assert any("isotropic" in r for r in v.remedies) and any("HKI" in r for r in v.remedies)
    assert v.numbers["amplification"] == 11.0 and v.thresholds == V.THRESHOLDS
    # thresholds are parameters: raising the amplification threshold silences that rule
    assert "covariance-amplifies" not in V.judge(m, {"AMPLIFICATION": 20.0}).rules


RUN = Run(model="smollm2-135m", requests="my requests.json", editor="memit",
          overrides={"lam": 15000.0, "value_clamp": 2, "layers": [1, 2, 3]}, trials=4)


def _parsed(cmd):
    """The command as geomprobe's CLI parses it: (args, editor options)."""
    argv = shlex.split(cmd)
    assert argv[:2] == ["geomprobe", "diagnose"]
    args = build_parser().parse_args(argv[1:])
    return args, parse_overrides(args.set, args.layers)


def test_remedy_names_the_switch_layer_and_prints_the_command():
    m = rec(delta=1.0, rho=2.6, switch_layer=5, switch_rate=0.8, edit_layers=(1, 2, 3), n_model_layers=12)
    v = V.judge(m, run=RUN)
    assert list(v.rules) == ["not-the-drift"]
    (remedy,) = v.remedies
    assert "peaks at layer 5" in remedy and "80%" in remedy and "edit layers 3-5" in remedy
    (cmd,) = v.remedy_commands
    args, over = _parsed(cmd)
    # the user's run (model, requests with a space, editor, --set, trials) with the layers changed
    assert (args.cmd, args.model, args.requests, args.editor, args.trials) == (
        "diagnose", "smollm2-135m", "my requests.json", "memit", 4)
    assert over == {"lam": 15000.0, "value_clamp": 2, "layers": (3, 4, 5)}
    # the same remedy without the measurement: the general advice, no command
    v0 = V.judge(rec(delta=1.0, rho=2.6), run=RUN)
    general = next(r.remedy for r in V.RULES if r.id == "not-the-drift")
    assert v0.remedies == (general,) and v0.remedy_commands == ()


def test_remedy_names_the_lambda_that_writes_90_percent():
    # MEMIT writes s/(1+s) of R along k, s = kᵀC⁻¹k / λ: λ = 1.5e4 with kᵀC⁻¹k = 900 writes 6%
    m = rec(form="declarative", decl_success_after=0.0, value_predicts=True, kck=900.0, lam=15000.0)
    v = V.judge(m, run=RUN)
    assert list(v.rules) == ["not-written"]
    assert "λ = 15000 writes 6%" in v.remedies[0] and "λ = 100 writes 90%" in v.remedies[0]
    (cmd,) = v.remedy_commands
    args, over = _parsed(cmd)
    assert cmd.count("lam=") == 1 and over == {"lam": 100, "value_clamp": 2, "layers": (1, 2, 3)}
    s = 900.0 / over["lam"]
    assert s / (1 + s) >= 0.9
    assert v.numbers["kck"] == 900.0 and v.numbers["lam_target"] == 100
    # a λ that already writes 90% is not lowered further
    assert V.judge(rec(form="declarative", decl_success_after=0.0, value_predicts=True, kck=900.0, lam=50.0),
                   run=RUN).remedy_commands == ()
    # the isotropic rule: α = ‖k‖² / 9
    v = V.judge(rec(form="declarative", decl_success_after=0.0, value_predicts=True, editor_rule="identity",
                    editor="rose", key_norm=3.0, alpha=10.0), run=RUN)
    assert _parsed(v.remedy_commands[0])[1]["alpha"] == 1


def test_value_and_editor_remedies_print_commands():
    m = rec(form="declarative", decl_success_after=0.0, value_predicts=False, rho=0.0, value_steps=30,
            value_steps_run=30, value_clamp=0.75, value_norm_rel=0.75)
    v = V.judge(m, run=RUN)
    assert "value_steps 30 → 60" in v.remedies[0] and "value_clamp 0.75 → 1.5" in v.remedies[0]
    assert _parsed(v.remedy_commands[0])[1] == {"lam": 15000.0, "value_clamp": 1.5, "value_steps": 60,
                                                 "layers": (1, 2, 3)}
    v = V.judge(rec(delta=7.9, amplification=11.0, delta_covariance=7.9, delta_identity=0.7,
                    conflict=0.9, rho_rel=0.05, n_relations=3), run=RUN)
    editors = [_parsed(c)[0].editor for c in v.remedy_commands]
    assert editors == ["rose-no-hki", "rose-no-iga"]  # isotropic update; HKI with the same (covariance) rule


def test_rules_are_documented_with_their_ids():
    import geomprobe.report.verdict as mod
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "## Diagnose: verdict rules" in readme
    for r in V.RULES:
        assert f"``{r.id}``" in mod.__doc__, r.id
        assert f"`{r.id}`" in readme, r.id


# ---- toy cases -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy():
    return gp.load_model("toy-llama", device="cpu")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("reqs")
    paths = {"occ": d / "occ.json", "joint": d / "joint.json"}
    paths["occ"].write_text(json.dumps({"requests": [OCC]}))
    paths["joint"].write_text(json.dumps({"requests": [_no_id(OCC), _no_id(COL)]}))
    return paths


def _weights(lm):
    return {l: lm.rewrite_module(l).weight.detach().clone() for l in range(lm.n_layers)}


def _same(lm, saved):
    return all(torch.equal(lm.rewrite_module(l).weight, w) for l, w in saved.items())


@pytest.fixture(scope="module")
def failing(toy, files, tmp_path_factory):
    out = tmp_path_factory.mktemp("fail")
    saved = _weights(toy)
    report = gp.diagnose(toy, files["joint"], editor="memit-merge", out=out, overrides=FAIL_SET, trials=6,
                         log=lambda s: None)
    return report, out, _same(toy, saved)


def _record(report, label, form, key="verdicts"):
    """The record of request ``label`` (``subject · relation``) on ``form``, typed."""
    cls = Verdict if key == "verdicts" else Measurement
    (r,) = [x for x in map(cls.from_dict, report[key]) if x.label == label and x.form == form]
    return r


# The verdict rules of the README, stated again here from the raw numbers (literal thresholds, no call into
# geomprobe.report.verdict), so a changed rule or threshold in the package shows up as a failing test.
def expected_rules(m: Measurement) -> set[str]:
    if m.success_after is None:  # not measured: never a failure
        return {"not-evaluable"}
    fails = m.success_after < 0.5
    if not fails:
        return {"ok"} | ({"already-true"} if (m.success_before or 0.0) >= 0.5 else set())
    decl = m.form == "declarative"
    decl_ok = m.decl_success_after is not None and m.decl_success_after >= 0.5
    decl_fails = m.decl_success_after is not None and m.decl_success_after < 0.5
    out = set()
    if decl:
        if m.value_predicts is not None:
            out.add("not-written" if m.value_predicts else "value-not-reached")
    else:
        if decl_fails:
            out.add("decl-failed")
        if decl_ok and m.delta is not None and m.rho is not None:
            out.add("drift-exceeds-tolerance" if m.delta > m.rho else "not-the-drift")
        if m.editor_rule in ("covariance", "projection", "rank-one") and (m.amplification or 0.0) > 3.0:
            out.add("covariance-amplifies")
    if (m.n_relations or 0) >= 2 and (m.conflict or 0.0) > 0.8 and m.rho_rel is not None and m.rho_rel < 0.1:
        out.add("conflict-collapses-rho")
    if (m.collision_cosine or 0.0) > 0.9:
        out.add("near-duplicate")
    return out or {"unexplained"}


def test_failing_joint_edit_is_diagnosed_from_its_measurements(failing):
    report, _, same = failing
    assert same
    decl, inst = _record(report, OCC_LABEL, "declarative"), _record(report, OCC_LABEL, "instruction")
    m = _record(report, OCC_LABEL, "instruction", "measurements")
    # the case as measured: the declarative edit takes, the instruction form fails, Δ > ρ = 0
    assert decl.ok and not inst.ok
    assert m.success_after < 0.5 <= m.decl_success_after and m.delta > m.rho == 0.0
    assert m.n_relations == 2 and 0.0 <= m.conflict <= 1.0
    # so the instruction verdict must say the drift exceeds the tolerance, with these numbers
    assert "drift-exceeds-tolerance" in inst.rules and "not-the-drift" not in inst.rules
    assert f"Δ = {m.delta:.3g} exceeds ρ = 0" in inst.verdict
    assert ("covariance-amplifies" in inst.rules) == (m.amplification > 3.0)
    # every record's verdict is what the rules, stated independently above, say about its numbers
    for v, mm in zip(report["verdicts"], report["measurements"]):
        assert (v.case_id, v.form) == (mm.case_id, mm.form)
        assert set(v.rules) == expected_rules(mm), (mm.label, mm.form, v.rules)
        assert v.ok == (mm.success_after >= 0.5)


def test_requests_are_shown_as_subject_and_relation(failing):
    report, out, _ = failing
    # ids stay in the JSON (unique, r<i> for requests without one); people read the label
    assert [r["case_id"] for r in report["requests"]] == ["r0", "r1"]
    assert {m.label for m in report["measurements"]} == {OCC_LABEL, COL_LABEL}
    bare_id = re.compile(r"(?<![\w/.-])r[01](?![\w/.-])")
    text = "\n".join(summary_diagnose(report))
    assert OCC_LABEL in text and COL_LABEL in text and not bare_id.search(text), text
    for name in ("report.html", "report.md"):
        page = re.sub(r"data:image/png;base64,[^'\")]*", "", (out / name).read_text())
        assert OCC_LABEL in page and COL_LABEL in page
        assert not bare_id.search(page), (name, bare_id.search(page))


def test_toy_remedy_commands_reproduce_the_run(failing, files):
    report, _, _ = failing
    v = _record(report, COL_LABEL, "declarative")
    m = _record(report, COL_LABEL, "declarative", "measurements")
    assert list(v.rules) == ["value-not-reached"] and m.value_steps == 30
    cmds = list(v.remedy_commands)
    assert cmds, v
    args, over = _parsed(cmds[0])
    assert (args.model, args.requests, args.editor, args.trials) == ("toy-llama", str(files["joint"]),
                                                                      "memit-merge", 6)
    assert m.value_clamp == FAIL_SET["value_clamp"] and cmds[0].count("value_clamp=") == 1
    assert over["value_steps"] == 60 and over["value_clamp"] == 2 * m.value_clamp
    text = "\n".join(summary_diagnose(report))
    assert cmds[0] in text
    # the rule names the switch-rate probe, so it was measured for this request (and only this one)
    assert m.switch_layer in range(4) and 0 < m.switch_rate <= 1
    assert _record(report, OCC_LABEL, "declarative", "measurements").switch_layer is None
    if m.switch_layer <= 1:  # a peak inside the run's own layers 0-1 proposes no other layers
        assert not any("--layers" in c for c in cmds)


def test_report_files_and_json_fields_are_stable(failing):
    report, out, _ = failing
    data = json.loads((out / "report.json").read_text())
    assert tuple(data) == REPORT_KEYS and data["schema"] == SCHEMA == "geomprobe.diagnose/2"
    assert data["weights_unchanged"] is True and data["editor"] == "memit-merge"
    assert len(data["measurements"]) == len(data["verdicts"]) == 2 * 3
    for m in data["measurements"]:
        assert tuple(m) == V.MEASUREMENT_FIELDS
    for v in data["verdicts"]:
        assert tuple(v) == V.VERDICT_FIELDS
    assert [r["id"] for r in data["rules"]] == [r.id for r in V.RULES]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<img alt='deviation_vs_radius'" in html
    assert "src='http" not in html and 'src="http' not in html  # self-contained
    md = (out / "report.md").read_text()
    assert "## Verdicts" in md and "deviation_vs_radius.png" in md and (out / "deviation_vs_radius.png").exists()
    # verdicts (commands included) re-derive from the JSON alone, and the JSON is the typed records' to_dict()
    run = Run.from_report(data)
    assert [V.judge(m, run=run).to_dict() for m in data["measurements"]] == data["verdicts"]
    assert [m.to_dict() for m in report["measurements"]] == data["measurements"]


def test_succeeding_case_is_reported_as_such(toy, files):
    saved = _weights(toy)
    report = gp.diagnose(toy, files["occ"], editor="rose-no-hki", trials=6, log=lambda s: None)
    assert _same(toy, saved) and report["files"] == []
    for v in report["verdicts"]:
        assert v.ok and list(v.rules) == ["ok"] and v.remedy_commands == (), v
        assert v.verdict.startswith(f"succeeds on the {v.form} form")
    decl = _record(report, OCC_LABEL, "declarative", "measurements")
    assert decl.case_id == "b-occ"
    assert decl.success_before == 0.0 and decl.success_after == 1.0  # the edit made it succeed
    assert decl.rho > 0 and decl.value_predicts


def test_compare_table_figures_and_weights(toy, files, tmp_path):
    saved = _weights(toy)
    report = gp.compare(toy, files["occ"], editors="memit,rose-no-hki", out=tmp_path, trials=4, log=lambda s: None)
    assert _same(toy, saved)
    data = json.loads((tmp_path / "report.json").read_text())
    assert tuple(data) == COMPARE_KEYS and data["schema"] == "geomprobe.compare/1"
    assert [(t["editor"], t["form"]) for t in data["table"]] == [
        (e, f) for e in ("memit", "rose-no-hki") for f in ("declarative", "question", "instruction")]
    for t in data["table"]:
        assert tuple(t) == TABLE_FIELDS and t["edit_seconds"] > 0
        # the subjects the file holds; with one subject the bootstrap interval is undefined, never invented
        subjects = {r["subject"] for r in data["requests"]}
        assert t["n_subjects"] == len(subjects)
        if len(subjects) < 2:
            assert t["success_after_low"] is None and t["success_after_high"] is None
        else:
            assert t["success_after_low"] <= t["success_after"] <= t["success_after_high"]
    assert set(data["per_editor"]) == {"memit", "rose-no-hki"}
    for f in ("deviation_vs_radius.png", "metrics_before_after.png", "report.html", "report.md"):
        assert (tmp_path / f).stat().st_size > 0
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64,") == 2
    assert report["table"][0]["success_after"] == 1.0  # memit's declarative edit takes
    text = "\n".join(summary_compare(report))
    fails = [v for ed in report["per_editor"].values() for v in ed["verdicts"] if not v.ok]
    assert not re.search(r"\bb-occ\b", text) and ((OCC_LABEL in text) == bool(fails))
    assert (tmp_path / "report.html").read_text().count(OCC_LABEL) >= 6  # per editor: verdicts and measurements


# ---- command line ----------------------------------------------------------------------------------------------
def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_diagnose_exits_0_whatever_the_verdicts(capsys, files, tmp_path):
    code, out, err = _run(capsys, "diagnose", "--model", "toy-llama", "--requests", str(files["joint"]),
                          "--editor", "memit-merge", "--trials", "4", "--out", str(tmp_path),
                          *(a for k, v in FAIL_SET.items() for a in ("--set", f"{k}={v}")))
    assert code == 0, err
    assert "FAIL" in out and OCC_LABEL in out and "instruction" in out and "report.html" in out
    assert "try: geomprobe diagnose --model toy-llama" in out
    assert "weights bit-identical afterwards: yes" in out
    assert json.loads((tmp_path / "report.json").read_text())["schema"] == SCHEMA


def _bad_files(tmp_path):
    malformed = tmp_path / "malformed.json"
    malformed.write_text("{not json")
    nosubj = tmp_path / "nosubject.json"
    nosubj.write_text(json.dumps({"requests": [{**OCC, "queries": [
        {"text": "Question: what does the sailor do?\nAnswer:", "form": "question"}]}]}))
    return malformed, nosubj


@pytest.mark.parametrize("cmd", ["diagnose", "compare"])
def test_cli_bad_input_is_one_line_and_nonzero(capsys, tmp_path, files, cmd):
    malformed, nosubj = _bad_files(tmp_path)
    ed = ["--editor", "memit"] if cmd == "diagnose" else ["--editors", "memit,rose"]
    bad_ed = ["--editor", "memmit"] if cmd == "diagnose" else ["--editors", "memit,memmit"]
    cases = [
        (["--model", "toy-llama", "--requests", str(tmp_path / "missing.json"), *ed], "does not exist"),
        (["--model", "toy-llama", "--requests", str(malformed), *ed], "not valid JSON"),
        (["--model", "toy-llama", "--requests", str(files["occ"]), *bad_ed], "unknown editor"),
        (["--model", "toy-llama", "--requests", str(nosubj), *ed], "does not occur"),
        (["--model", "/no/such/model", "--requests", str(files["occ"]), *ed], "model"),
        (["--model", "toy-llama", "--requests", str(files["occ"]), *ed, "--set", "novalue"], "--set"),
    ]
    for argv, needle in cases:
        code, out, err = _run(capsys, cmd, *argv, "--out", str(tmp_path / "o"))
        assert code != 0, argv
        lines = [l for l in err.splitlines() if l.startswith("geomprobe: error:")]
        assert len(lines) == 1 and needle in lines[0], (argv, err)
        assert "Traceback" not in err and not out
    assert not (tmp_path / "o" / "report.json").exists()


def test_cli_overrides_parse():
    assert parse_overrides(["value_clamp=2", "lam=0.5", "corpus=builtin"], "0-1") == {
        "value_clamp": 2, "lam": 0.5, "corpus": "builtin", "layers": (0, 1)}
    assert math.isclose(parse_overrides(["value_lr=1e-1"], None)["value_lr"], 0.1)
