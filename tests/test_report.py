"""diagnose / compare: verdict rules on hand-made records, real toy cases, report files, bad input.

Toy cases (toy-llama).  The shipped toys' known subjects barely route their answers through the subject
token, so edits of them do not take; an *unknown* subject (a word outside the toy vocabulary, tokenised as
``<unk>``) has only a default guess, and edits of it do take.  With the preset (layers 0-1, 30 steps):

* succeeding case — ``rose-no-hki`` (isotropic update) on one request (Blorptang's occupation -> sailor):
  the target wins on the declarative, question and instruction forms;
* failing case — ``memit-merge`` jointly on two relations of the same subject (occupation -> sailor,
  favourite colour -> green): the occupation edit wins on its declarative prompt but fails on the
  instruction form; the joint value's radius collapses (ρ = 0 under the argmax criterion) while Δ > 0.
"""

import json
import math

import pytest
import torch

import geomprobe as gp
from geomprobe.cli import main
from geomprobe.report import verdict as V
from geomprobe.report.compare import REPORT_KEYS as COMPARE_KEYS, TABLE_FIELDS
from geomprobe.report.diagnose import REPORT_KEYS, SCHEMA

OCC = {"case_id": "b-occ", "subject": "Blorptang", "relation": "occupation", "prompt": "The occupation of {} is",
       "target_new": "sailor", "target_true": "pilot"}
COL = {"case_id": "b-col", "subject": "Blorptang", "relation": "favourite_colour",
       "prompt": "The favourite colour of {} is", "target_new": "green", "target_true": "yellow"}


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
])
def test_each_rule_fires_on_its_numbers(kw, expected):
    v = V.judge(rec(**kw))
    assert v["rules"] == expected
    assert v["ok"] == ("ok" in expected)
    assert set(v) == set(V.VERDICT_FIELDS)
    assert v["verdict"].startswith("succeeds" if v["ok"] else "fails on the instruction form" if
                                   rec(**kw)["form"] == "instruction" else "fails on the declarative form")


def test_the_issue_example_sentence_comes_from_the_numbers():
    m = rec(delta=7.9, rho=2.6, rho_rel=0.05, amplification=11.0, delta_covariance=7.9, delta_identity=1.4,
            conflict=0.88, n_relations=4)
    v = V.judge(m)
    assert v["rules"] == ["drift-exceeds-tolerance", "covariance-amplifies", "conflict-collapses-rho"]
    s = v["verdict"]
    assert s.startswith("fails on the instruction form: Δ = 7.9 exceeds ρ = 2.6 (3.0×)")
    assert "amplifies the prompt drift 11×" in s and "would give Δ = 1.4" in s
    assert "four" not in s and "4 relations are near-orthogonal (conflict 0.88)" in s
    assert any("isotropic" in r for r in v["remedies"]) and any("HKI" in r for r in v["remedies"])
    assert v["numbers"]["amplification"] == 11.0 and v["thresholds"] == V.THRESHOLDS
    # thresholds are parameters: raising the amplification threshold silences that rule
    assert "covariance-amplifies" not in V.judge(m, {"AMPLIFICATION": 20.0})["rules"]


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
    paths["joint"].write_text(json.dumps({"requests": [OCC, COL]}))
    return paths


def _weights(lm):
    return {l: lm.rewrite_module(l).weight.detach().clone() for l in range(lm.n_layers)}


def _same(lm, saved):
    return all(torch.equal(lm.rewrite_module(l).weight, w) for l, w in saved.items())


@pytest.fixture(scope="module")
def failing(toy, files, tmp_path_factory):
    out = tmp_path_factory.mktemp("fail")
    saved = _weights(toy)
    report = gp.diagnose(toy, files["joint"], editor="memit-merge", out=out, trials=6, log=lambda s: None)
    return report, out, _same(toy, saved)


def _record(report, case_id, form, key="verdicts"):
    (r,) = [v for v in report[key] if v["case_id"] == case_id and v["form"] == form]
    return r


