"""Probes against independent direct computations on small cases."""

import numpy as np
import pytest
import torch

import geomprobe as gp
from geomprobe.data.requests import EditRequest
from geomprobe.editors.update import EditUpdate
from geomprobe.editors.value import ValueResult
from geomprobe.errors import GeomprobeError
from geomprobe.probes import (activation_deviation, conflict_score, conflict_table, covariance_spectrum,
                              drift_in_spectrum, subspace_drift, whitened_similarity)


def test_conflict_of_identical_is_0_and_of_orthogonal_is_1():
    torch.manual_seed(0)
    g = torch.randn(50)
    assert conflict_score(g, g) == pytest.approx(0.0, abs=1e-12)
    assert conflict_score(g, -3 * g) == pytest.approx(0.0, abs=1e-12)
    e1, e2 = torch.eye(50)[0], torch.eye(50)[1]
    assert conflict_score(e1, e2) == pytest.approx(1.0)
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    assert conflict_score(a, b) == pytest.approx(1 - 1 / np.sqrt(2))
    with pytest.raises(GeomprobeError):
        conflict_score(torch.zeros(3), torch.ones(3))
    with pytest.raises(GeomprobeError):
        conflict_score(torch.tensor([float("nan"), 1.0]), torch.ones(2))


def test_conflict_table_pairs_relations_of_one_subject():
    grads = {0: {("A", "r1"): torch.tensor([1.0, 0]), ("A", "r2"): torch.tensor([0, 1.0]),
                 ("B", "r1"): torch.tensor([1.0, 1.0])}}
    df = conflict_table(grads, "x")
    assert len(df) == 1 and df.iloc[0]["value"] == pytest.approx(1.0) and df.iloc[0]["subject"] == "A"


def test_whitened_similarity_matches_numpy():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6))
    C = A @ A.T + 0.5 * np.eye(6)
    k1, k2 = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    Ci = np.linalg.inv(C + 1e-6 * np.trace(C) / 6 * np.eye(6))
    want = [k1[:, i] @ Ci @ k2[:, i] / np.sqrt((k1[:, i] @ Ci @ k1[:, i]) * (k2[:, i] @ Ci @ k2[:, i]))
            for i in range(3)]
    got = whitened_similarity(torch.tensor(k1), torch.tensor(k2), torch.tensor(C))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(whitened_similarity(torch.tensor(k1), torch.tensor(k1), torch.tensor(C)).numpy(), 1,
                               rtol=1e-6)
    with pytest.raises(GeomprobeError):
        whitened_similarity(torch.tensor(k1), torch.tensor(k2[:5]), torch.tensor(C))


def test_covariance_spectrum_and_drift_amplification():
    torch.manual_seed(0)
    evals = torch.tensor([100.0, 10.0, 1.0, 0.01])
    Q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    C = Q @ torch.diag(evals.double()) @ Q.T
    df = covariance_spectrum(C, layer=3)
    ev = df[df.metric == "eigenvalue"]["value"].to_numpy()
    np.testing.assert_allclose(ev, evals.numpy(), rtol=1e-6)
    cond = df[df.metric == "condition_number"]["value"].item()
    assert cond == pytest.approx(1e4, rel=1e-4)
    # a drift along the lowest-variance direction sits fully in the low half and is amplified by C⁻¹
    dk = Q[:, 3:4]
    R, K = torch.randn(3, 1, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64) * 3
    out = drift_in_spectrum(C, dk, R, K, lam=1.0)
    assert out["low_variance_share"].item() == pytest.approx(1.0, abs=1e-6)
    Cn, Kn, Rn, dkn = C.numpy(), K.numpy(), R.numpy(), dk.numpy()
    dW_c = Rn @ Kn.T @ np.linalg.inv(Cn + Kn @ Kn.T)
    dW_i = Rn @ Kn.T @ np.linalg.inv(np.eye(4) + Kn @ Kn.T)
    want = np.linalg.norm(dW_c @ dkn) / np.linalg.norm(dW_i @ dkn)
    assert out["amplification"].item() == pytest.approx(want, rel=1e-4)
    assert want > 10  # the covariance trap: a low-variance drift is amplified


def test_subspace_drift_is_one_for_unchanged_weights_and_drops_for_a_big_edit():
    torch.manual_seed(0)
    W0 = torch.randn(20, 30)
    df = subspace_drift(W0, [W0.clone(), W0 + 10 * torch.randn(20, 30)], k=5, n_directions=3)
    ls = df[df.metric == "LS_k"].set_index("step")["value"]
    assert ls[1] == pytest.approx(1.0, abs=1e-6) and ls[2] < 0.9
    nr = df[df.metric == "norm_ratio"].set_index("step")["value"]
    assert nr[1] == pytest.approx(1.0) and nr[2] > 2
    with pytest.raises(GeomprobeError):
        subspace_drift(W0, [])


def test_activation_deviation_equals_hand_computation(tiny_lms):
    lm = tiny_lms["llama"]
    reqs = (EditRequest("france", "capital", "the capital of {} is", "rome", "paris",
                        queries=(gp.Query("what is the capital of france ?", "question"),)),)
    layer = 1
    g = torch.Generator().manual_seed(0)
    dW = torch.randn(lm.d_model, lm.d_mlp, generator=g)
    K, R = torch.randn(lm.d_mlp, 1, generator=g), torch.randn(lm.d_model, 1, generator=g)
    value = ValueResult(layer, ("france",), ((0,),), torch.zeros(lm.d_model, 1), torch.zeros(lm.d_model, 1), (0.0,),
                        {}, 1, 0.0)
    upd = EditUpdate("manual", (layer,), {layer: dW}, {layer: K}, {layer: R}, value.z, value.h, ("france",), reqs,
                     hparams={"layers": [layer]}, value=value, model=dict(lm.identity))
    df = activation_deviation(lm, upd, forms=("question",), rules=("update", "identity"))
    from geomprobe.data.forms import eval_prompts, render

    q = eval_prompts(reqs[0], "question", lm.tokenizer)[0]
    k = gp.keys(lm, [render(reqs[0].prompt, "france", "declarative"), q], None, [layer])
    dk = k[1, 0] - k[0, 0]
    got = df.set_index("rule")["value"]
    assert got["update"] == pytest.approx(float((dW @ dk).norm()), rel=1e-5)
    dWi = gp.linalg.isotropic_delta(R, K, 1.0)
    assert got["identity"] == pytest.approx(float((dWi @ dk).norm()), rel=1e-5)
    with pytest.raises(GeomprobeError):
        activation_deviation(lm, upd, layers=[0])
