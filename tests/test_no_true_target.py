"""Issue 15: requests without a ``target_true``, forms that cannot be evaluated, and what each editor needs checked
before any work starts.

Toy case (toy-llama, ``rose-no-hki``; see tests/test_report.py for why the unknown subject Blorptang is used): the
edit Blorptang's occupation -> sailor takes on every form.  Without a ``target_true`` the ``prob`` criterion
compares with the unedited model's own greedy answer (recorded as ``true_target``, criterion ``beats-greedy``);
the verdicts must say ok, never read a missing value as a failure, and a form without prompts (relation ``job``
here, which has no template pool) must be reported as not evaluated, not dropped.
"""

import importlib
import json
import time

import pytest
import torch

import geomprobe as gp
from geomprobe.cli import main
from geomprobe.errors import GeomprobeError
from geomprobe.report.render import summary_diagnose

OCC = {"subject": "Blorptang", "relation": "occupation", "prompt": "The occupation of {} is", "target_new": "sailor"}
JOB = {"subject": "Blorptang", "relation": "job", "prompt": "The occupation of {} is", "target_new": "sailor"}
OCC_LABEL, JOB_LABEL = "Blorptang · occupation", "Blorptang · job"
NO_POOL = "job"
_USERS_OF_EVAL_PROMPTS = ("geomprobe.data.forms", "geomprobe.data", "geomprobe.evaluate", "geomprobe.probes.deviation",
                          "geomprobe.probes.key_similarity")