def test_failing_joint_edit_is_diagnosed_from_its_measurements(failing):
    report, _, same = failing
    assert same
    decl, inst = _record(report, "b-occ", "declarative"), _record(report, "b-occ", "instruction")
    assert decl["ok"] and not inst["ok"]
    m = _record(report, "b-occ", "instruction", "measurements")
    assert m["success_after"] < V.FORM_SUCCESS <= m["decl_success_after"]
    # the verdict is the rules applied to the recorded numbers, and each fired rule agrees with them
    assert V.judge(m) == inst
    assert ("drift-exceeds-tolerance" in inst["rules"]) == (m["delta"] > m["rho"])
    assert ("not-the-drift" in inst["rules"]) == (m["delta"] <= m["rho"])
    assert ("covariance-amplifies" in inst["rules"]) == (m["amplification"] > V.AMPLIFICATION)
    assert m["n_relations"] == 2 and 0.0 <= m["conflict"] <= 1.0
    for r in inst["rules"]:
        assert r in V.RULE_IDS


def test_report_files_and_json_fields_are_stable(failing):
    report, out, _ = failing
    data = json.loads((out / "report.json").read_text())
    assert tuple(data) == REPORT_KEYS and data["schema"] == SCHEMA == "geomprobe.diagnose/1"
    assert data["weights_unchanged"] is True and data["editor"] == "memit-merge"
    assert len(data["measurements"]) == len(data["verdicts"]) == 2 * 3
    for m in data["measurements"]:
        assert set(V.MEASUREMENT_FIELDS) <= set(m)
    for v in data["verdicts"]:
        assert tuple(v) == V.VERDICT_FIELDS
    assert [r["id"] for r in data["rules"]] == [r.id for r in V.RULES]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<img alt='deviation_vs_radius'" in html
    assert "src='http" not in html and 'src="http' not in html  # self-contained
    md = (out / "report.md").read_text()
    assert "## Verdicts" in md and "deviation_vs_radius.png" in md and (out / "deviation_vs_radius.png").exists()
    # verdicts re-derive from the JSON alone
    assert [V.judge(m)["rules"] for m in data["measurements"]] == [v["rules"] for v in data["verdicts"]]


def test_succeeding_case_is_reported_as_such(toy, files):
    saved = _weights(toy)
    report = gp.diagnose(toy, files["occ"], editor="rose-no-hki", trials=6, log=lambda s: None)
    assert _same(toy, saved) and report["files"] == []
    for v in report["verdicts"]:
        assert v["ok"] and v["rules"] == ["ok"], v
        assert v["verdict"].startswith(f"succeeds on the {v['form']} form")
    decl = _record(report, "b-occ", "declarative", "measurements")
    assert decl["success_before"] == 0.0 and decl["success_after"] == 1.0  # the edit made it succeed
    assert decl["rho"] > 0 and decl["value_predicts"]


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
    assert set(data["per_editor"]) == {"memit", "rose-no-hki"}
    for f in ("deviation_vs_radius.png", "metrics_before_after.png", "report.html", "report.md"):
        assert (tmp_path / f).stat().st_size > 0
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64,") == 2
    assert report["table"][0]["success_after"] == 1.0  # memit's declarative edit takes


# ---- command line ----------------------------------------------------------------------------------------------
def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_diagnose_exits_0_whatever_the_verdicts(capsys, files, tmp_path):
    code, out, err = _run(capsys, "diagnose", "--model", "toy-llama", "--requests", str(files["joint"]),
                          "--editor", "memit-merge", "--trials", "4", "--out", str(tmp_path))
    assert code == 0, err
    assert "FAIL" in out and "b-occ" in out and "instruction" in out and "report.html" in out
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
    from geomprobe.cli import _overrides

    assert _overrides(["value_clamp=2", "lam=0.5", "corpus=builtin"], "0-1") == {
        "value_clamp": 2, "lam": 0.5, "corpus": "builtin", "layers": (0, 1)}
    assert math.isclose(_overrides(["value_lr=1e-1"], None)["value_lr"], 0.1)
