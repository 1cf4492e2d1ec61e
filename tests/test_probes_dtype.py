"""Every probe on a bfloat16 model: forwards in the model's dtype, linear algebra in fp32/fp64, results on
the layer's device, finite, and close to the float32 run; the weights stay bf16 and untouched.

Runs on the CPU everywhere and again on CUDA where there is one (``gpu`` mark: skipped without CUDA).
"""

import math

import pytest
import torch

import geomprobe as gp
from geomprobe.editors.presets import preset_for
from tiny import fact_update

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _edit(device: str, dtype: str):
    lm = gp.load_model("toy-llama", device=device, dtype=dtype)
    reqs = gp.load_requests("toy")  # two subjects, four relations each
    cfg = preset_for(lm).with_(n_tokens=3000, value_steps=8)
    weights = {l: lm.weight(l).detach().clone() for l in cfg.layers}
    upd = gp.editors.get("memit-merge", config=cfg).compute(lm, reqs)
    C = gp.stats.key_covariance(lm, [upd.layers[-1]], corpus=cfg.corpus, n_tokens=cfg.n_tokens, progress=False,
                                max_len=cfg.max_len)[upd.layers[-1]].C
    return lm, reqs, cfg, weights, upd, C


@pytest.fixture(scope="module", params=DEVICES)
def runs(request):
    return {dtype: _edit(request.param, dtype) for dtype in ("float32", "bfloat16")}


def _finite(df, column="value"):
    return len(df) > 0 and df[column].map(lambda x: math.isfinite(float(x))).all()


def test_edit_and_covariance_in_bf16_keep_fp32_algebra_and_the_weights(runs):
    lm, _, cfg, weights, upd, C = runs["bfloat16"]
    assert lm.dtype == torch.bfloat16 and C.dtype in (torch.float32, torch.float64)
    for l in cfg.layers:
        assert lm.weight(l).dtype == torch.bfloat16 and torch.equal(lm.weight(l), weights[l])
        assert upd.deltas[l].dtype in (torch.float32, torch.float64) and torch.isfinite(upd.deltas[l]).all()
    with upd.applied(lm):
        assert not torch.equal(lm.weight(cfg.layers[-1]), weights[cfg.layers[-1]])
    assert all(torch.equal(lm.weight(l), weights[l]) for l in cfg.layers)  # bit-exact revert in bf16


def test_tolerance_fast_and_reference_agree_in_bf16(runs):
    lm, reqs, *_ = runs["bfloat16"]
    upd = fact_update(lm, reqs[:4], layer=0)
    h = float(upd.value.h.norm(dim=0).mean())  # a coarse grid: the reference estimator is slow by design
    kw = {"trials": 10, "step": 0.05 * h, "max_radius": 2 * h}
    ref = gp.probes.tolerance_radius(lm, upd, method="reference", **kw)
    fast = gp.probes.tolerance_radius(lm, upd, method="fast", **kw)
    assert ref["predicted"].all() and _finite(fast)
    assert ((ref["value"] - fast["value"]).abs() <= ref["step"] + 1e-9).all(), (ref["value"], fast["value"])


def test_keys_deviation_and_whitened_similarity_in_bf16_match_fp32(runs):
    out = {}
    for dtype, (lm, reqs, _, _, upd, C) in runs.items():
        layer = upd.layers[-1]
        ks = gp.probes.key_similarity(lm, reqs, [layer])
        dev = gp.probes.activation_deviation(lm, upd, rules=("update", "covariance", "identity"))
        wh = gp.probes.whitened_key_similarity(lm, reqs, layer, C.to(lm.device_of(layer)))
        assert _finite(ks) and _finite(dev) and _finite(wh), dtype
        out[dtype] = (ks["value"].to_numpy(), wh[wh["metric"] == "cosine"]["value"].to_numpy(),
                      wh[wh["metric"] == "whitened_similarity"]["value"].to_numpy())
    # forwards differ by bf16 rounding only: key cosines agree to a couple of hundredths ...
    assert abs(out["bfloat16"][0] - out["float32"][0]).max() < 0.05
    assert abs(out["bfloat16"][1] - out["float32"][1]).max() < 0.05
    # ... while C^-1 amplifies the rounding noise on its low-variance directions (measured: up to 0.12)
    assert abs(out["bfloat16"][2] - out["float32"][2]).max() < 0.25


