"""Causal probes of issue 11 (edit_drift, patch_transfer / delta_scaling, like-for-like and directional tolerance)
against independent computations: separate full forwards, hooks, brute force over the grid.

The edit is built by hand on the tiny llama (3 blocks, d = 32; its random LM head scaled ×50 so that predictions can
be confident), edited layers (0, 1), L = 1:

* δ per group, optimised here by gradient ascent of log P(target_new) on the group's declarative prompts
  (France's two relations share one δ, as a merged editor's subject column does; Germany has its own);
* ΔW_0 a small random matrix (so the edited keys at layer 1 differ from the unedited ones), and ΔW_1 the
  minimal-norm solution of ``ΔW_1 k_1 = δ`` on the unedited keys: the edited model writes about δ on the
  declarative prompts, something else on the question / instruction prompts.

Each probe leaves the weights bit-identical and no hook behind (checked after every call).
"""

from dataclasses import replace

import math

import pytest
import pandas as pd
import torch

import geomprobe as gp
from geomprobe import prefix
from geomprobe.data.forms import eval_prompts, render
from geomprobe.data.requests import EditRequest, Query
from geomprobe.editors.update import EditUpdate
from geomprobe.editors.value import ValueResult
from geomprobe.errors import GeomprobeError
from geomprobe.hooks import active_hooks, add_to_residual, read
from geomprobe.positions import tokenize
from geomprobe.probes.tolerance import _Prompt
from geomprobe.scoring import target_logprob, with_targets
from tiny import save_tiny

LAYERS, L = (0, 1), 1
FORMS = ("declarative", "question", "instruction")


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _requests():
    """Declaratives end with the subject (on a random model δ reaches the next-token prediction through the
    residual stream there; through attention alone, as on the question / instruction prompts, it barely does)."""
    q = lambda text, form: Query(text, form)  # noqa: E731
    return (
        EditRequest("france", "capital", "the capital of {}", "berlin", "paris",
                    queries=(q("what is the capital of france ?", "question"),
                             q("where is the capital of france ?", "question"),
                             q("tell me the capital of france .", "instruction")), case_id="fr-capital"),
        EditRequest("france", "city", "the city located in {}", "berlin", "paris",
                    queries=(q("what city is located in france ?", "question"),
                             q("tell me the city located in france .", "instruction")), case_id="fr-city"),
        EditRequest("germany", "capital", "the capital of {}", "paris", "berlin",
                    queries=(q("what is the capital of germany ?", "question"),
                             q("tell me in a few words the capital of germany .", "instruction")),
                    case_id="de-capital"),
    )


def _optimise(lm, reqs, steps=200):
    """δ (d,) raising log P(target_new) on every declarative prompt of ``reqs`` above log 0.9 (prefix-cached)."""
    ps = [_Prompt(lm, render(r.prompt, r.subject, "declarative"), r.target_new, torch.zeros(lm.d_model), L)
          for r in reqs]
    sfx = [p.suffix() for p in ps]
    d = torch.zeros(lm.d_model, requires_grad=True)
    opt = torch.optim.Adam([d], lr=0.3)
    for _ in range(steps):
        lp = torch.stack([p.logprob(prefix.run(lm, s, rows=torch.zeros(1, dtype=torch.long), add=d[None],
                                               head=(p.at - s.start)[None]))[0] for p, s in zip(ps, sfx)])
        if (lp > math.log(0.9)).all():
            break
        opt.zero_grad()
        (-lp.sum()).backward()
        opt.step()
    assert (lp > math.log(0.9)).all(), lp
    return d.detach()


def _keys(lm, reqs, layer):
    b = tokenize(lm.tokenizer, [render(r.prompt, r.subject, "declarative") for r in reqs])
    with torch.no_grad(), read(lm, [layer], ("key", "resid"), positions=b.subject_last) as rd:
        lm.forward(b)
    return rd["key"][layer].float().T, rd["resid"][layer].float().T  # (m, n), (d, n)


