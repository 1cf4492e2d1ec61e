"""Every editor raises target probability on SmolLM2-135M (real model, packaged wheel; slow)."""

import pytest
import torch

import geomprobe as gp
from geomprobe.data.forms import render
from geomprobe.editors import EDITORS
from geomprobe.scoring import target_logprob, with_targets

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    return gp.load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="module")
def batch():
    reqs = gp.load_requests("same-subject")
    subject = reqs[0].subject
    return [r for r in reqs if r.subject == subject][:2]


def _logp(lm, reqs):
    tb = with_targets(lm.tokenizer, [render(r.prompt, r.subject, "declarative") for r in reqs],
                      [r.target_new for r in reqs])
    with torch.no_grad():
        return target_logprob(lm.forward(tb.batch), tb.labels)


@pytest.fixture(scope="module")
def two_subjects():
    reqs = gp.load_requests("same-subject")
    first = {}
    for r in reqs:
        first.setdefault(r.subject, r)
    return list(first.values())[:2]


@pytest.mark.parametrize("name", list(EDITORS))
def test_editor_raises_target_probability_on_smollm2(smol, batch, two_subjects, name):
    if name == "rome":  # ROME edits one fact after another: a second rank-one write on the same subject key
        batch = two_subjects  # overwrites the first (ROME's own behaviour with its clamp 4), so use two subjects
    w = {l: smol.weight(l).detach().clone() for l in range(smol.n_layers)}
    cfg = gp.editors.preset_for(smol).with_(value_steps=12, value_hki_templates=4, n_tokens=4_000)
    upd = gp.editors.get(name, config=cfg).compute(smol, batch)
    before = _logp(smol, batch)
    with upd.applied(smol):
        after = _logp(smol, batch)
    assert (after > before + 0.5).all(), (name, before, after)
    assert all(torch.equal(smol.weight(l), w[l]) for l in range(smol.n_layers))
