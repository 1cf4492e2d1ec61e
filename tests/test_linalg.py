"""Closed forms in geomprobe.linalg against direct float64 numpy/scipy computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from geomprobe import linalg as la
from geomprobe.errors import GeomprobeError, NumericalError

# (d, m, n): n = 1, m > d, m < d, n > m (push-through not taken), n = m.
SHAPES = [(8, 12, 1), (12, 8, 3), (5, 20, 4), (16, 6, 6), (7, 10, 15), (9, 9, 1)]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _spd(rng: np.random.Generator, m: int, ridge: float = 0.5) -> np.ndarray:
    """A well-conditioned uncentred covariance E[k kᵀ] + ridge·I."""
    X = rng.standard_normal((m, 4 * m))
    return X @ X.T / (4 * m) + ridge * np.eye(m)


def _problem(seed: int, d: int, m: int, n: int):
    rng = _rng(seed)
    R = rng.standard_normal((d, n))
    K = rng.standard_normal((m, n))
    C = _spd(rng, m)
    return R, K, C


def _t(x: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype)


def _close(out: torch.Tensor, ref: np.ndarray, rtol: float = 1e-5) -> None:
    assert out.dtype == torch.float32
    assert tuple(out.shape) == ref.shape
    err = np.linalg.norm(out.double().numpy() - ref) / max(np.linalg.norm(ref), 1e-300)
    assert err < rtol, err


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and ":" in msg  # problem: fix
    return msg


# ------------------------------------------------------------------------------------------ MEMIT


@pytest.mark.parametrize("d,m,n", SHAPES)
def test_memit_matches_direct_inverse(d, m, n):
    R, K, C = _problem(0, d, m, n)
    lam = 3.0
    ref = R @ K.T @ np.linalg.inv(lam * C + K @ K.T)
    out = la.memit_delta(_t(R), _t(K), _t(C), lam)
    _close(out, ref)


def test_memit_accepts_vectors_for_one_request():
    R, K, C = _problem(1, 6, 9, 1)
    a = la.memit_delta(_t(R[:, 0]), _t(K[:, 0]), _t(C), 2.0)
    b = la.memit_delta(_t(R), _t(K), _t(C), 2.0)
    assert torch.equal(a, b)


def test_memit_large_lam_and_lam_zero():
    R, K, C = _problem(2, 6, 5, 8)  # n > m: KKᵀ is invertible, so lam = 0 is well posed
    ref = R @ K.T @ np.linalg.inv(K @ K.T)
    _close(la.memit_delta(_t(R), _t(K), _t(C), 0.0), ref)
    # λ = 2e4 with a unit-scale C: the update is tiny but still exact.
    ref = R @ K.T @ np.linalg.inv(2e4 * C + K @ K.T)
    _close(la.memit_delta(_t(R), _t(K), _t(C), 2e4), ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs_give_float32_close_to_float64(dtype):
    # Moderately ill-conditioned C (cond ≈ 1e5): a float32 solve would be ~1e-3 off; float64 is not.
    rng = _rng(3)
    m, d, n = 24, 10, 3
    Q, _ = np.linalg.qr(rng.standard_normal((m, m)))
    C = Q @ np.diag(np.logspace(0, -5, m)) @ Q.T
    R, K = rng.standard_normal((d, n)), rng.standard_normal((m, n))
    Rl, Kl, Cl = _t(R, dtype), _t(K, dtype), _t(C, dtype)
    # Reference on the rounded inputs, so only the arithmetic is compared.
    Rr, Kr, Cr = (x.double().numpy() for x in (Rl, Kl, Cl))
    lam = 1e-2
    ref = Rr @ Kr.T @ scipy.linalg.inv(lam * Cr + Kr @ Kr.T)
    out = la.memit_delta(Rl, Kl, Cl, lam)
    _close(out, ref, rtol=1e-5)
    ref_i = Rr @ Kr.T @ np.linalg.inv(1e-3 * np.eye(m) + Kr @ Kr.T)
    _close(la.isotropic_delta(Rl, Kl, 1e-3), ref_i, rtol=1e-5)
    # Same for ROME and REVIVE outputs.
    W = rng.standard_normal((d, m))
    Wl = _t(W, dtype)
    out = la.rome_delta(Rl[:, 0], Kl[:, 0], Wl, Cl + 1e-3 * torch.eye(m, dtype=dtype))
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    filt, k = la.revive_filter(Wl, Wl, 0.5)
    assert filt.dtype == torch.float32 and 1 <= k <= d


# -------------------------------------------------------------------------------------- isotropic


@pytest.mark.parametrize("d,m,n", SHAPES)
def test_isotropic_matches_direct_inverse(d, m, n):
    R, K, _ = _problem(4, d, m, n)
    for alpha in (1.0, 0.05):
        ref = R @ K.T @ np.linalg.inv(alpha * np.eye(m) + K @ K.T)
        _close(la.isotropic_delta(_t(R), _t(K), alpha), ref)


@pytest.mark.parametrize("d,m,n", SHAPES + [(4, 300, 2)])
def test_push_through_equals_direct(d, m, n):
    R, K, _ = _problem(5, d, m, n)
    a = la.isotropic_delta(_t(R), _t(K), 0.7, path="direct")
    b = la.isotropic_delta(_t(R), _t(K), 0.7, path="push")
    c = la.isotropic_delta(_t(R), _t(K), 0.7)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-7 * float(a.abs().max()))
    assert torch.allclose(a, c, rtol=1e-5, atol=1e-7 * float(a.abs().max()))


def test_isotropic_equals_memit_with_identity_covariance():
    R, K, _ = _problem(6, 5, 7, 2)
    a = la.isotropic_delta(_t(R), _t(K), 2.5)
    b = la.memit_delta(_t(R), _t(K), torch.eye(7, dtype=torch.float64), 2.5)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------- projector


def _known_spectrum(scale: float = 1.0):
    evals = np.array([10.0, 5.0, 1.0, 0.5, 0.01, 0.005, 0.001, 0.0]) * scale
    Q, _ = np.linalg.qr(_rng(7).standard_normal((8, 8)))
    return Q @ np.diag(evals) @ Q.T, Q, evals


@pytest.mark.parametrize(
    "mode,threshold,kept",
    [
        ("absolute", 2e-2, 4),  # λ < 0.02
        ("absolute", 0.7, 5),  # λ < 0.7
        ("relative", 0.06, 5),  # λ < 0.6
        ("relative", 2e-4, 2),  # λ < 0.002
        ("energy", 0.1, 6),  # top 10 + 5 hold 90.8% ≥ 90%: drop 2
        ("energy", 2e-2, 4),  # 10 + 5 + 1 hold 96.9% < 98%, + 0.5 hold 99.97%: drop 4
    ],
)
def test_projector_modes_select_expected_counts(mode, threshold, kept):
    C, Q, evals = _known_spectrum()
    pr = la.nullspace_projector(_t(C), threshold, mode)
    assert pr.rank == kept and pr.mode == mode and pr.threshold == threshold
    P = pr.P.double().numpy()
    assert P.dtype == np.float64 and pr.P.dtype == torch.float32
    low = Q[:, np.argsort(evals)[:kept]]
    ref = low @ low.T
    np.testing.assert_allclose(P, ref, atol=1e-6)
    np.testing.assert_allclose(P @ P, P, atol=1e-6)  # a projector
    U0, spec = la.nullspace_basis(_t(C), threshold, mode)
    assert U0.shape == (8, kept)
    np.testing.assert_allclose(spec.numpy(), np.sort(evals), atol=1e-12)


def test_energy_mode_keeps_a_small_share_and_is_scale_free():
    C, _, evals = _known_spectrum()
    a = la.nullspace_projector(_t(C), 2e-2, "energy")
    b = la.nullspace_projector(_t(C * 1e4), 2e-2, "energy")
    assert a.rank == b.rank == 4  # 10 + 5 + 1 = 96.9% < 98%, + 0.5 = 99.97%: drop 4
    # relative mode is scale-free too; absolute is not.
    assert la.nullspace_projector(_t(C * 1e4), 0.06, "relative").rank == 5
    assert la.nullspace_projector(_t(C * 1e4), 0.7, "absolute").rank == 1


def test_projector_raises_on_empty_and_everything():
    C, _, _ = _known_spectrum()
    Cpd = C + 0.1 * np.eye(8)  # smallest eigenvalue 0.1
    with pytest.raises(NumericalError) as e:
        la.nullspace_projector(_t(Cpd), 2e-2, "absolute")
    msg = _one_line(e)
    assert "empty" in msg and "relative" in msg
    with pytest.raises(NumericalError) as e:
        la.nullspace_projector(_t(C * 1e-3), 2e-2, "absolute")  # all eigenvalues < 0.01
    msg = _one_line(e)
    assert "all 8" in msg and "relative" in msg
    with pytest.raises(NumericalError) as e:
        la.nullspace_projector(_t(C), 2.0, "relative")
    assert "all 8" in _one_line(e)
    with pytest.raises(NumericalError) as e:  # equal spectrum: the smallest alone holds 1/8 > 1%
        la.nullspace_projector(torch.eye(8), 1e-2, "energy")
    assert "empty" in _one_line(e)
    with pytest.raises(la.ShapeError):
        la.nullspace_projector(_t(C), 2e-2, "fancy")
    with pytest.raises(la.ShapeError):
        la.nullspace_projector(_t(C), 1.5, "energy")


def test_projector_rejects_non_covariances():
    C, _, _ = _known_spectrum()
    with pytest.raises(NumericalError) as e:
        la.nullspace_projector(_t(C - 2 * np.eye(8)), 2e-2)
    assert "positive semidefinite" in _one_line(e)
    A = C.copy()
    A[0, 1] += 1.0
    with pytest.raises(NumericalError) as e:
        la.nullspace_projector(_t(A), 2e-2)
    assert "symmetric" in _one_line(e)


# ------------------------------------------------------------------------------------- AlphaEdit


def _alphaedit_ref(R, K, P, Kp, alpha):
    m = P.shape[0]
    A = K @ K.T + (Kp @ Kp.T if Kp is not None else 0)
    return R @ K.T @ P @ np.linalg.inv(A @ P + alpha * np.eye(m))


@pytest.mark.parametrize("d,m,n", SHAPES)
def test_alphaedit_matches_direct_inverse(d, m, n):
    rng = _rng(8)
    R, K, C = _problem(8, d, m, n)
    Kp = rng.standard_normal((m, 5))
    pr = la.nullspace_projector(_t(C), 0.5, "relative")
    P = pr.P.double().numpy()
    for kp in (None, Kp):
        ref = _alphaedit_ref(R, K, P, kp, 1.0)
        out = la.alphaedit_delta(_t(R), _t(K), pr, None if kp is None else _t(kp), alpha=1.0)
        _close(out, ref)
        # The update already lives in P's range: ΔW (I − P) = 0, so preserved keys are untouched.
        resid = out.double().numpy() @ (np.eye(m) - P)
        assert np.linalg.norm(resid) <= 1e-5 * max(np.linalg.norm(ref), 1e-12)


def test_alphaedit_empty_previous_keys_equal_none():
    R, K, C = _problem(9, 6, 10, 2)
    P = la.nullspace_projector(_t(C), 0.5, "relative").P
    a = la.alphaedit_delta(_t(R), _t(K), P)
    b = la.alphaedit_delta(_t(R), _t(K), P, K_prev=torch.zeros(10, 0))
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------ ROME


@pytest.mark.parametrize("d,m", [(8, 12), (12, 8), (1, 5), (6, 1)])
def test_rome_inserts_the_value(d, m):
    rng = _rng(10)
    v, k, W, C = rng.standard_normal(d), rng.standard_normal(m), rng.standard_normal((d, m)), _spd(rng, m)
    u = np.linalg.solve(C, k)
    ref = np.outer(v - W @ k, u) / (u @ k)
    out = la.rome_delta(_t(v), _t(k), _t(W), _t(C))
    _close(out, ref)
    got = (W + out.double().numpy()) @ k
    assert np.linalg.norm(got - v) <= 1e-5 * np.linalg.norm(v)
    # column shapes are accepted too
    assert torch.equal(la.rome_delta(_t(v[:, None]), _t(k[:, None]), _t(W), _t(C)), out)


# ---------------------------------------------------------------------------------------- REVIVE


def test_revive_filter_zeroes_the_dominant_block_only():
    rng = _rng(11)
    d, m = 9, 14
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    V, _ = np.linalg.qr(rng.standard_normal((m, d)))
    s = np.array([10.0, 6.0, 3.0, 1.0, 0.5, 0.3, 0.2, 0.1, 0.05])
    W0 = U @ np.diag(s) @ V.T
    D = rng.standard_normal((d, m))
    energy = np.cumsum(s**2) / np.sum(s**2)  # 0.676, 0.919, 0.980, ...
    for tau, k_ref in ((0.5, 1), (0.9, 2), (0.95, 3), (1.0, d)):
        assert k_ref == int(np.searchsorted(energy, tau * (1 - 1e-12)) + 1)
        out, k = la.revive_filter(_t(D), _t(W0), tau, mode="block")
        assert k == k_ref
        F = out.double().numpy()
        Uk, Vk = U[:, :k], V[:, :k]
        _close(out, D - Uk @ Uk.T @ D @ Vk @ Vk.T)
        assert np.abs(Uk.T @ F @ Vk).max() < 1e-5  # no component in the dominant block
        Pu, Pv = np.eye(d) - Uk @ Uk.T, np.eye(m) - Vk @ Vk.T
        np.testing.assert_allclose(Pu @ F, Pu @ D, atol=1e-5)  # the rest is unchanged
        np.testing.assert_allclose(F @ Pv, D @ Pv, atol=1e-5)
        assert np.abs(Uk.T @ D @ Vk).max() > 0.1  # and there was something to remove


def test_revive_errors():
    with pytest.raises(la.ShapeError):
        la.revive_filter(torch.ones(3, 4), torch.ones(4, 3))
    with pytest.raises(NumericalError):
        la.revive_filter(torch.ones(3, 4), torch.zeros(3, 4))
    with pytest.raises(la.ShapeError):
        la.revive_filter(torch.ones(3, 4), torch.ones(3, 4), tau=1.5)


# --------------------------------------------------------------------------------------- errors


def test_nan_inputs_raise_numerical_error():
    R, K, C = _problem(12, 5, 6, 2)
    for which in ("R", "K", "C"):
        args = {"R": _t(R), "K": _t(K), "C": _t(C)}
        args[which] = args[which].clone()
        args[which][0, 0] = float("nan")
        with pytest.raises(NumericalError) as e:
            la.memit_delta(args["R"], args["K"], args["C"], 1.0)
        assert _one_line(e).startswith(f"{which} holds NaN/Inf")
    Cn = _t(C).clone()
    Cn[1, 1] = float("inf")
    with pytest.raises(NumericalError) as e:
        la.nullspace_projector(Cn)
    assert "rebuild the covariance cache" in _one_line(e)
    Kn = _t(K).clone()
    Kn[2, 1] = float("nan")
    with pytest.raises(NumericalError):
        la.isotropic_delta(_t(R), Kn)
    with pytest.raises(NumericalError):
        la.alphaedit_delta(_t(R), Kn, torch.eye(6))
    with pytest.raises(NumericalError):
        la.rome_delta(_t(R[:, 0]), Kn[:, 1], torch.ones(5, 6), _t(C))


def test_singular_systems_raise_with_rcond():
    rng = _rng(13)
    m, n = 10, 2
    B = rng.standard_normal((m, 3))
    C = B @ B.T  # rank 3
    R, K = rng.standard_normal((4, n)), rng.standard_normal((m, n))
    with pytest.raises(NumericalError) as e:  # rank(λC + KKᵀ) ≤ 5 < 10
        la.memit_delta(_t(R), _t(K), _t(C), 1e4)
    msg = _one_line(e)
    assert msg.startswith("λC + KKᵀ is singular (rcond") and "increase lam" in msg
    with pytest.raises(NumericalError) as e:  # lam = 0 with n < m
        la.memit_delta(_t(R), _t(K), _t(_spd(rng, m)), 0.0)
    assert "singular" in _one_line(e)
    with pytest.raises(NumericalError) as e:
        la.rome_delta(_t(R[:, 0]), _t(K[:, 0]), _t(rng.standard_normal((4, m))), _t(C))
    assert "C is singular" in _one_line(e)
    with pytest.raises(NumericalError) as e:  # zero covariance
        la.memit_delta(_t(R), torch.zeros(m, n, dtype=torch.float64), torch.zeros(m, m), 1.0)
    assert "rcond 0" in _one_line(e)
    # Almost singular but fine: a ridge of 1e-6 keeps rcond ≈ 1e-8 and the answer exact.
    Cr = C + 1e-6 * np.eye(m)
    ref = R @ K.T @ np.linalg.inv(1e4 * Cr + K @ K.T)
    _close(la.memit_delta(_t(R), _t(K), _t(Cr), 1e4), ref, rtol=1e-4)


def test_shape_mismatches_raise_value_errors():
    R, K, C = _problem(14, 5, 6, 2)
    cases = [
        (lambda: la.memit_delta(_t(R), _t(K[:, :1]), _t(C), 1.0), "columns"),
        (lambda: la.memit_delta(_t(R), _t(K.T), _t(C), 1.0), "transpose K"),
        (lambda: la.memit_delta(_t(R), _t(K), _t(C[:5, :5]), 1.0), "needs m=5"),
        (lambda: la.memit_delta(_t(R), _t(K), _t(C[:, :5]), 1.0), "square"),
        (lambda: la.memit_delta(_t(R), _t(K), _t(C), -1.0), "lam"),
        (lambda: la.isotropic_delta(_t(R), _t(K[:, :1])), "columns"),
        (lambda: la.isotropic_delta(_t(R), _t(K), alpha=0.0), "alpha"),
        (lambda: la.isotropic_delta(_t(R), _t(K), path="fast"), "path"),
        (lambda: la.alphaedit_delta(_t(R), _t(K), torch.eye(7)), "needs m=7"),
        (lambda: la.alphaedit_delta(_t(R), _t(K), torch.eye(6), K_prev=torch.ones(4, 3)), "K_prev"),
        (lambda: la.rome_delta(_t(R[:, 0]), _t(K[:, 0]), torch.ones(6, 5), _t(C)), "Conv1D"),
        (lambda: la.rome_delta(_t(R[:, 0]), _t(K[:, 0]), torch.ones(5, 6), _t(C[:4, :4])), "C is"),
        (lambda: la.memit_delta(_t(R[:, :0]), _t(K[:, :0]), _t(C), 1.0), "no columns"),
    ]
    for call, needle in cases:
        with pytest.raises(la.ShapeError) as e:
            call()
        assert isinstance(e.value, ValueError) and isinstance(e.value, GeomprobeError)
        assert needle in _one_line(e), str(e.value)


def test_result_is_on_input_device_and_never_nan_or_inf():
    R, K, C = _problem(15, 3, 4, 1)
    out = la.memit_delta(_t(R) * 1e30, _t(K), _t(C), 1.0)
    _close(out, 1e30 * R @ K.T @ np.linalg.inv(C + K @ K.T))
    assert out.device == torch.device("cpu")  # (no accelerator here; see the module docstring)
    assert bool(torch.isfinite(out).all())
    with pytest.raises(NumericalError) as e:  # would overflow float32
        la.isotropic_delta(_t(R) * 1e36, _t(K) * 1e-5, alpha=1e-10)
    assert "float32" in _one_line(e)


def test_numpy_inputs_are_accepted():
    R, K, C = _problem(16, 4, 5, 2)
    a = la.memit_delta(R, K, C, 1.5)
    b = la.memit_delta(_t(R), _t(K), _t(C), 1.5)
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------ spectral helpers


def test_condition_number_and_effective_rank():
    C, _, evals = _known_spectrum()
    assert la.condition_number(torch.eye(5) * 3) == pytest.approx(1.0)
    assert la.effective_rank(torch.eye(5) * 3) == pytest.approx(5.0)
    assert la.condition_number(_t(C)) == math.inf  # has a zero eigenvalue
    pos = evals[:-1]
    assert la.condition_number(_t(pos)) == pytest.approx(10.0 / 0.001)  # 1-D spectrum input
    p = evals / evals.sum()
    p = p[p > 0]
    ref = math.exp(-(p * np.log(p)).sum())
    assert la.effective_rank(_t(C)) == pytest.approx(ref, rel=1e-9)
    assert la.effective_rank(_t(evals)) == pytest.approx(ref, rel=1e-9)
    assert la.effective_rank(_t(np.outer(np.ones(4), np.ones(4)))) == pytest.approx(1.0)
    assert la.effective_rank(torch.zeros(3, 3)) == 0.0
    D = np.diag([4.0, 1.0])
    assert la.condition_number(_t(D)) == pytest.approx(4.0)
    assert 1.0 < la.effective_rank(_t(D)) < 2.0
    with pytest.raises(NumericalError):
        la.condition_number(_t(np.diag([1.0, -1.0])))
    with pytest.raises(la.ShapeError):
        la.effective_rank(torch.ones(2, 3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs_give_float32_on_cuda():
    R, K, C = _problem(17, 6, 9, 3)
    dev = torch.device("cuda")
    Rc, Kc, Cc = (_t(x, torch.bfloat16).to(dev) for x in (R, K, C))
    outs = [
        la.memit_delta(Rc, Kc, Cc, 2.0),
        la.isotropic_delta(Rc, Kc),
        la.isotropic_delta(Rc, Kc, path="direct"),
        la.alphaedit_delta(Rc, Kc, la.nullspace_projector(Cc, 0.5, "relative"), K_prev=Kc),
        la.rome_delta(Rc[:, 0], Kc[:, 0], Rc @ Kc.T, Cc),
        la.revive_filter(Rc @ Kc.T, Rc @ Kc.T, 0.9)[0],
    ]
    for out in outs:
        assert out.device.type == "cuda" and out.dtype == torch.float32
        assert bool(torch.isfinite(out).all())
    Rr, Kr, Cr = (x.double().cpu().numpy() for x in (Rc, Kc, Cc))
    _close(outs[0].cpu(), Rr @ Kr.T @ np.linalg.inv(2.0 * Cr + Kr @ Kr.T))
