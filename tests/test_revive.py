"""REVIVE's two-sided filter keeps W₀'s dominant singular triplets exact; the block filter does not.

Every reference here (SVDs, projectors, residuals) is computed independently with numpy in float64.
Measured on the random cases below: ‖U_kᵀΔW'‖, ‖ΔW'V_k‖ and ‖ΔW' − (I−U_kU_kᵀ)ΔW(I−V_kV_kᵀ)‖ are ≤ 3e-8·‖ΔW‖
(float32 output), the relative triplet residual ≤ 7e-8; the block filter leaves ‖U_kᵀΔW'‖ ≈ 0.3–0.6·‖ΔW‖.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import geomprobe as gp
from geomprobe import linalg as la
from geomprobe.errors import GeomprobeError
from geomprobe.probes import subspace_drift

SHAPES = [(40, 60), (60, 40)]
TOL = 1e-6  # relative; the float32 output is accurate to ~1e-8 here


def _t(x: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype)


def _w0(rng: np.random.Generator, d: int, m: int, spectrum: str) -> np.ndarray:
    if spectrum == "gaussian":
        return rng.standard_normal((d, m))
    r = min(d, m)
    Q1, _ = np.linalg.qr(rng.standard_normal((d, r)))
    Q2, _ = np.linalg.qr(rng.standard_normal((m, r)))
    return Q1 @ np.diag(10 * 0.85 ** np.arange(r)) @ Q2.T


def _k_for(S: np.ndarray, tau: float) -> int:
    energy = np.cumsum(S**2)
    return int(np.searchsorted(energy, tau * energy[-1] * (1 - 1e-12)) + 1)


def _check_two_sided(W0: np.ndarray, D: np.ndarray, F: np.ndarray, k: int) -> dict:
    """Assert the three properties of the two-sided filter; return the measured numbers."""
    d, m = W0.shape
    U, S, Vt = np.linalg.svd(W0, full_matrices=False)
    assert k == _k_for(S, 0.9)
    Uk, Vk = U[:, :k], Vt[:k].T
    nD = np.linalg.norm(D)
    # 1. nothing of ΔW' acts on or lands in the dominant subspace
    left, right = np.linalg.norm(Uk.T @ F) / nD, np.linalg.norm(F @ Vk) / nD
    assert left < TOL and right < TOL, (left, right)
    # 2. W₀'s top-k triplets are exact singular triplets of W₀ + ΔW' ...
    We = W0 + F
    res_v = np.linalg.norm(We @ Vk - Uk * S[:k], axis=0) / S[:k]
    res_u = np.linalg.norm(We.T @ Uk - Vk * S[:k], axis=0) / S[:k]
    assert res_v.max() < TOL and res_u.max() < TOL, (res_v.max(), res_u.max())
    # ... and an independent SVD of W₀ + ΔW' contains every σ_i, i < k
    S_e = np.linalg.svd(We, compute_uv=False)
    gap = max(np.abs(S_e - s).min() / s for s in S[:k])
    assert gap < TOL, gap
    # 3. the component outside both subspaces is kept, unchanged
    Pu, Pv = np.eye(d) - Uk @ Uk.T, np.eye(m) - Vk @ Vk.T
    diff = np.linalg.norm(F - Pu @ D @ Pv) / nD
    assert diff < TOL, diff
    return {"left": left, "right": right, "residual": max(res_v.max(), res_u.max()), "diff": diff}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("spectrum", ["gaussian", "decaying"])
@pytest.mark.parametrize("scale", [0.01, 3.0])  # 3·‖W₀‖: the update's own singular values exceed σ_k
def test_two_sided_filter_keeps_the_dominant_triplets_exact(seed, shape, spectrum, scale):
    rng = np.random.default_rng(seed)
    W0 = _w0(rng, *shape, spectrum)
    D = rng.standard_normal(shape)
    D *= scale * np.linalg.norm(W0) / np.linalg.norm(D)
    out, k = la.revive_filter(_t(D), _t(W0), 0.9, mode="two-sided")
    assert out.dtype == torch.float32 and out.shape == shape and 1 <= k < min(shape)
    _check_two_sided(W0, D, out.double().numpy(), k)
    # the default mode is the two-sided one
    default, k_default = la.revive_filter(_t(D), _t(W0), 0.9)
    assert k_default == k and torch.equal(default, out)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", SHAPES)
def test_block_mode_leaves_the_cross_terms(seed, shape):
    rng = np.random.default_rng(seed)
    W0 = _w0(rng, *shape, "decaying")
    D = rng.standard_normal(shape)
    out, k = la.revive_filter(_t(D), _t(W0), 0.9, mode="block")
    F = out.double().numpy()
    U, S, Vt = np.linalg.svd(W0, full_matrices=False)
    Uk, Vk = U[:, :k], Vt[:k].T
    nD = np.linalg.norm(D)
    assert np.linalg.norm(Uk.T @ F @ Vk) < TOL * nD  # the k × k block is gone ...
    assert np.linalg.norm(Uk.T @ F) > 0.1 * nD  # ... but U_kᵀΔW' ≠ 0
    assert np.linalg.norm(F @ Vk) > 0.1 * nD  # and ΔW'V_k ≠ 0
    np.testing.assert_allclose(F, D - Uk @ Uk.T @ D @ Vk @ Vk.T, atol=TOL * nD)
    res = np.linalg.norm((W0 + F) @ Vk - Uk * S[:k], axis=0) / S[:k]
    assert res.max() > 1e-2  # so W₀'s singular vectors rotate


def test_unknown_mode_is_a_one_line_error_naming_the_modes():
    with pytest.raises(la.ShapeError) as info:
        la.revive_filter(torch.ones(3, 4), torch.eye(3, 4), mode="bogus")
    msg = str(info.value)
    assert isinstance(info.value, GeomprobeError) and isinstance(info.value, ValueError)
    assert "\n" not in msg and "'bogus'" in msg and "two-sided" in msg and "block" in msg
    assert la.REVIVE_MODES == ("two-sided", "block")


def _drift(df, metric: str) -> dict:
    return df[df.metric == metric].set_index("step")["value"].to_dict()


def test_subspace_drift_counts_preserved_triplets():
    rng = np.random.default_rng(5)
    W0 = _w0(rng, 40, 60, "decaying")
    D = rng.standard_normal((40, 60))
    D *= 3.0 * np.linalg.norm(W0) / np.linalg.norm(D)
    F, k = la.revive_filter(_t(D), _t(W0), 0.9)
    W0t = _t(W0)
    df = subspace_drift(W0t, [W0t + F.double(), W0t + _t(D)], k=k, n_directions=2, layer=3)
    assert list(df.columns) == ["layer", "step", "metric", "index", "value"]
    res, kept = _drift(df, "triplet_residual"), _drift(df, "preserved_k")
    assert res[0] == 0.0 and kept[0] == k
    assert res[1] < 1e-6 and kept[1] == k  # two-sided REVIVE: all k triplets preserved
    assert res[2] > 1e-2 and kept[2] < k  # unfiltered update: they are not
    assert set(df[df.metric.isin(["triplet_residual", "preserved_k"])]["index"]) == {k}
    # LS_k compares top-k sets: the filtered update's own large singular values push W₀'s out of the top k
    ls = _drift(df, "LS_k")
    assert ls[1] < 0.99
    for metric in ("LS_k", "SS", "norm_ratio", "topk_energy"):  # the existing metrics are still there
        assert (df.metric == metric).any()


# ---------------------------------------------------------------- SmolLM2-135M, layer 7 down-projection (slow)


@pytest.fixture(scope="module")
def smol():
    return gp.load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="module")
def layer7(smol):
    """W₀ (576, 1536) float32 and a random rank-4 ΔW with ‖ΔW‖ = 1% of ‖W₀‖."""
    W0 = smol.weight(7).detach().clone()
    assert W0.shape == (576, 1536)
    g = torch.Generator().manual_seed(0)
    A = torch.randn(576, 4, generator=g, dtype=torch.float64)
    B = torch.randn(1536, 4, generator=g, dtype=torch.float64)
    D = A @ B.T
    D = (D * (0.01 * W0.double().norm() / D.norm())).float()
    return W0, D


@pytest.mark.slow
def test_two_sided_filter_on_smollm2_layer7(layer7):
    W0, D = layer7
    out, k = la.revive_filter(D, W0, 0.9)
    assert out.dtype == torch.float32 and out.shape == W0.shape
    _check_two_sided(W0.double().numpy(), D.double().numpy(), out.double().numpy(), k)


@pytest.mark.slow
def test_block_mode_on_smollm2_layer7_rotates_the_triplets(layer7):
    W0, D = layer7
    out, k = la.revive_filter(D, W0, 0.9, mode="block")
    W, F, Dn = W0.double().numpy(), out.double().numpy(), D.double().numpy()
    U, S, Vt = np.linalg.svd(W, full_matrices=False)
    Uk, Vk = U[:, :k], Vt[:k].T
    assert np.linalg.norm(Uk.T @ F) > 0.1 * np.linalg.norm(Dn)
    res = np.linalg.norm((W + F) @ Vk - Uk * S[:k], axis=0) / S[:k]
    assert res.max() > 1e-3


@pytest.mark.slow
def test_subspace_drift_on_smollm2_layer7(layer7):
    W0, D = layer7
    F, k = la.revive_filter(D, W0, 0.9)
    df = subspace_drift(W0, [W0 + F, W0 + D], k=k, n_directions=2, layer=7)  # float32 weights, as edited
    res, kept = _drift(df, "triplet_residual"), _drift(df, "preserved_k")
    assert res[1] < 1e-6 and kept[1] == k
    assert kept[2] < k
