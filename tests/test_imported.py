"""Importing an edit made elsewhere (``EditUpdate.from_weights``): round trips through the saved forms, the
recovered keys / h / z / R, the model left bit-identical, and one-line refusals of what cannot be diagnosed."""

import json
import math
import random

import pytest
import torch

import geomprobe as gp
from geomprobe.data.forms import render
from geomprobe.data.requests import EditRequest
from geomprobe.editors import EditUpdate
from geomprobe.editors.imported import save_deltas, save_weights
from geomprobe.errors import GeomprobeError, NumericalError
from geomprobe.hooks import read
from geomprobe.positions import tokenize
from tiny import WORDS

REQUESTS = [
    EditRequest("france", "capital", "the capital of {} is", "rome", "paris", case_id="fr"),
    EditRequest("germany", "capital", "the capital of {} is", "paris", "berlin", case_id="de"),
    EditRequest("john", "lives", "{} lives in", "italy", "germany", case_id="jo"),
]
KINDS = ["llama", "gpt2"]  # gpt2: a Conv1D (in×out) rewrite weight and a tied LM head


def from_weights(lm, edited, requests, **kw):
    return EditUpdate.from_weights(lm, edited, requests, **kw)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("imported")
    mp.setenv("GEOMPROBE_CACHE", str(root / "cache"))
    rng = random.Random(0)  # random word soup: a full-rank key covariance on the tiny models
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(rng.choice(WORDS) for _ in range(40)) for _ in range(100)), "utf-8")
    yield corpus
    mp.undo()


def _cfg(lm, corpus, **kw):
    return gp.editors.preset_for(lm).with_(**{"layers": (0, 1), "n_tokens": 2000, "corpus": str(corpus),
                                              "value_steps": 4, "value_contexts": "none", "lam": 1.0, **kw})


@pytest.fixture(scope="module")
def edits(tiny_lms, cache):
    """kind -> a MEMIT update on the tiny model (bare keys: value_contexts none), computed once."""
    done = {}

    def get(kind):
        if kind not in done:
            lm = tiny_lms[kind]
            done[kind] = gp.editors.get("memit", config=_cfg(lm, cache)).compute(lm, REQUESTS)
        return done[kind]

    return get


def _snapshot(lm):
    return {k: v.detach().clone() for k, v in lm.model.state_dict().items()}


def _unchanged(lm, snap):
    now = lm.model.state_dict()
    return set(now) == set(snap) and all(torch.equal(now[k], snap[k]) for k in snap)


def _applied_change(lm, upd, l):
    """What adding ΔW into the weights actually changed: fl(fl(W + ΔW) − W) in float32."""
    W = lm.weight(l).detach()
    return (W.float() + upd.deltas[l]).to(W.dtype).float() - W.float()


def _bare_resid(lm, reqs, layer):
    batch = tokenize(lm.tokenizer, [render(r.prompt, r.subject, "declarative") for r in reqs])
    with torch.no_grad(), read(lm, [layer], ("resid",), positions=batch.subject_last) as rd:
        lm.forward(batch)
    return rd["resid"][layer].float().T


def _check_value_stand_in(imp):
    """An imported update's value: the δ = z − h the edited model delivers, one group per request, not optimised."""
    v = imp.value
    assert imp.is_imported and v.mode == "imported" and v.layer == imp.layers[-1]
    assert v.groups == imp.columns and v.members == tuple((i,) for i in range(len(imp.requests)))
    assert torch.equal(v.h, imp.h) and torch.equal(v.delta, imp.z - imp.h)
    assert v.losses == () and v.relation_grads == {} and v.steps_run == 0 and v.seconds == 0.0