@pytest.fixture(scope="module")
def edit(tmp_path_factory):
    lm = gp.load_model(str(save_tiny("llama", tmp_path_factory.mktemp("tiny") / "llama")), device="cpu")
    for p in lm.model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():  # a random head is near-uniform (P ≈ 1/49): sharpen it so δ can make a target likely
        lm.model.get_output_embeddings().weight.mul_(50)
    reqs = _requests()
    groups, members = ("france", "germany"), ((0, 1), (2,))
    delta = torch.stack([_optimise(lm, [reqs[i] for i in m]) for m in members], dim=1)  # (d, 2)
    K, H = _keys(lm, reqs, L)
    h = torch.stack([H[:, list(m)].mean(1) for m in members], dim=1)
    D = torch.stack([delta[:, 0], delta[:, 0], delta[:, 1]], dim=1)  # per request
    dW1 = D @ torch.linalg.pinv(K)
    dW0 = 0.05 * torch.randn(lm.d_model, lm.d_mlp, generator=torch.Generator().manual_seed(0))
    value = ValueResult(L, groups, members, h, delta, (0.0,), {}, 1, 0.0, mode="joint")
    Kg = torch.stack([K[:, list(m)].mean(1) for m in members], dim=1)
    upd = EditUpdate("manual", LAYERS, {0: dW0, 1: dW1}, {0: Kg.clone(), 1: Kg}, {0: dW0 @ Kg, 1: dW1 @ Kg},
                     h + delta, h, groups, reqs, hparams={"layers": list(LAYERS)}, value=value,
                     model=dict(lm.identity))
    return lm, upd


@pytest.fixture
def untouched(edit):
    """Asserts after the test: the weights are bit-identical and no hook is registered."""
    lm, _ = edit
    before = [p.detach().clone() for p in lm.model.parameters()]
    yield
    assert active_hooks(lm.model) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, lm.model.parameters()))


def _check_clean(lm, before):
    assert active_hooks(lm.model) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, lm.model.parameters()))


def _params(lm):
    return [p.detach().clone() for p in lm.model.parameters()]


def _resid(lm, prompt, layers):
    """Residuals and keys at the subject's last token of one prompt: a plain single-prompt forward."""
    b = tokenize(lm.tokenizer, [prompt])
    with torch.no_grad(), read(lm, layers, ("key", "resid"), positions=b.subject_last) as rd:
        lm.forward(b)
    return ({l: rd["resid"][l][0].float() for l in layers}, {l: rd["key"][l][0].float() for l in layers})


def _logp(lm, prompt, target, vectors=None, layer=L):
    """log P(target | prompt) (rows,) by full forwards, ``vectors`` (rows, d) added at (layer, subject)."""
    tb = with_targets(lm.tokenizer, [prompt], [target])
    n = 1 if vectors is None else len(vectors)
    batch = tb.batch
    rep = type(batch)(**{f: getattr(batch, f).expand(n, *getattr(batch, f).shape[1:]) for f in
                         batch.__dataclass_fields__}) if n > 1 else batch
    with torch.no_grad():
        if vectors is None:
            logits = lm.forward(rep)
        else:
            with add_to_residual(lm, layer, rep.subject_last, vectors):
                logits = lm.forward(rep)
    return target_logprob(logits, tb.labels.expand(n, -1))


