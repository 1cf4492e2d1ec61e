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
    ref = gp.probes.tolerance_radius(lm, upd, method="reference", trials=10)
    fast = gp.probes.tolerance_radius(lm, upd, method="fast", trials=10)
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


def test_conflict_spectrum_and_drift_in_bf16(runs):
    lm, reqs, cfg, _, upd, C = runs["bfloat16"]
    conflict = gp.probes.gradient_conflict(update=upd)
    assert _finite(conflict) and conflict["value"].between(0, 1).all()
    spec = gp.probes.covariance_spectrum(C, layer=upd.layers[-1])
    assert _finite(spec)
    W0 = lm.weight(upd.layers[-1]).detach()
    with upd.applied(lm):
        W1 = lm.weight(upd.layers[-1]).detach().clone()
    drift = gp.probes.subspace_drift(W0, [W0, W1], k=4, n_directions=2)
    assert _finite(drift)
    ls = drift[drift["metric"] == "LS_k"].set_index("step")["value"]
    assert ls[1] == pytest.approx(1.0, abs=1e-4) and ls[2] <= 1.0 + 1e-4  # step 1: W0 itself, computed