@pytest.fixture
def no_pool_for_job(monkeypatch):
    """Relation ``job`` has no template pool and no question/instruction prompts, whatever pools the package
    generates for relations of its own (so the not-evaluated path is exercised on every version of the pools)."""
    forms = importlib.import_module("geomprobe.data.forms")
    real_eval, real_pools = forms.eval_prompts, forms.relation_templates

    def eval_prompts(request, form, *a, **k):
        if request.relation == NO_POOL and form in ("question", "instruction") and not request.queries:
            return []
        return real_eval(request, form, *a, **k)

    def relation_templates():
        return {k: v for k, v in real_pools().items() if k != NO_POOL}

    for name in _USERS_OF_EVAL_PROMPTS:
        mod = importlib.import_module(name)
        if hasattr(mod, "eval_prompts"):
            monkeypatch.setattr(mod, "eval_prompts", eval_prompts)
        if hasattr(mod, "relation_templates"):
            monkeypatch.setattr(mod, "relation_templates", relation_templates)
    if hasattr(forms, "pool_for"):
        real_pool_for = forms.pool_for
        monkeypatch.setattr(forms, "pool_for",
                            lambda rel, *a, **k: None if rel == NO_POOL else real_pool_for(rel, *a, **k))


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: the checks must answer before a model loads."""
    import geomprobe.models as models
    import geomprobe.models.load as load

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_model", boom)
    monkeypatch.setattr(load, "load_model", boom)


@pytest.fixture(scope="module")
def toy():
    return gp.load_model("toy-llama", device="cpu")


def _greedy_word(lm, text: str) -> str:
    ids = torch.tensor([lm.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        nxt = int(lm.model(ids).logits[0, -1].argmax())
    return lm.tokenizer.decode([nxt]).strip()


def test_diagnose_without_target_true_judges_by_the_unedited_answer_and_lists_unevaluated_forms(
        toy, tmp_path, no_pool_for_job):
    path = tmp_path / "requests.json"
    path.write_text(json.dumps({"requests": [OCC, JOB]}))  # no target_true anywhere
    before_answer = _greedy_word(toy, "The occupation of Blorptang is")
    assert before_answer and before_answer != "sailor"
    report = gp.diagnose(toy, str(path), editor="rose-no-hki", out=tmp_path / "out", trials=4, log=lambda s: None)
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    meas = {(m["label"], m["form"]): m for m in data["measurements"]}
    verdicts = {(v["label"], v["form"]): v for v in data["verdicts"]}
    # the edit took: P(sailor) rose and the target beats the model's own pre-edit answer ...
    decl = meas[(OCC_LABEL, "declarative")]
    assert decl["criterion"] == "beats-greedy" and decl["true_target"] == before_answer  # taken before the edit
    assert decl["success_before"] == 0.0 and decl["success_after"] == 1.0
    assert decl["target_prob_after"] > 0.5 > decl["target_prob_before"]
    # ... so no verdict reads the missing target_true as a failure
    v = verdicts[(OCC_LABEL, "declarative")]
    assert v["ok"] and v["status"] == "ok" and v["rules"] == ["ok"] and v["criterion"] == "beats-greedy"
    assert f"unedited model's own answer {before_answer!r}" in v["verdict"]
    assert [x["status"] for x in data["verdicts"]].count("fails") == 0
    # every request-form is in the report: the ones without prompts as not evaluated, with the reason
    assert len(data["measurements"]) == len(data["verdicts"]) == 2 * 3
    for form in ("question", "instruction"):
        m, v = meas[(JOB_LABEL, form)], verdicts[(JOB_LABEL, form)]
        assert m["n_prompts"] == 0 and m["success_after"] is None and "'job'" in m["not_evaluated"]
        assert v["status"] == "not-evaluable" and not v["ok"] and v["rules"] == ["not-evaluable"]
        assert v["verdict"].startswith(f"not evaluated on the {form} form: relation 'job' has no template pool")
        assert verdicts[(OCC_LABEL, form)]["status"] == "ok"
    # the terminal summary and the written reports say which criterion was used and what was not evaluated
    text = "\n".join(summary_diagnose(report))
    assert "4/4 request-forms ok (2 more not evaluated" in text, text
    assert "success criterion: 4 request-form(s)" in text and "[beats-greedy]" in text
    assert sum(" n/e " in line for line in text.splitlines()) == 2
    md = (tmp_path / "out" / "report.md").read_text()
    assert "not evaluated on the question form" in md and "beats-greedy" in md


def test_compare_checks_every_request_before_any_model_loads(capsys, tmp_path, no_model):
    bad = dict(OCC, queries=[{"text": "Where does Zork live?", "form": "question", "answer": "sailor"}])
    path = tmp_path / "requests.json"
    path.write_text(json.dumps({"requests": [OCC, bad]}))
    out = tmp_path / "cmp"
    t0 = time.perf_counter()
    code = main(["compare", "--model", "toy-llama", "--requests", str(path), "--editors", "memit,rose", "--out",
                 str(out)])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2 and elapsed < 5.0, (code, elapsed, err)
    (line,) = [l for l in err.splitlines() if l.startswith("geomprobe: error:")]
    assert "Blorptang" in line, line
    assert not out.exists()


def test_hki_relations_no_rule_covers_are_left_to_the_model():
    """HKI needs a pool per relation: one the rules derive is found before any model loads; one no rule covers is
    returned (the model writes it once loaded), never refused; editors without HKI need none."""
    from geomprobe.editors.options import check_requests_for

    covered = gp.EditRequest("Blorptang", "job", "The occupation of {} is", "sailor")
    odd = gp.EditRequest("Blorptang", "zorbling", "{} zorbles most happily with", "sailor")
    assert check_requests_for("rose", [covered]) == []
    assert check_requests_for("rose", [covered, odd]) == ["zorbling"]
    assert check_requests_for("memit", [covered, odd]) == []


def test_bad_layers_fail_before_loading_from_the_python_api_too(tmp_path, no_model):
    path = tmp_path / "requests.json"
    path.write_text(json.dumps({"requests": [OCC]}))
    with pytest.raises(GeomprobeError, match=r"toy-llama has 4 layers \(0\.\.3\).*did you mean --layers 2-3"):
        gp.diagnose("toy-llama", str(path), editor="memit", overrides={"layers": (2, 3, 4, 5)}, log=lambda s: None)