def test_written_share_and_drift_equal_hand_computation(edit, untouched):
    lm, upd = edit
    df = gp.probes.edit_drift(lm, upd)
    reqs = upd.requests
    n_prompts = sum(len(eval_prompts(r, f, lm.tokenizer)) for r in reqs for f in FORMS)
    assert len(df) == n_prompts * len(LAYERS)
    assert set(df.columns) >= {"editor", "case_id", "subject", "relation", "form", "prompt_idx", "layer",
                               "written_share", "off_delta_norm", "cosine", "v_norm", "delta_norm", "drift_norm",
                               "cumulative_drift", "paper_delta"}
    dev = gp.probes.activation_deviation(lm, upd, layers=list(LAYERS))
    for i, r in enumerate(reqs):
        delta = upd.value.delta[:, 0 if i < 2 else 1]  # France's requests share the first column
        decl = render(r.prompt, r.subject, "declarative")
        h_d, k_d = _resid(lm, decl, LAYERS)
        with upd.applied(lm):
            he_d, ke_d = _resid(lm, decl, LAYERS)
        for form in FORMS:
            for j, prompt in enumerate(eval_prompts(r, form, lm.tokenizer)):
                h, k = _resid(lm, prompt, LAYERS)  # two separate forwards: unedited ...
                with upd.applied(lm):
                    he, ke = _resid(lm, prompt, LAYERS)  # ... and edited
                cum = torch.zeros(lm.d_model)
                for layer in LAYERS:
                    row = df[(df.case_id == r.case_id) & (df.form == form) & (df.prompt_idx == j)
                             & (df.layer == layer)]
                    assert len(row) == 1
                    row = row.iloc[0]
                    v = he[layer] - h[layer]
                    share = float(v @ delta / (delta @ delta))
                    assert row.written_share == pytest.approx(share, rel=1e-4, abs=1e-5)
                    assert row.off_delta_norm == pytest.approx(float((v - share * delta).norm()), rel=1e-4, abs=1e-5)
                    assert row.cosine == pytest.approx(float(v @ delta / v.norm() / delta.norm()), rel=1e-4, abs=1e-5)
                    assert row.v_norm == pytest.approx(float(v.norm()), rel=1e-4)
                    assert row.delta_norm == pytest.approx(float(delta.norm()), rel=1e-6)
                    v_d = he_d[layer] - h_d[layer]
                    assert row.drift_norm == pytest.approx(float((v - v_d).norm()), rel=1e-4, abs=1e-5)
                    dW = upd.deltas[layer]
                    cum = cum + dW @ (ke[layer] - ke_d[layer])
                    assert row.cumulative_drift == pytest.approx(float(cum.norm()), rel=1e-4, abs=1e-5)
                    paper = float((dW @ (k[layer] - k_d[layer])).norm())
                    assert row.paper_delta == pytest.approx(paper, rel=1e-4, abs=1e-5)
                    if form != "declarative":  # the paper's Δ is activation_deviation's value
                        d = dev[(dev.case_id == r.case_id) & (dev.form == form) & (dev.prompt_idx == j)
                                & (dev.layer == layer)]
                        assert row.paper_delta == pytest.approx(float(d["value"].iloc[0]), rel=1e-4, abs=1e-5)
    last = df[df.layer == L]
    # the measurement discriminates: the edit writes ≈ δ on the declarative prompts, not on the others,
    # and the edited keys (ΔW_0 ≠ 0) make the cumulative drift differ from the paper's single-layer Δ
    assert (last[last.form == "declarative"].written_share > 0.8).all(), last.written_share.tolist()
    assert ((last[last.form != "declarative"].written_share - 1).abs() > 0.05).any()
    other = last[last.form != "declarative"]
    assert ((other.cumulative_drift - other.paper_delta).abs() > 1e-3).all()


def test_update_without_value_uses_z_minus_h(edit, untouched):
    lm, upd = edit
    df = gp.probes.edit_drift(lm, upd, forms=("question",))
    imported = replace(upd, value=None)
    got = gp.probes.edit_drift(lm, imported, forms=("question",))
    cols = ["written_share", "off_delta_norm", "delta_norm", "drift_norm", "cumulative_drift"]
    assert got[cols].to_numpy() == pytest.approx(df[cols].to_numpy(), rel=1e-5, abs=1e-5)
    with pytest.raises(GeomprobeError, match="column"):
        gp.probes.edit_drift(lm, replace(imported, columns=("x", "y")), forms=("question",))