def _check_recovered(lm, upd, imp):
    """Layers, keys, h, z, R and the bookkeeping of an import of ``upd``."""
    assert imp.layers == upd.layers and imp.editor == "imported" and not upd.is_imported
    _check_value_stand_in(imp)
    assert imp.columns == tuple(r.case_id for r in REQUESTS) == upd.columns
    assert imp.hparams["source"] == "imported" and imp.hparams["key_weighting"] == "bare"
    assert upd.hparams["value"]["contexts"] == "none"  # so MEMIT's own keys are the bare prompt's keys
    for l in upd.layers:
        # MEMIT read K_l with the layers below applied; the import reads it on the fully edited model
        torch.testing.assert_close(imp.keys[l], upd.keys[l], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(imp.resids[l], imp.deltas[l].cpu() @ imp.keys[l], rtol=1e-6, atol=1e-6)
        assert float(imp.resids[l].norm()) > 0
        assert imp.hparams["max_abs_delta"][str(l)] == pytest.approx(float(imp.deltas[l].abs().max()))
    last = upd.layers[-1]
    torch.testing.assert_close(imp.h, upd.h, rtol=1e-6, atol=1e-6)  # the unedited bare residual
    torch.testing.assert_close(imp.h, _bare_resid(lm, REQUESTS, last), rtol=1e-6, atol=1e-6)
    with upd.applied(lm):
        z = _bare_resid(lm, REQUESTS, last)
    torch.testing.assert_close(imp.z, z, rtol=1e-6, atol=1e-6)  # the edited model's residual
    assert float((imp.z - imp.h).norm()) > 1e-3 * float(imp.h.norm())


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_through_saved_weights(tiny_lms, edits, tmp_path, kind):
    lm = tiny_lms[kind]
    upd = edits(kind)
    snap = _snapshot(lm)
    f = save_weights(upd, lm, tmp_path / "edit")
    assert _unchanged(lm, snap)
    imp = EditUpdate.from_weights(lm, f, REQUESTS)
    assert _unchanged(lm, snap)  # bit-identical after the import
    assert imp.hparams["origin"] == str(f) and imp.hparams["form"] == "weights" and imp.hparams["reapply_exact"]
    for l in upd.layers:
        # a saved model holds W + ΔW rounded: the import recovers exactly the change that was applied
        assert torch.equal(imp.deltas[l], _applied_change(lm, upd, l))
        torch.testing.assert_close(imp.deltas[l], upd.deltas[l], rtol=0, atol=1e-6)
        assert imp.deltas[l].shape == lm.weight(l).shape and imp.deltas[l].dtype == torch.float32
    with upd.applied(lm):
        edited = {l: lm.weight(l).detach().clone() for l in upd.layers}
    with imp.applied(lm):  # re-applying the import gives the edited weights bit for bit
        assert all(torch.equal(lm.weight(l), edited[l]) for l in upd.layers)
    assert _unchanged(lm, snap)
    _check_recovered(lm, upd, imp)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_through_per_layer_deltas(tiny_lms, edits, tmp_path, kind):
    lm = tiny_lms[kind]
    upd = edits(kind)
    snap = _snapshot(lm)
    forms = {"file": save_deltas(upd, tmp_path / "d.safetensors"),
             "mapping": {l: upd.deltas[l].clone() for l in upd.layers},
             "float64": {l: upd.deltas[l].double() for l in upd.layers}}
    if lm.spec.layout == "conv1d":  # the Conv1D parameter's own in×out orientation
        forms["param-layout"] = {l: upd.deltas[l].T.contiguous() for l in upd.layers}
    torch.save({l: upd.deltas[l] for l in upd.layers}, tmp_path / "deltas.pt")
    forms["pt"] = tmp_path / "deltas.pt"
    for what, edited in forms.items():
        imp = gp.editors.EditUpdate.from_weights(lm, edited, REQUESTS, name="easyedit")
        assert imp.editor == "easyedit" and imp.hparams["form"] == "deltas", what
        for l in upd.layers:
            assert torch.equal(imp.deltas[l], upd.deltas[l]), (what, l)  # bit-exact
        assert _unchanged(lm, snap), what
    _check_recovered(lm, upd, from_weights(lm, forms["file"], REQUESTS, name="imported"))
    # zero ΔWs are not changes: only the layers that changed are reported
    imp = from_weights(lm, {0: torch.zeros_like(upd.deltas[0]), 1: upd.deltas[1]}, REQUESTS)
    assert imp.layers == (1,)


@pytest.mark.parametrize("kind", KINDS)
def test_full_saved_model_directory_and_state_dicts(tiny_lms, edits, tmp_path, kind):
    lm = tiny_lms[kind]
    upd = edits(kind)
    snap = _snapshot(lm)
    with upd.applied(lm):  # what another tool writes: the whole edited model
        lm.model.save_pretrained(tmp_path / "edited")
        full = {k: v.detach().clone() for k, v in lm.model.state_dict().items()}
    assert _unchanged(lm, snap)
    torch.save(full, tmp_path / "edited.pt")
    for edited in (tmp_path / "edited", str(tmp_path / "edited.pt"), full):
        imp = from_weights(lm, edited, REQUESTS)
        assert imp.layers == upd.layers, edited
        for l in upd.layers:
            assert torch.equal(imp.deltas[l], _applied_change(lm, upd, l)), (edited, l)
        assert _unchanged(lm, snap)
    if kind == "gpt2":  # tied LM head: save_pretrained drops one of its two names
        assert lm.model.config.tie_word_embeddings
        # a state dict of the bare base model (GPT2Model: no "transformer." prefix), as hub GPT-2 files are
        base = {k[len("transformer."):]: v for k, v in full.items() if k.startswith("transformer.")}
        base["h.0.attn.bias"] = torch.ones(1, 1, 4, 4)  # old checkpoints' causal-mask buffer: ignored as HF does
        imp = from_weights(lm, base, REQUESTS)
        assert imp.layers == upd.layers and all(torch.equal(imp.deltas[l], _applied_change(lm, upd, l))
                                                for l in upd.layers)


def test_memit_weighted_keys_match_the_editors_keys(tiny_lms, cache):
    """With context prefixes, ``key_weighting="memit"`` reproduces MEMIT's ½ bare + ½ prefixed keys."""
    lm = tiny_lms["llama"]
    cfg = _cfg(lm, cache, value_contexts="memit", value_steps=2)
    upd = gp.editors.get("memit", config=cfg).compute(lm, REQUESTS)
    deltas = {l: upd.deltas[l] for l in upd.layers}
    imp = from_weights(lm, deltas, REQUESTS, key_weighting="memit", config=cfg)
    bare = from_weights(lm, deltas, REQUESTS)
    for l in upd.layers:
        torch.testing.assert_close(imp.keys[l], upd.keys[l], rtol=1e-6, atol=1e-7)
        assert not torch.allclose(bare.keys[l], upd.keys[l], rtol=1e-3, atol=1e-5)  # the prefixes matter here
    with pytest.raises(GeomprobeError, match="key_weighting"):
        from_weights(lm, deltas, REQUESTS, key_weighting="mean")


def test_consumers_of_an_imported_update(tiny_lms, edits):
    """Every probe that reads ``update.value`` runs on an import, around the delivered δ = z − h; only the gradient
    conflict, which needs the relation gradients of a value optimisation, has nothing to read."""
    from dataclasses import replace

    from geomprobe.probes.edit_drift import request_deltas

    lm = tiny_lms["llama"]
    upd = edits("llama")
    imp = from_weights(lm, {l: upd.deltas[l] for l in upd.layers}, REQUESTS)
    assert imp.editor_config().layers == imp.layers  # no editor settings in hparams: the update's own layers
    dev = gp.probes.activation_deviation(lm, imp, rules=("update", "identity"))
    ref = gp.probes.activation_deviation(lm, upd, rules=("update",))
    assert len(dev) and dev["value"].notna().all()
    mine = dev[dev["rule"] == "update"].reset_index(drop=True)
    torch.testing.assert_close(torch.tensor(mine["value"].to_numpy()), torch.tensor(ref["value"].to_numpy()))
    rho = gp.probes.tolerance_radius(lm, imp, trials=3)
    assert list(rho["case_id"]) == [r.case_id for r in REQUESTS] and rho["value"].map(math.isfinite).all()
    zh = (imp.z - imp.h).norm(dim=0)
    torch.testing.assert_close(torch.tensor(rho["delta_norm"].to_numpy(), dtype=torch.float32), zh)
    # the δ every δ-reading probe uses is the same with the stand-in value as without a value result at all
    L, d = request_deltas(imp)
    L0, d0 = request_deltas(replace(imp, value=None))
    assert L == L0 == imp.layers[-1] and torch.equal(d, d0)
    assert gp.probes.gradient_conflict(update=imp).empty  # no relation gradients were recorded


def test_toy_world_round_trip(tmp_path, cache):
    lm = gp.load_model("toy-llama", device="cpu")
    reqs = gp.load_requests("toy")[:2]
    cfg = gp.editors.preset_for(lm).with_(n_tokens=2000, value_steps=3)
    upd = gp.editors.get("memit", config=cfg).compute(lm, reqs)
    snap = _snapshot(lm)
    imp = from_weights(lm, save_weights(upd, lm, tmp_path / "toy.safetensors"), reqs)
    assert imp.layers == upd.layers and _unchanged(lm, snap)
    for l in upd.layers:
        assert torch.equal(imp.deltas[l], _applied_change(lm, upd, l))
        torch.testing.assert_close(imp.keys[l], upd.keys[l], rtol=1e-6, atol=1e-6)  # toy keys are bare (contexts none)
    imp2 = from_weights(lm, save_deltas(upd, tmp_path / "toy-deltas.safetensors"), reqs)
    assert all(torch.equal(imp2.deltas[l], upd.deltas[l]) for l in upd.layers)  # bit-exact ΔW
    _check_value_stand_in(imp2)
    # the same Δ: the update rule's deviation reads only ΔW and the prompts' keys
    dev, dev2 = (gp.probes.activation_deviation(lm, u, rules=("update",)) for u in (upd, imp2))
    assert dev["value"].tolist() == dev2["value"].tolist() and len(dev) > 0
    # ρ of the import is computed around the δ the edited model delivers, z − h (finite, one row per request).  A
    # MEMIT edit spread over layers with λ > 0 does not deliver its optimised δ exactly, so in general its ρ differs
    # from the original's; only where the delivered δ is the optimised one must the radii agree (next test).
    rho = gp.probes.tolerance_radius(lm, imp2, trials=3)
    assert len(rho) == len(reqs) and rho["value"].map(math.isfinite).all() and (rho["value"] >= 0).all()
    assert rho["delta_norm"].tolist() == pytest.approx((imp2.z - imp2.h).norm(dim=0).tolist(), rel=1e-6)
    # on the toy λ = 1 is small against kᵀC⁻¹k: MEMIT writes nearly all of R, so the delivered δ is close to, not
    # equal to, the optimised one
    gap = float((imp2.value.delta - upd.value.delta).norm() / upd.value.delta.norm())
    assert 0 < gap < 1e-2, gap
    assert _unchanged(lm, snap)


OCC = EditRequest("Blorptang", "occupation", "The occupation of {} is", "sailor", "pilot", case_id="b-occ")
#: ROME at one layer (its value written exactly at the bare key); a small covariance sample keeps the test quick
ROME_SET = {"layers": (0,), "n_tokens": 2000}


def test_single_layer_rank_one_edit_delivers_its_value_and_keeps_rho(tmp_path):
    """ROME at one layer writes its optimised δ exactly at the bare key (rank-one, K_read = bare key), so the δ the
    edited model delivers, z − h, is the optimised δ up to rounding and the import's ρ is the original's."""
    lm = gp.load_model("toy-llama", device="cpu")
    cfg = gp.editors.preset_for(lm).with_(**ROME_SET)
    upd = gp.editors.get("rome", config=cfg).compute(lm, [OCC])
    imp = from_weights(lm, save_deltas(upd, tmp_path / "rome.safetensors"), [OCC])
    assert imp.layers == upd.layers == (0,) and torch.equal(imp.deltas[0], upd.deltas[0])
    torch.testing.assert_close(imp.value.delta, upd.value.delta, rtol=1e-5, atol=1e-4)
    a, b = (gp.probes.tolerance_radius(lm, u, trials=4) for u in (upd, imp))
    assert a["value"][0] > 0 and bool(a["predicted"][0]) == bool(b["predicted"][0])  # the case has a radius
    # the same grid point (the step, 2% of ‖h‖, agrees to rounding): the same radius
    assert round(a["value"][0] / a["step"][0]) == round(b["value"][0] / b["step"][0])
    assert b["value"][0] == pytest.approx(a["value"][0], rel=1e-5)


def test_diagnose_of_an_import_gives_the_editors_verdicts(tmp_path):
    """``gp.diagnose(edited=...)`` on the saved ΔW of a single-layer ROME edit: the same measurements as diagnosing
    the editor where the inputs are the same (success, Δ, ρ, key cosines) and the same verdicts; the numbers that
    need the editor's settings are None and listed as not available."""
    lm = gp.load_model("toy-llama", device="cpu")
    quiet = {"trials": 4, "log": lambda s: None}
    # the edit first: diagnosing builds the preset's covariance sample for its counterfactual rules, which the
    # statistics cache then serves to a later ROME as well
    upd = gp.editors.get("rome", config=gp.editors.preset_for(lm).with_(**ROME_SET)).compute(lm, [OCC])
    ref = gp.diagnose(lm, [OCC], editor="rome", overrides=ROME_SET, **quiet)
    assert ref["edit"]["delta_norms"] == {"0": pytest.approx(float(upd.deltas[0].norm()), rel=1e-6)}  # the same edit
    snap = _snapshot(lm)
    got = gp.diagnose(lm, [OCC], edited=save_deltas(upd, tmp_path / "d.safetensors"), out=tmp_path / "r", **quiet)
    assert _unchanged(lm, snap) and got["weights_unchanged"]
    assert got["editor"] == "imported" and got["editor_mode"] == "imported" and got["editor_rule"] is None
    assert got["run"] is None and got["imported"]["origin"] == str(tmp_path / "d.safetensors")
    assert "delta_covariance, delta_identity, amplification" in got["imported"]["not_available"]
    assert len(got["measurements"]) == len(ref["measurements"]) == 3
    for m, r in zip(got["measurements"], ref["measurements"]):
        assert (m.case_id, m.form, m.layer) == (r.case_id, r.form, r.layer)
        for k in ("success_before", "success_after", "target_prob_after", "token_acc_after", "delta", "key_cosine",
                  "value_predicts", "n_prompts", "criterion"):
            assert getattr(m, k) == getattr(r, k), (m.form, k)
        assert m.rho == pytest.approx(r.rho, rel=1e-5) and m.rho > 0
        for k in ("delta_covariance", "delta_identity", "amplification", "conflict", "kck", "value_steps_run",
                  "value_steps", "value_clamp", "lam"):
            assert getattr(m, k) is None, (m.form, k)
        assert r.delta_covariance is not None and r.value_steps_run is not None
    for v, w in zip(got["verdicts"], ref["verdicts"]):
        assert (v.status, v.ok) == (w.status, w.ok)
        assert set(v.rules) == set(w.rules) - {"covariance-amplifies"}  # its input (amplification) is not available
        assert v.remedy_commands == ()  # an imported edit cannot be recomputed with other options
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["imported"]["name"] == "imported" and data["run"] is None
    assert "not available for an imported edit" in (tmp_path / "r" / "report.md").read_text()


# ---- refusals ------------------------------------------------------------------------------------------
def _refused(lm, edited, match, error=GeomprobeError, requests=REQUESTS):
    snap = _snapshot(lm)
    with pytest.raises(error, match=match) as e:
        from_weights(lm, edited, requests)
    assert "\n" not in str(e.value)
    assert _unchanged(lm, snap)
    return str(e.value)


def _rewrite(lm, l):
    return f"{lm.spec.rewrite_name(l)}.weight"


def test_refuses_another_architecture_or_shape(tiny_lms, tiny_dirs, tmp_path):
    lm = tiny_lms["llama"]
    d, m = lm.d_model, lm.d_mlp
    _refused(lm, tiny_lms["gpt2"].model.state_dict(), "parameter name")  # other names
    _refused(lm, tiny_dirs["gpt2"], "'gpt2' model")  # a saved model of another architecture (config.json)
    sd = {k: v.clone() for k, v in lm.model.state_dict().items()}
    sd[_rewrite(lm, 0)] = torch.zeros(d, m + 1)
    _refused(lm, sd, "shape")
    _refused(lm, {_rewrite(lm, 1): torch.zeros(m, d)}, "shape")  # partial, transposed for a Linear
    _refused(lm, {"model.layers.7.mlp.down_proj.weight": torch.zeros(d, m)}, "layers beyond its 3")
    fewer = {k: v for k, v in sd.items() if ".layers.2." not in k}
    fewer[_rewrite(lm, 0)] = lm.weight(0).detach() + 1.0
    _refused(lm, fewer, "lacks")
    _refused(lm, {_rewrite(lm, 0): (lm.weight(0).detach() + 1).to(torch.bfloat16)}, "dtype")
    # per-layer ΔW of the wrong shape or layer
    _refused(lm, {0: torch.ones(d, m + 1)}, r"not \(d_model, d_mlp\)")
    _refused(lm, {0: torch.ones(m, d)}, r"not \(d_model, d_mlp\)")  # a Linear's ΔW must be out×in
    _refused(lm, {5: torch.ones(d, m)}, "layers 0..2")
    _refused(lm, {"3": torch.ones(d, m)}, "layers 0..2")
    _refused(lm, {0: torch.ones(d, m), _rewrite(lm, 1): torch.ones(d, m)}, "mix")
    _refused(lm, {0: (torch.ones(d), torch.ones(m))}, "not a tensor")
    _refused(lm, {0: torch.ones(d, m, dtype=torch.int64)}, "floating point")


def test_refuses_non_finite_values(tiny_lms):
    lm = tiny_lms["llama"]
    bad = torch.zeros(lm.d_model, lm.d_mlp)
    bad[3, 4] = float("nan")
    _refused(lm, {1: bad}, "NaN/Inf", NumericalError)
    w = lm.weight(1).detach().clone()
    w[0, 0] = float("inf")
    _refused(lm, {_rewrite(lm, 1): w}, "NaN/Inf", NumericalError)


def test_refuses_an_edit_that_changed_nothing(tiny_lms, tmp_path):
    lm = tiny_lms["llama"]
    msg = "the edited weights equal the model's: nothing to diagnose"
    assert msg in _refused(lm, {_rewrite(lm, l): lm.weight(l).detach().clone() for l in range(lm.n_layers)}, msg)
    _refused(lm, {k: v.clone() for k, v in lm.model.state_dict().items()}, msg)
    _refused(lm, {0: torch.zeros(lm.d_model, lm.d_mlp)}, msg)
    _refused(lm, {}, msg)


@pytest.mark.parametrize("kind", KINDS)
def test_refuses_changes_outside_the_mlp_output_projections(tiny_lms, kind):
    lm = tiny_lms[kind]
    sd = {k: v.clone() for k, v in lm.model.state_dict().items()}
    sd[_rewrite(lm, 1)] = sd[_rewrite(lm, 1)] + 0.01  # the edit proper ...
    attn = next(k for k in sd if "attn" in k and k.endswith("weight"))
    sd[attn] = sd[attn] + 0.01  # ... and a fine-tuned attention weight
    msg = _refused(lm, sd, "besides the MLP output projection")
    assert attn in msg
    if kind == "gpt2":  # the projection's bias is outside too: the probes assume only W changed
        bias = f"{lm.spec.rewrite_name(0)}.bias"
        assert bias in _refused(lm, {bias: lm.bias(0).detach() + 1}, "besides")


def test_refuses_unreadable_inputs(tiny_lms, tmp_path):
    lm = tiny_lms["llama"]
    _refused(lm, tmp_path / "missing", "no edited weights")
    (tmp_path / "empty").mkdir()
    _refused(lm, tmp_path / "empty", "no model.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    _refused(lm, tmp_path / "junk.safetensors", "safetensors")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    _refused(lm, tmp_path / "list.pt", "not a state dict")
    _refused(lm, 3, "pass a state dict")
    _refused(lm, {0: torch.ones(lm.d_model, lm.d_mlp)}, "no requests", requests=[])
