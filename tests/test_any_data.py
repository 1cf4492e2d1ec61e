"""Issue 15: every request layout geomprobe reads runs through every editor (HKI included) and the probes, on
relations no built-in pool covers; on SmolLM2 (slow) ``rose`` and ``diagnose`` on an S2RKE-layout file."""

import json
from pathlib import Path

import pytest
import torch

import geomprobe as gp
from geomprobe.data.forms import eval_prompts, find_pool
from geomprobe.editors import EDITORS

FIX = Path(__file__).parent / "fixtures"
LAYOUTS = ["layouts/easyedit_counterfact.json", "layouts/knowedit_wiki_counterfact.json",
           "layouts/knowedit_zsre.json", "layouts/s2rke_single.json", "layouts/zsre_empty_alt.json",
           "layouts/locomo_conversation.json", "counterfact_sample.json", "s2rke_sample.json", "locomo_sample.json"]


@pytest.fixture(scope="module")
def toy():
    return gp.load_model("toy-llama", device="cpu")


@pytest.fixture
def _cache(tmp_path_factory, monkeypatch):
    """A fresh cache for the toy runs (the SmolLM2 test uses the default cache, as the other slow tests do)."""
    monkeypatch.setenv("GEOMPROBE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _two(path):
    """Two requests of the file (two subjects where it has them), ids made unique."""
    reqs = gp.load_requests(str(FIX / path))
    assert reqs, path
    seen, out = set(), []
    for r in reqs:
        if r.subject not in seen:
            seen.add(r.subject)
            out.append(r)
    return (out + reqs)[:2]


def _cfg(toy):
    from geomprobe.editors.presets import preset_for

    return preset_for(toy).with_(n_tokens=2000, value_steps=3)


@pytest.mark.parametrize("path", LAYOUTS)
def test_every_layout_gets_question_and_instruction_forms(toy, path, _cache):
    from geomprobe.data.derive import prepare_pools

    reqs = _two(path)
    prepare_pools(reqs, lm=toy)
    for r in reqs:  # every relation has a pool now, so question and instruction prompts exist
        assert find_pool(r.relation, r.prompt) is not None, (path, r.relation)
        assert eval_prompts(r, "question", toy.tokenizer) and eval_prompts(r, "instruction", toy.tokenizer)


def test_every_editor_and_probe_runs_on_every_layout(toy, _cache):
    """One batch holding two requests of each layout (ids made unique): each editor computes once on it, so every
    editor runs on every layout; the probes run on RoSE's update."""
    from dataclasses import replace

    reqs = [replace(r, case_id=f"{k}-{i}") for k, path in enumerate(LAYOUTS) for i, r in enumerate(_two(path))]
    weights = {l: toy.weight(l).detach().clone() for l in range(toy.n_layers)}
    for name in EDITORS:
        upd = gp.editors.get(name, config=_cfg(toy)).compute(toy, reqs)
        assert all(torch.isfinite(d).all() for d in upd.deltas.values()), name
        assert len(upd.requests) == len(reqs)
    upd = gp.editors.get("rose", config=_cfg(toy)).compute(toy, reqs)
    dev = gp.probes.activation_deviation(toy, upd)
    assert set(dev["case_id"]) == {r.case_id for r in reqs} and dev["value"].notna().all()
    tol = gp.probes.tolerance_radius(toy, upd, trials=2, step=float(upd.h.norm(dim=0).mean()) / 4)
    assert len(tol) == len(reqs)
    drift = gp.probes.edit_drift(toy, upd)
    assert set(drift["form"]) == {"declarative", "question", "instruction"}
    patch = gp.probes.patch_transfer(toy, upd, scales=(1.0,))
    assert set(patch["case_id"]) == {r.case_id for r in reqs}
    keys = gp.probes.key_similarity(toy, reqs, [upd.layers[-1]])
    assert len(keys) and keys["value"].notna().all()
    assert gp.probes.gradient_conflict(update=upd) is not None
    for l in range(toy.n_layers):
        assert torch.equal(toy.weight(l), weights[l])


def test_relation_without_any_pool_gets_one_from_the_rules_or_the_model(toy, _cache):
    """A template no rule covers: HKI still runs (the model's rewrite, or the generic fallback on a model without a
    chat template), and the pool says where it came from."""
    from geomprobe.data.derive import pool_for

    req = gp.EditRequest("Paris", "<zorbledBy>", "{} zorbles most happily with", "Rome")
    with pytest.raises(gp.errors.RequestFormatError, match="geomprobe templates"):
        pool_for(req.relation, req.prompt)  # no model: nothing to fall back on, one clear line
    upd = gp.editors.get("rose", config=_cfg(toy)).compute(toy, [req])
    pool = find_pool(req.relation, req.prompt)
    assert pool is not None and pool.origin in ("model", "fallback") and pool.train
    assert torch.isfinite(upd.deltas[upd.layers[-1]]).all()


#: An S2RKE-layout file whose relations no built-in pool has (a rule covers the first; the second only the model)
S2RKE_NO_POOL = {
    "subjectID": 1, "class": "person",
    "subject": {"name": "Lionel Messi", "aliases": [], "description": "footballer"},
    "Star_Topology": [
        {"requested_rewrite": {"prompt": "The favourite food of {} is", "relation": "<hasFavouriteFood>",
                               "target_true": "asado", "target_new": "sushi"}},
        {"requested_rewrite": {"prompt": "{} zorbles most happily with", "relation": "<zorblesWith>",
                               "target_true": "Neymar", "target_new": "Rome"}},
    ],
}


@pytest.mark.slow
def test_rose_and_diagnose_on_smollm2_with_relations_no_builtin_pool_covers(tmp_path):
    from geomprobe.data.forms import builtin_templates

    path = tmp_path / "s2rke.json"
    path.write_text(json.dumps(S2RKE_NO_POOL))
    reqs = gp.load_requests(str(path))
    assert [r.relation for r in reqs] == ["<hasFavouriteFood>", "<zorblesWith>"]
    assert not set(r.relation for r in reqs) & set(builtin_templates())
    report = gp.diagnose("smollm2-135m", str(path), editor="rose", out=tmp_path / "out", trials=2,
                         overrides={"value_steps": 5, "n_tokens": 4_000}, log=lambda s: None)
    forms = {(v["label"], v["form"]) for v in report["verdicts"]}
    assert len(forms) == 6  # 2 requests x 3 forms, every one evaluated or explicitly reported
    assert not any(v.get("status") == "not-evaluable" for v in report["verdicts"])
    assert report["weights_unchanged"] and (tmp_path / "out" / "report.json").is_file()