def test_patching_equals_add_to_residual_and_the_edited_model(edit, untouched):
    lm, upd = edit
    df = gp.probes.patch_transfer(lm, upd)
    assert len(df) == sum(len(eval_prompts(r, f, lm.tokenizer)) for r in upd.requests for f in FORMS)
    assert (df.criterion == "prob>0.5").all()
    for _, row in df.iterrows():
        i = [r.case_id for r in upd.requests].index(row.case_id)
        r = upd.requests[i]
        delta = upd.value.delta[:, 0 if i < 2 else 1]
        prompt = eval_prompts(r, row.form, lm.tokenizer)[row.prompt_idx]
        lp0, lp1 = _logp(lm, prompt, r.target_new, torch.stack([0 * delta, delta])).tolist()
        assert math.log(row.p_unedited) == pytest.approx(lp0, abs=1e-4)
        assert math.log(row.p_patched) == pytest.approx(lp1, abs=1e-4)
        assert row.patched_success == (lp1 > math.log(0.5))
        h, _ = _resid(lm, prompt, [L])
        with upd.applied(lm):
            he, _ = _resid(lm, prompt, [L])
            lpe = float(_logp(lm, prompt, r.target_new)[0])
            # the edited model with its residual at (L, subject) overridden by the unedited h + δ
            lpp = float(_logp(lm, prompt, r.target_new, (h[L] + delta - he[L])[None])[0])
        assert math.log(row.p_edited) == pytest.approx(lpe, abs=1e-4)
        assert row.edited_success == (lpe > math.log(0.5))
        assert math.log(row.p_edited_patched) == pytest.approx(lpp, abs=1e-4)
        assert row.edited_patched_success == (lpp > math.log(0.5))
    # the tests discriminate: δ is needed on the edit prompts, and some prompts fail even when patched
    decl = df[df.form == "declarative"]
    assert decl.patched_success.all() and not decl.unedited_success.any()
    assert not df.patched_success.all()
    assert (df.p_edited_patched != df.p_patched).any()  # the edited prefix matters


def test_scaling_curve_at_one_equals_patched_success(edit, untouched):
    lm, upd = edit
    scales = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
    curve = gp.probes.delta_scaling(lm, upd, scales=scales)
    tr = gp.probes.patch_transfer(lm, upd, edited=False)
    assert "p_edited" not in tr.columns
    assert len(curve) == len(tr) * len(scales)
    key = ["case_id", "form", "prompt_idx"]
    one = curve[curve.scale == 1.0].set_index(key).sort_index()
    t = tr.set_index(key).sort_index()
    assert (one.success == t.patched_success).all()
    assert one.p_target.to_numpy() == pytest.approx(t.p_patched.to_numpy(), rel=1e-5)
    zero = curve[curve.scale == 0.0].set_index(key).sort_index()
    assert (zero.success == t.unedited_success).all()
    for k, g in curve.groupby(key):
        ok = g.sort_values("scale")
        first = ok[ok.success].scale.min() if ok.success.any() else math.nan
        c = t.loc[k, "crossing_scale"]
        assert (math.isnan(c) and math.isnan(first)) or c == first
    # one prompt's curve against full forwards with s·δ added
    r = upd.requests[0]
    prompt = eval_prompts(r, "question", lm.tokenizer)[0]
    lp = _logp(lm, prompt, r.target_new, torch.stack([s * upd.value.delta[:, 0] for s in scales]))
    g = curve[(curve.case_id == r.case_id) & (curve.form == "question") & (curve.prompt_idx == 0)].sort_values("scale")
    assert g.p_target.map(math.log).to_numpy() == pytest.approx(lp.numpy(), abs=1e-4)
    assert 0 < t.crossing_scale.min() and t.crossing_scale.isna().any()  # crossings inside and outside the grid


def _brute_radius(lm, prompt, target, delta, u, step, k_max, threshold=0.5):
    """Largest k with P(target) > threshold at δ + k'·step·u for every k' ≤ k (full forwards); -1 if none."""
    vectors = torch.stack([delta + k * step * u for k in range(k_max + 1)])
    ok = (_logp(lm, prompt, target, vectors) > math.log(threshold)).tolist()
    k = -1
    while k < k_max and ok[k + 1]:
        k += 1
    return k


def _grid(upd, share=0.04):
    """(step, max_radius) relative to the mean ‖δ‖: at initialisation the tiny llama's residuals are ~25× smaller
    than the δ that reach a target, so the default grid (relative to ‖h‖) would end far inside the interesting range."""
    d = float(upd.value.delta.norm(dim=0).mean())
    return share * d, 2 * d