def _rel(a, b):
    return abs(a - b) / abs(b)


def test_conflict_spectrum_and_drift_in_bf16(runs):
    """The bf16 run's gradient conflicts, covariance spectrum and weight drift match the float32 run's.

    The two runs differ by bf16 rounding in the forwards and backwards only (the probes' algebra is fp32/fp64),
    which moves these numbers by the measured amounts in the comments; a probe computing on the wrong
    tensors, in bf16 arithmetic, or skipping the edit moves them by far more.
    """
    out = {}
    for dtype, (lm, reqs, cfg, _, upd, C) in runs.items():
        conflict = gp.probes.gradient_conflict(update=upd)
        spec = gp.probes.covariance_spectrum(C, layer=upd.layers[-1])
        W0 = lm.weight(upd.layers[-1]).detach().clone()
        with upd.applied(lm):
            W1 = lm.weight(upd.layers[-1]).detach().clone()
        drift = gp.probes.subspace_drift(W0, [W0, W1], k=4, n_directions=2)
        assert _finite(conflict) and _finite(spec) and _finite(drift), dtype
        out[dtype] = conflict, spec.set_index(["metric", "rank"])["value"], drift.set_index(["step", "metric", "index"])
    (cf, sf, df), (cb, sb, db) = out["float32"], out["bfloat16"]

    # gradient conflicts: the same pairs at the same steps; scores agree (measured on the CPU: largest gap 0.07,
    # mean 0.009, while the scores themselves spread with a standard deviation of 0.2)
    pair = ["subject", "relation_a", "relation_b", "step"]
    assert len(cf) > 0 and cf[pair].equals(cb[pair])
    gap = (cf["value"] - cb["value"]).abs()
    assert gap.max() < 0.15 and gap.mean() < 0.03, gap.describe()

    # key covariance spectrum: trace (measured 0.5%), top eigenvalues (measured ≤ 8%), effective rank (4%)
    ef, eb = sf["eigenvalue"].to_numpy(), sb["eigenvalue"].to_numpy()
    assert len(ef) == len(eb) == runs["float32"][0].d_mlp
    assert _rel(eb.sum(), ef.sum()) < 0.02
    assert (_rel(eb[:3], ef[:3]) < 0.15).all(), (ef[:3], eb[:3])
    assert _rel(sb.xs("effective_rank").iloc[0], sf.xs("effective_rank").iloc[0]) < 0.1

    # drift: step 1 compares W0 with itself (1 in both runs); step 2 the edited weight: subspace overlaps within
    # 0.05 (measured ≤ 0.011) and the edit's size, ‖W1‖/‖W0‖ (measured 4.6 vs 5.5, far from 1), within 30%
    for d in (df, db):
        assert d.loc[(1, "LS_k"), "value"].iloc[0] == pytest.approx(1.0, abs=1e-4)
        assert d.loc[(1, "SS"), "value"].to_numpy() == pytest.approx(1.0, abs=1e-4)
        assert d.loc[(1, "norm_ratio"), "value"].iloc[0] == pytest.approx(1.0, abs=1e-6)
    for metric in ("LS_k", "SS", "topk_energy"):
        f, b = df.loc[(2, metric), "value"].to_numpy(), db.loc[(2, metric), "value"].to_numpy()
        assert len(f) == len(b) > 0 and abs(f - b).max() < 0.05, (metric, f, b)
    nf, nb = df.loc[(2, "norm_ratio"), "value"].iloc[0], db.loc[(2, "norm_ratio"), "value"].iloc[0]
    assert nf > 1.5 and _rel(nb, nf) < 0.3, (nf, nb)
