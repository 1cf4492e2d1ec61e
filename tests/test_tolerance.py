"""Tolerance radius: the fast estimator agrees with the paper's procedure; seeded and reproducible.

On the toy world the radius is measured around the model's own facts (δ = 0, target = the true answer):
the shipped toys' answers barely flow through the subject token, so optimised counterfactual values do
not reach their targets there (see the toy presets).  SmolLM2 checks the estimators on real edits.
"""

from dataclasses import replace

import pytest
import torch

import geomprobe as gp
from geomprobe.data.forms import render
from geomprobe.editors.update import EditUpdate
from geomprobe.editors.value import ValueResult
from geomprobe.errors import GeomprobeError
from geomprobe.hooks import read
from geomprobe.positions import tokenize


def _fact_update(lm, reqs, layer):
    """An EditUpdate with δ = 0 whose 'targets' are the model's own answers."""
    reqs = tuple(replace(r, target_new=r.target_true) for r in reqs)
    batch = tokenize(lm.tokenizer, [render(r.prompt, r.subject, "declarative") for r in reqs])
    with torch.no_grad(), read(lm, [layer], ("resid",), positions=batch.subject_last) as rd:
        lm.forward(batch)
    h = rd["resid"][layer].float().T.contiguous()
    n = len(reqs)
    value = ValueResult(layer, tuple(r.case_id for r in reqs), tuple((i,) for i in range(n)), h, torch.zeros_like(h),
                        (0.0,), {}, 0, 0.0)
    zero = torch.zeros(lm.d_model, lm.d_mlp)
    return EditUpdate("facts", (layer,), {layer: zero}, {layer: torch.zeros(lm.d_mlp, n)}, {layer: torch.zeros_like(h)},
                      value.z, h, value.groups, reqs, value=value, model=dict(lm.identity))


@pytest.fixture(scope="module")
def toy_edit():
    lm = gp.load_model("toy-llama", device="cpu")
    return lm, _fact_update(lm, gp.load_requests("toy")[:6], layer=0)


def _agree(lm, upd, trials):
    ref = gp.probes.tolerance_radius(lm, upd, method="reference", trials=trials)
    fast = gp.probes.tolerance_radius(lm, upd, method="fast", trials=trials)
    assert len(ref) == len(fast) == len(upd.requests)
    assert ref["predicted"].all() and (ref["value"] > 0).all(), ref["value"].tolist()
    gap = (ref["value"] - fast["value"]).abs() / ref["step"]
    assert (gap <= 1.0 + 1e-9).all(), (ref["value"].tolist(), fast["value"].tolist())
    assert fast["evaluations"].sum() < ref["evaluations"].sum()
    return ref, fast


def test_fast_and_reference_agree_within_one_step_on_the_toy(toy_edit):
    _agree(*toy_edit, trials=6)


@pytest.mark.slow
def test_fast_and_reference_agree_within_one_step_on_smollm2():
    lm = gp.load_model("smollm2-135m", device="cpu")
    reqs = [r for r in gp.load_requests("same-subject") if r.relation == "capital"][:3]
    _agree(lm, _fact_update(lm, reqs, layer=7), trials=5)


def test_radius_is_reproducible_and_seed_dependent(toy_edit):
    lm, upd = toy_edit
    a = gp.probes.tolerance_radius(lm, upd, trials=5, seed=3)
    b = gp.probes.tolerance_radius(lm, upd, trials=5, seed=3)
    assert a["value"].tolist() == b["value"].tolist()
    assert set(a.columns) >= {"editor", "case_id", "subject", "relation", "form", "layer", "metric", "value", "seed"}


def test_bad_arguments(toy_edit):
    lm, upd = toy_edit
    with pytest.raises(GeomprobeError):
        gp.probes.tolerance_radius(lm, upd, method="slow")
    with pytest.raises(GeomprobeError):
        gp.probes.tolerance_radius(lm, upd, trials=0)
    with pytest.raises(GeomprobeError):
        gp.probes.tolerance_radius(lm, upd, step=-1.0)