def test_directional_radius_equals_brute_force(edit, untouched):
    lm, upd = edit
    step, max_radius = _grid(upd)
    df = gp.probes.directional_tolerance(lm, upd, directions=("-delta", "drift", "form-drift"), step=step,
                                         max_radius=max_radius)
    assert {"rho_along_delta", "rho_along_drift", "rho_along_form_drift", "miss_norm"} <= set(df.columns)
    k_max = int(max_radius / step + 1e-9)
    inside = 0
    for _, row in df.iterrows():
        i = [r.case_id for r in upd.requests].index(row.case_id)
        r = upd.requests[i]
        delta = upd.value.delta[:, 0 if i < 2 else 1]
        prompt = eval_prompts(r, row.form, lm.tokenizer)[row.prompt_idx]
        h, _ = _resid(lm, prompt, [L])
        with upd.applied(lm):
            he, _ = _resid(lm, prompt, [L])
        v = he[L] - h[L]
        assert row.miss_norm == pytest.approx(float((v - delta).norm()), rel=1e-4)
        for name, vec in (("rho_along_delta", -delta), ("rho_along_drift", v - delta)):
            k = _brute_radius(lm, prompt, r.target_new, delta, vec / vec.norm(), step, k_max)
            assert row[name] == pytest.approx(max(k, 0) * step, rel=1e-9), (row.case_id, row.form, name)
            assert row.predicted == (k >= 0)
            inside += 0 < k < k_max
        if row.form == "declarative":
            assert math.isnan(row.rho_along_form_drift)
    assert inside >= 3  # radii found strictly inside the grid: the comparison can fail


def test_like_for_like_tolerance(edit, untouched):
    lm, upd = edit
    step, max_radius = _grid(upd, 0.05)
    legacy = gp.probes.tolerance_radius(lm, upd, trials=5, seed=1, step=step, max_radius=max_radius)
    assert "prompt_idx" not in legacy.columns  # the legacy rows are unchanged
    df = gp.probes.tolerance_radius(lm, upd, trials=5, seed=1, forms=FORMS, step=step, max_radius=max_radius)
    assert {"prompt_idx", "rho_form"} <= set(df.columns) and (df.rho_form == df.value).all()
    assert len(df) == sum(len(eval_prompts(r, f, lm.tokenizer)) for r in upd.requests for f in FORMS)
    decl = df[df.form == "declarative"].reset_index(drop=True)
    assert decl.value.tolist() == legacy.value.tolist()  # same prompt, same noise directions
    # on a form prompt the radius is that prompt's own: the reference procedure (full forwards) agrees
    kw = dict(trials=5, seed=1, forms=("declarative", "question"), requests=[0, 2], step=step, max_radius=max_radius)
    fast = gp.probes.tolerance_radius(lm, upd, **kw)
    ref = gp.probes.tolerance_radius(lm, upd, method="reference", **kw)
    assert ((fast.value - ref.value).abs() <= fast.step + 1e-9).all(), (fast.value.tolist(), ref.value.tolist())
    assert ((fast.value > 0) & (fast.value < max_radius - step)).any(), fast.value.tolist()  # inside the grid
    # the unperturbed δ decides `predicted` exactly as patch_transfer's patched state does
    tr = gp.probes.patch_transfer(lm, upd, forms=kw["forms"], requests=kw["requests"], edited=False)
    assert fast.predicted.tolist() == tr.patched_success.tolist()
    assert fast.predicted.any() and not fast.predicted.all()
    assert df.groupby("form").value.mean().nunique() > 1  # forms differ


def test_criteria_are_recorded(edit, untouched):
    lm, upd = edit
    auto = gp.probes.patch_transfer(lm, upd, forms=("declarative",), criterion="auto", edited=False)
    assert (auto.criterion == "beats-true").all() and auto.p_true_patched.notna().all()
    for _, row in auto.iterrows():
        r = next(q for q in upd.requests if q.case_id == row.case_id)
        i = list(upd.requests).index(r)
        delta = upd.value.delta[:, 0 if i < 2 else 1]
        prompt = render(r.prompt, r.subject, "declarative")
        new, true = (float(_logp(lm, prompt, t, delta[None])[0]) for t in (r.target_new, r.target_true))
        assert math.log(row.p_true_patched) == pytest.approx(true, abs=1e-4)
        assert row.patched_success == (new > true)
    no_true = replace(upd, requests=tuple(replace(r, target_true=None) for r in upd.requests))
    assert (gp.probes.patch_transfer(lm, no_true, forms=("declarative",), criterion="auto", edited=False)
            .criterion == "prob>0.5").all()
    with pytest.raises(GeomprobeError, match="target_true"):
        gp.probes.patch_transfer(lm, no_true, criterion="beats-true")
    with pytest.raises(GeomprobeError, match="unknown criterion"):
        gp.probes.delta_scaling(lm, upd, criterion="top1")
    with pytest.raises(GeomprobeError, match="unknown direction"):
        gp.probes.directional_tolerance(lm, upd, directions=("sideways",))
    arg = gp.probes.directional_tolerance(lm, upd, directions=("-delta",), forms=("declarative",),
                                          criterion="argmax")
    assert (arg.criterion == "argmax").all() and arg.threshold.isna().all()


def test_probes_restore_weights_and_hooks_after_an_error(edit, monkeypatch):
    lm, upd = edit
    before = _params(lm)
    real = prefix.run
    calls = {"n": 0}

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("boom")
        return real(*a, **k)

    monkeypatch.setattr(prefix, "run", failing)
    with pytest.raises(RuntimeError, match="boom"):
        gp.probes.patch_transfer(lm, upd, forms=("declarative",))  # fails inside the edited model's pass
    _check_clean(lm, before)
    monkeypatch.setattr(prefix, "run", real)
    for probe in (lambda: gp.probes.edit_drift(lm, upd), lambda: gp.probes.patch_transfer(lm, upd),
                  lambda: gp.probes.directional_tolerance(lm, upd)):
        probe()
        _check_clean(lm, before)


def test_per_form_keeps_the_first_prompts_and_their_numbers(edit, untouched):
    """``per_form`` measures the first prompts of each form only, with the same numbers as the full run."""
    lm, upd = edit
    from geomprobe.probes.transfer import transfer_tests

    full, curve = transfer_tests(lm, upd, forms=FORMS, criterion="auto")
    one, one_curve = transfer_tests(lm, upd, forms=FORMS, criterion="auto", per_form=1)
    assert set(one["prompt_idx"]) == {0} and len(one) == len(upd.requests) * len(FORMS)
    keep = full[full["prompt_idx"] == 0].reset_index(drop=True)
    cols = ["case_id", "form", "patched_success", "edited_patched_success", "crossing_scale"]
    assert keep[cols].equals(one[cols])
    # prefixes are prepared in padded groups (prefix.prepare_many), which differ between the runs: fp32 rounding
    assert torch.allclose(torch.tensor(keep["p_patched"].to_numpy()), torch.tensor(one["p_patched"].to_numpy()),
                          rtol=1e-4, atol=1e-6)
    assert len(one_curve) == len(curve[curve["prompt_idx"] == 0])
    a = gp.probes.directional_tolerance(lm, upd, directions=("drift",), forms=FORMS, criterion="auto", per_form=1)
    b = gp.probes.directional_tolerance(lm, upd, directions=("drift",), forms=FORMS, criterion="auto")
    b = b[b["prompt_idx"] == 0].reset_index(drop=True)
    assert list(a["case_id"]) == list(b["case_id"]) and list(a["form"]) == list(b["form"])
    for col in ("rho_along_drift", "miss_norm"):  # the drift read batches other prompts: fp32 rounding only
        assert torch.allclose(torch.tensor(a[col].to_numpy()), torch.tensor(b[col].to_numpy()), rtol=1e-4,
                              atol=1e-5, equal_nan=True)


def test_searches_in_lock_step_equal_searches_alone(edit, untouched, monkeypatch):
    """Every prompt's grid searches run together (a group's calls in one forward) find the radii and make the calls
    they make one prompt at a time."""
    from geomprobe.probes import tolerance

    lm, upd = edit
    step, max_radius = _grid(upd, 0.05)
    kw = dict(step=step, max_radius=max_radius, criterion="auto")
    out = {}
    for size in (16, 1):
        monkeypatch.setattr(tolerance, "GROUP_PROMPTS", size)
        out[size] = (gp.probes.tolerance_radius(lm, upd, trials=5, seed=1, forms=FORMS, step=step,
                                                max_radius=max_radius),
                     gp.probes.directional_tolerance(lm, upd, directions=("-delta", "drift"), forms=FORMS, **kw))
    for a, b in zip(out[16], out[1]):
        cols = [c for c in a.columns if c != "seconds"]
        pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=False, rtol=1e-5)
    assert len(out[16][0]) > 3 and (out[16][1]["rho_along_drift"] > 0).sum() >= 2
