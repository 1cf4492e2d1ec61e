"""Closed forms of the locate-then-edit editors (DESIGN.md §1) and small spectral helpers.

Notation: ``R: (d, n)`` residuals (one column per request), ``K: (m, n)`` keys, ``C: (m, m)`` the
uncentred key covariance ``E[k kᵀ]``, ``W: (d, m)`` the rewrite weight stored out×in.  Every update
returned is ``ΔW: (d, m)``, to be *added* to ``W``.

Conventions shared by every function here:

* Inputs may be torch tensors of any float dtype (float16/bfloat16/float32/float64) on any device,
  or numpy arrays.  They are cast to float64 and moved to the device of the first argument (the
  *primary* tensor: ``R``, ``v_star``, ``delta`` or ``C``) before any arithmetic; on Apple ``mps``,
  which has no float64, the work runs on the CPU.
* Linear systems are solved, never inverted: Cholesky for symmetric positive definite systems, with
  an LU fallback when Cholesky fails.  Each solve is guarded by a LAPACK-style (Hager/Higham)
  estimate of the reciprocal 1-norm condition number; below :data:`RCOND_MIN` the system counts as
  singular and :class:`~geomprobe.errors.NumericalError` is raised with the estimate in its message.
* Results are returned as **float32 on the primary tensor's device**; a function never returns
  NaN or Inf (non-finite inputs, singular systems and float32 overflow raise ``NumericalError``).
* Shape and argument mistakes raise :class:`ShapeError`, a :class:`~geomprobe.errors.GeomprobeError`
  that is also a ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .errors import GeomprobeError, NumericalError

__all__ = [
    "RCOND_MIN",
    "ShapeError",
    "Projector",
    "memit_delta",
    "isotropic_delta",
    "nullspace_basis",
    "nullspace_projector",
    "alphaedit_delta",
    "rome_delta",
    "REVIVE_MODES",
    "revive_filter",
    "condition_number",
    "effective_rank",
]

#: Smallest reciprocal condition number (1-norm estimate) a system may have.  A float64 solve loses
#: about ``log10(1/rcond)`` of its ~16 digits; below 1e-12 fewer digits survive than a float32
#: result shows, so the system is reported as singular instead of returning noise.
RCOND_MIN = 1e-12

_F64 = torch.float64


class ShapeError(GeomprobeError, ValueError):
    """An argument has the wrong shape or an invalid value (also a ``ValueError``)."""


@dataclass(frozen=True)
class Projector:
    """AlphaEdit's null-space projector ``P = U₀U₀ᵀ`` (see :func:`nullspace_projector`).

    Attributes:
        P: ``(m, m)`` float32 on the device of ``C``: orthogonal projector onto the kept eigenvectors.
        rank: number of kept directions (eigenvalues of ``C`` below the cutoff), ``0 < rank < m``.
        threshold: the threshold as passed.
        mode: ``"absolute"``, ``"relative"`` or ``"energy"``.
    """

    P: torch.Tensor
    rank: int
    threshold: float
    mode: str


# ----------------------------------------------------------------------------------------- helpers


def _device_of(x: torch.Tensor | np.ndarray) -> torch.device:
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


def _work_device(device: torch.device) -> torch.device:
    return torch.device("cpu") if device.type == "mps" else device


def _prep(x: object, name: str, device: torch.device, fix: str) -> torch.Tensor:
    """Return ``x`` as float64 on ``device`` after checking it is a finite float array."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.asarray(x))
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{name} is a {type(x).__name__}: pass a torch tensor or numpy array")
    if x.is_complex():
        raise ShapeError(f"{name} is complex: pass a real tensor")
    if not bool(torch.isfinite(x).all()):
        raise NumericalError(f"{name} holds NaN/Inf: {fix}")
    return x.to(device=device, dtype=_F64)


def _out(x: torch.Tensor, device: torch.device, what: str) -> torch.Tensor:
    """Cast a float64 result to float32 on ``device``; refuse to return NaN/Inf."""
    y = x.to(dtype=torch.float32)
    if not bool(torch.isfinite(y).all()):
        big = float(x.abs().max()) if bool(torch.isfinite(x).all()) else float("nan")
        raise NumericalError(
            f"{what} is not representable in float32 (max |entry| {big:.3g}): "
            "rescale the inputs or increase the regulariser"
        )
    return y.to(device)


def _matrix(x: torch.Tensor, name: str, want: str) -> None:
    if x.ndim != 2:
        raise ShapeError(f"{name} has shape {tuple(x.shape)}: pass a 2-D {want} matrix")


def _columns(x: torch.Tensor, name: str, want: str) -> torch.Tensor:
    """Accept a 1-D vector as a single column; otherwise require a matrix."""
    if x.ndim == 1:
        return x[:, None]
    _matrix(x, name, want)
    return x


def _square(x: torch.Tensor, name: str, m: int | None = None) -> None:
    if x.ndim != 2 or x.shape[0] != x.shape[1]:
        raise ShapeError(f"{name} has shape {tuple(x.shape)}: pass a square (m, m) matrix")
    if x.shape[0] == 0:
        raise ShapeError(f"{name} is empty (0, 0): pass the covariance of a real layer")
    if m is not None and x.shape[0] != m:
        raise ShapeError(
            f"{name} is {tuple(x.shape)} but the keys have m={m} rows: "
            "use the covariance of the same layer's down-projection input"
        )


def _keys_vs(K: torch.Tensor, m: int, what: str) -> None:
    if K.shape[0] != m:
        hint = " — transpose K (one column per request)" if K.shape[1] == m else ""
        raise ShapeError(
            f"K is {tuple(K.shape)} but {what} needs m={m} rows{hint}: take keys and {what} from the "
            "same layer (m = the rewrite module's input size)"
        )


def _positive(value: float, name: str, allow_zero: bool, fix: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ShapeError(f"{name} is {value!r}: pass a number ({fix})") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ShapeError(f"{name} must be a finite number {bound}, got {value!r}: {fix}")
    return v


def _inv_norm1_estimate(
    solve: Callable[[torch.Tensor], torch.Tensor],
    solve_t: Callable[[torch.Tensor], torch.Tensor],
    m: int,
    device: torch.device,
) -> float:
    """Hager/Higham estimate of ``‖A⁻¹‖₁`` from a factorised solve (a few O(m²) solves)."""
    x = torch.full((m, 1), 1.0 / m, dtype=_F64, device=device)
    est = 0.0
    for it in range(5):
        y = solve(x)
        new = float(y.abs().sum())
        if not math.isfinite(new):
            return math.inf
        if it > 0 and new <= est:
            break
        est = new
        xi = torch.where(y >= 0, 1.0, -1.0).to(_F64)
        z = solve_t(xi)
        j = int(z.abs().argmax())
        if it > 0 and float(z.abs()[j, 0]) <= float((z * x).sum()):
            break
        x = torch.zeros_like(x)
        x[j, 0] = 1.0
    # Higham's extra test vector catches matrices that fool the power iteration.
    i = torch.arange(m, dtype=_F64, device=device)
    alt = ((-1.0) ** i * (1.0 + i / max(m - 1, 1)))[:, None]
    alt_est = 2.0 * float(solve(alt).abs().sum()) / (3.0 * m)
    return max(est, alt_est) if math.isfinite(alt_est) else math.inf


def _solve(A: torch.Tensor, B: torch.Tensor, label: str, fix: str, symmetric: bool) -> torch.Tensor:
    """Solve ``A X = B`` (float64), raising ``NumericalError`` when ``A`` is (nearly) singular.

    Args:
        A: ``(m, m)`` system matrix.
        B: ``(m, k)`` right-hand sides.
        label: how the message names ``A`` (e.g. ``"λC + KKᵀ"``).
        fix: the remedy appended to the message.
        symmetric: try Cholesky first (falls back to LU when ``A`` is not positive definite).
    """
    m = A.shape[0]
    anorm = float(A.abs().sum(dim=0).max())
    if anorm == 0.0:
        raise NumericalError(f"{label} is the zero matrix (rcond 0): {fix}")
    solve = solve_t = None
    if symmetric:
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) == 0:
            # Two triangular solves: torch.cholesky_solve copies the factor on every call (~10x slower).
            solve = solve_t = lambda b: torch.linalg.solve_triangular(  # noqa: E731
                L.mT, torch.linalg.solve_triangular(L, b, upper=False), upper=True
            )
    if solve is None:
        LU, piv, info = torch.linalg.lu_factor_ex(A)
        if int(info) != 0:
            raise NumericalError(f"{label} is singular (rcond 0): {fix}")
        solve = lambda b: torch.linalg.lu_solve(LU, piv, b)  # noqa: E731
        solve_t = lambda b: torch.linalg.lu_solve(LU, piv, b, adjoint=True)  # noqa: E731
    rcond = 1.0 / (anorm * _inv_norm1_estimate(solve, solve_t, m, A.device))
    if not rcond >= RCOND_MIN:
        raise NumericalError(f"{label} is singular (rcond {rcond:.1e}): {fix}")
    X = solve(B)
    if not bool(torch.isfinite(X).all()):
        raise NumericalError(f"{label} could not be solved (non-finite result): {fix}")
    return X


# ------------------------------------------------------------------------------------ closed forms


def memit_delta(R, K, C, lam: float) -> torch.Tensor:
    """MEMIT update ``ΔW = R Kᵀ (λC + K Kᵀ)⁻¹``.

    Solved as the symmetric system ``(λC + KKᵀ) X = K Rᵀ``, ``ΔW = Xᵀ``.

    Args:
        R: ``(d, n)`` residuals (a 1-D ``(d,)`` counts as one column).
        K: ``(m, n)`` keys, one column per request (1-D allowed for n = 1).
        C: ``(m, m)`` uncentred key covariance.
        lam: covariance weight λ ≥ 0 (MEMIT uses 1.5e4–2e4).

    Returns:
        ``(d, m)`` float32 on ``R``'s device.
    """
    dev = _device_of(R)
    wd = _work_device(dev)
    R = _columns(_prep(R, "R", wd, "recompute the target values (z) and residuals"), "R", "(d, n)")
    K = _columns(_prep(K, "K", wd, "recompute the keys (check the hooked layer)"), "K", "(m, n)")
    C = _prep(C, "C", wd, "rebuild the covariance cache")
    lam = _positive(lam, "lam", True, "MEMIT uses 1.5e4–2e4")
    _n_match(R, K)
    _square(C, "C")
    _keys_vs(K, C.shape[0], "C")
    A = lam * C + K @ K.T
    X = _solve(A, K @ R.T, "λC + KKᵀ", "increase lam or check C", symmetric=True)
    return _out(X.T, dev, "the MEMIT update")


def isotropic_delta(R, K, alpha: float = 1.0, path: str = "auto") -> torch.Tensor:
    """RoSE/IGA update ``ΔW = R Kᵀ (αI + K Kᵀ)⁻¹`` (the covariance replaced by the identity).

    Two algebraically identical paths: ``"direct"`` solves the ``(m, m)`` system
    ``(αI_m + KKᵀ) X = K Rᵀ``; ``"push"`` uses the push-through identity
    ``Kᵀ(αI_m + KKᵀ)⁻¹ = (αI_n + KᵀK)⁻¹Kᵀ`` and solves only an ``(n, n)`` system,
    ``ΔW = R (αI_n + KᵀK)⁻¹ Kᵀ``.  ``"auto"`` takes ``"push"`` whenever ``n < m`` (the usual case:
    a handful of requests against thousands of key dimensions).

    Args:
        R: ``(d, n)`` residuals (1-D allowed for n = 1).
        K: ``(m, n)`` keys (1-D allowed for n = 1).
        alpha: Tikhonov term α > 0.
        path: ``"auto"``, ``"direct"`` or ``"push"``.

    Returns:
        ``(d, m)`` float32 on ``R``'s device.
    """
    if path not in ("auto", "direct", "push"):
        raise ShapeError(f"path is {path!r}: use 'auto', 'direct' or 'push'")
    dev = _device_of(R)
    wd = _work_device(dev)
    R = _columns(_prep(R, "R", wd, "recompute the target values (z) and residuals"), "R", "(d, n)")
    K = _columns(_prep(K, "K", wd, "recompute the keys (check the hooked layer)"), "K", "(m, n)")
    alpha = _positive(alpha, "alpha", False, "use the default 1.0 or a small ridge such as 1e-3")
    _n_match(R, K)
    m, n = K.shape
    if path == "push" or (path == "auto" and n < m):
        A = alpha * torch.eye(n, dtype=_F64, device=wd) + K.T @ K
        Y = _solve(A, R.T, "αI + KᵀK", "increase alpha", symmetric=True)  # (n, d)
        return _out((K @ Y).T, dev, "the isotropic update")
    A = alpha * torch.eye(m, dtype=_F64, device=wd) + K @ K.T
    X = _solve(A, K @ R.T, "αI + KKᵀ", "increase alpha", symmetric=True)
    return _out(X.T, dev, "the isotropic update")


def _n_match(R: torch.Tensor, K: torch.Tensor) -> None:
    if R.shape[1] != K.shape[1]:
        hint = " — transpose K" if K.shape[0] == R.shape[1] else ""
        raise ShapeError(
            f"R has {R.shape[1]} columns but K has {K.shape[1]}: pass one key column per residual "
            f"column (R: (d, n), K: (m, n)){hint}"
        )
    if K.shape[1] == 0:
        raise ShapeError("K has no columns (no requests): pass at least one key")


_MODES = ("absolute", "relative", "energy")


def nullspace_basis(C, threshold: float = 2e-2, mode: str = "absolute") -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvectors of ``C`` spanning its low-variance ("null") space, as AlphaEdit selects them.

    ``C`` is symmetrised and decomposed with ``eigh`` in float64; eigenvalues are sorted ascending.
    Kept directions by ``mode`` (``t`` = ``threshold``):

    * ``"absolute"``: eigenvalues ``λ < t`` (AlphaEdit's reference rule, ``t = 2e-2``; breaks when
      the statistics are rescaled).
    * ``"relative"``: ``λ < t · λ_max`` (scale-free).
    * ``"energy"``: drop the fewest top eigenvalues whose sum reaches ``(1 − t)`` of the trace and
      keep the rest, which therefore hold at most a ``t`` share of the variance (needs ``0 < t < 1``).

    Args:
        C: ``(m, m)`` symmetric positive semidefinite covariance.
        threshold: ``t`` above (> 0).
        mode: ``"absolute"``, ``"relative"`` or ``"energy"``.

    Returns:
        ``(U0, eigenvalues)``: ``U0`` is ``(m, r)`` float64 with orthonormal columns (the kept
        eigenvectors, ascending eigenvalue), ``eigenvalues`` the ``(m,)`` float64 spectrum ascending;
        both on the work device (``C``'s, or CPU for mps).

    Raises:
        NumericalError: ``C`` non-finite, not symmetric/PSD, or the selection is empty or everything.
    """
    if mode not in _MODES:
        raise ShapeError(f"mode is {mode!r}: use one of {', '.join(_MODES)}")
    t = _positive(threshold, "threshold", False, "AlphaEdit's reference is 2e-2")
    if mode == "energy" and t >= 1:
        raise ShapeError(f"energy threshold is {threshold!r}: pass the kept share of the trace, in (0, 1)")
    tol = _psd_tol(C)
    C = _prep(C, "C", _work_device(_device_of(C)), "rebuild the covariance cache")
    evals, evecs = _sym_eigh(C, "C", tol)
    m = evals.numel()
    top = float(evals[-1])
    if mode == "absolute":
        keep = int((evals < t).sum())
    elif mode == "relative":
        keep = int((evals < t * top).sum()) if top > 0 else m
    else:
        pos = evals.clamp(min=0)
        total = float(pos.sum())
        if total <= 0:
            keep = m
        else:
            share = pos.flip(0).cumsum(0) / total  # top-down cumulative share
            goal = torch.tensor([(1.0 - t) * (1 - 1e-12)], dtype=_F64, device=share.device)
            drop = int(torch.searchsorted(share, goal)) + 1
            keep = m - min(drop, m)
    if keep == 0:
        hint = {
            "absolute": f"smallest eigenvalue {float(evals[0]):.3g} ≥ {t:g}; the statistics may be "
            "rescaled: use mode='relative' or 'energy', or raise threshold",
            "relative": f"smallest eigenvalue is {float(evals[0]) / top:.3g} of the largest ≥ {t:g}: "
            "raise threshold or use mode='energy'",
            "energy": "the smallest eigenvalue alone holds more than that share: raise threshold",
        }[mode]
        raise NumericalError(f"the null-space selection is empty ({mode} threshold {t:g}): {hint}")
    if keep == m:
        hint = {
            "absolute": f"largest eigenvalue {top:.3g} < {t:g}; the statistics may be rescaled: use "
            "mode='relative' or 'energy', or lower threshold",
            "relative": "C is zero or the threshold exceeds 1: lower threshold",
            "energy": "C is zero or the threshold is too large: lower threshold or check C",
        }[mode]
        raise NumericalError(
            f"the null-space selection keeps all {m} directions ({mode} threshold {t:g}), so P would "
            f"protect nothing: {hint}"
        )
    return evecs[:, :keep], evals


def nullspace_projector(C, threshold: float = 2e-2, mode: str = "absolute") -> Projector:
    """AlphaEdit's projector ``P = U₀U₀ᵀ`` onto the low-variance eigenvectors of ``C``.

    The selection rules are those of :func:`nullspace_basis`.  A :class:`Projector` is returned (not
    a bare tensor) so that the number of kept directions and the rule that chose them travel with
    ``P``; pass it, or its ``.P``, to :func:`alphaedit_delta`.

    Args:
        C: ``(m, m)`` symmetric positive semidefinite covariance.
        threshold: see :func:`nullspace_basis`.
        mode: ``"absolute"``, ``"relative"`` or ``"energy"``.

    Returns:
        :class:`Projector` with ``P`` ``(m, m)`` float32 on ``C``'s device.
    """
    dev = _device_of(C)
    U0, _ = nullspace_basis(C, threshold, mode)
    return Projector(P=_out(U0 @ U0.T, dev, "P"), rank=U0.shape[1], threshold=float(threshold), mode=mode)


def alphaedit_delta(R, K, P, K_prev=None, alpha: float = 1.0) -> torch.Tensor:
    """AlphaEdit update ``ΔW = R K₁ᵀ P (K_p K_pᵀ P + K₁K₁ᵀ P + α I)⁻¹``.

    Solved as ``(P A + αI) X = P K₁ Rᵀ`` with ``A = K₁K₁ᵀ + K_pK_pᵀ`` (LU; the system is not
    symmetric), ``ΔW = Xᵀ``.  The solution satisfies ``αX = P(K₁Rᵀ − AX)``, so ``ΔW = ΔW P`` already:
    the returned update is the one to add to ``W`` (no further projection) and it vanishes on the
    directions ``P`` protects.

    Args:
        R: ``(d, n)`` residuals (1-D allowed for n = 1).
        K: ``(m, n)`` keys of this batch, ``K₁`` (1-D allowed for n = 1).
        P: ``(m, m)`` projector or a :class:`Projector`.
        K_prev: ``(m, n_prev)`` keys of earlier edits ``K_p``; ``None`` or ``n_prev = 0`` for none.
        alpha: Tikhonov term α > 0.

    Returns:
        ``(d, m)`` float32 on ``R``'s device.
    """
    if isinstance(P, Projector):
        P = P.P
    dev = _device_of(R)
    wd = _work_device(dev)
    R = _columns(_prep(R, "R", wd, "recompute the target values (z) and residuals"), "R", "(d, n)")
    K = _columns(_prep(K, "K", wd, "recompute the keys (check the hooked layer)"), "K", "(m, n)")
    P = _prep(P, "P", wd, "rebuild the projector with nullspace_projector()")
    alpha = _positive(alpha, "alpha", False, "AlphaEdit needs α > 0 because P is rank-deficient")
    _n_match(R, K)
    _square(P, "P")
    m = P.shape[0]
    _keys_vs(K, m, "P")
    A = K @ K.T
    if K_prev is not None:
        Kp = _columns(_prep(K_prev, "K_prev", wd, "recompute the keys of earlier edits"), "K_prev", "(m, n_prev)")
        if Kp.shape[1] > 0:
            if Kp.shape[0] != m:
                hint = " — transpose K_prev" if Kp.shape[1] == m else ""
                raise ShapeError(
                    f"K_prev is {tuple(Kp.shape)} but P needs m={m} rows{hint}: take every key from "
                    "the same layer"
                )
            A = A + Kp @ Kp.T
    M = P @ A + alpha * torch.eye(m, dtype=_F64, device=wd)
    X = _solve(M, P @ K @ R.T, "P(KKᵀ + K_pK_pᵀ) + αI", "increase alpha or check P", symmetric=False)
    return _out(X.T, dev, "the AlphaEdit update")


def rome_delta(v_star, k_star, W, C, k_read=None) -> torch.Tensor:
    """ROME rank-one update ``ΔW = (v* − W k) (C⁻¹k*)ᵀ / ((C⁻¹k*)ᵀ k)`` with ``k = k_read`` (default ``k*``).

    After the update ``(W + ΔW) k = v*`` exactly (up to rounding).  ROME itself takes the direction from
    the mean key over its context prefixes (``k*``, ``compute_u``) and the constraint at the bare prompt's
    key (``k_read``, ``compute_v``'s ``cur_input``).

    Args:
        v_star: ``(d,)`` target value (a ``(d, 1)`` column is accepted).
        k_star: ``(m,)`` key (a ``(m, 1)`` column is accepted).
        W: ``(d, m)`` current weight, out×in (transpose a GPT-2 ``Conv1D`` weight first).
        C: ``(m, m)`` uncentred key covariance (must be positive definite).
        k_read: ``(m,)`` the key the update must map to ``v*`` (default: ``k_star``).

    Returns:
        ``(d, m)`` float32 on ``v_star``'s device.
    """
    dev = _device_of(v_star)
    wd = _work_device(dev)
    v = _vector(_prep(v_star, "v_star", wd, "re-run the value optimisation"), "v_star", "(d,)")
    k = _vector(_prep(k_star, "k_star", wd, "recompute the key (check the hooked layer)"), "k_star", "(m,)")
    W = _prep(W, "W", wd, "the model weights are corrupted: reload the model")
    C = _prep(C, "C", wd, "rebuild the covariance cache")
    _matrix(W, "W", "(d, m)")
    d, m = W.shape
    if v.numel() != d or k.numel() != m:
        hint = " — W must be out×in: transpose a Conv1D weight" if (v.numel(), k.numel()) == (m, d) else ""
        raise ShapeError(
            f"W is {(d, m)} but v_star has {v.numel()} entries and k_star {k.numel()}: "
            f"need v_star (d,) and k_star (m,){hint}"
        )
    _square(C, "C", m)
    kr = k if k_read is None else _vector(_prep(k_read, "k_read", wd, "recompute the key"), "k_read", "(m,)")
    if kr.numel() != m:
        raise ShapeError(f"k_read has {kr.numel()} entries; need (m,) = ({m},)")
    u = _solve(C, k[:, None], "C", "rebuild C from more tokens or add a ridge (C + εI)", symmetric=True)[:, 0]
    denom = float(u @ kr)
    if not denom > 0 or denom < 1e-300:
        raise NumericalError(
            f"kᵀC⁻¹k* = {denom:.3g} is not positive: C is not positive definite or the keys point apart; "
            "rebuild the covariance cache"
        )
    return _out(torch.outer(v - W @ kr, u) / denom, dev, "the ROME update")


def _vector(x: torch.Tensor, name: str, want: str) -> torch.Tensor:
    if x.ndim == 2 and x.shape[1] == 1:
        return x[:, 0]
    if x.ndim != 1:
        raise ShapeError(f"{name} has shape {tuple(x.shape)}: pass a vector {want}")
    return x


#: Valid ``mode`` values of :func:`revive_filter`; the first is the default (the reference's filter).
REVIVE_MODES = ("two-sided", "block")


def revive_filter(delta, W0, tau: float = 0.9, mode: str = "two-sided") -> tuple[torch.Tensor, int]:
    """REVIVE filter: remove the part of an update that interferes with ``W₀``'s dominant subspace.

    With the thin SVD ``W₀ = U Σ Vᵀ`` (float64), ``k`` is the smallest count with
    ``Σ_{i≤k} σᵢ² ≥ τ Σ_i σᵢ²``; ``U_k: (d, k)``, ``V_k: (m, k)``, ``Σ_k: (k, k)``.

    ``mode="two-sided"`` (**default**, the reference's protection of the dominant region; REVIVE:
    "filter the components that interfere with the protected region") keeps only the component of
    the update outside both dominant singular subspaces:

        ``ΔW' = (I − U_kU_kᵀ) ΔW (I − V_kV_kᵀ)``,  so  ``U_kᵀ ΔW' = 0``  and  ``ΔW' V_k = 0``.

    Hence ``(U_k, Σ_k, V_k)`` stay exact singular triplets of the edited weight:
    ``(W₀ + ΔW') V_k = U_kΣ_k + ΔW'V_k = U_kΣ_k`` and ``(W₀ + ΔW')ᵀ U_k = V_kΣ_k + ΔW'ᵀU_k = V_kΣ_k``.
    (They need not stay the *top* k: ``ΔW'`` may add singular values above ``σ_k`` in the complement.)

    ``mode="block"`` (the earlier, weaker filter) zeroes only the ``k × k`` block ``U_kᵀ ΔW V_k``:
    ``ΔW' = ΔW − U_k U_kᵀ ΔW V_k V_kᵀ``.  Its cross terms ``U_kU_kᵀ ΔW (I − V_kV_kᵀ)`` and
    ``(I − U_kU_kᵀ) ΔW V_kV_kᵀ`` are kept, so ``U_kᵀ ΔW' ≠ 0`` in general and the dominant singular
    vectors of ``W₀`` still rotate.

    Args:
        delta: ``(d, m)`` update ``ΔW`` from any editor.
        W0: ``(d, m)`` the unedited weight, out×in.
        tau: energy share τ in (0, 1] defining the dominant subspace.
        mode: ``"two-sided"`` (default) or ``"block"``; see above.

    Returns:
        ``(filtered, k)``: ``filtered`` ``(d, m)`` float32 on ``delta``'s device, ``k`` the dominant rank.
    """
    if mode not in REVIVE_MODES:
        raise ShapeError(f"mode is {mode!r}: pass 'two-sided' (the default, REVIVE's filter) or 'block'")
    dev = _device_of(delta)
    wd = _work_device(dev)
    D = _prep(delta, "delta", wd, "recompute the update")
    W = _prep(W0, "W0", wd, "the model weights are corrupted: reload the model")
    _matrix(D, "delta", "(d, m)")
    _matrix(W, "W0", "(d, m)")
    if D.shape != W.shape:
        raise ShapeError(f"delta is {tuple(D.shape)} but W0 is {tuple(W.shape)}: both must be (d, m), out×in")
    tau = _positive(tau, "tau", False, "REVIVE uses an energy share such as 0.9")
    if tau > 1:
        raise ShapeError(f"tau is {tau!r}: pass an energy share in (0, 1]")
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    energy = (S * S).cumsum(0)
    total = float(energy[-1])
    if total <= 0:
        raise NumericalError("W0 is the zero matrix, so it has no dominant subspace: pass the unedited weight")
    target = torch.tensor([tau * total * (1 - 1e-12)], dtype=_F64, device=energy.device)
    k = min(int(torch.searchsorted(energy, target)) + 1, S.numel())
    Uk, Vk = U[:, :k], Vh[:k].T
    if mode == "block":
        filtered = D - Uk @ ((Uk.T @ D @ Vk) @ Vk.T)
    else:
        left = D - Uk @ (Uk.T @ D)  # (I − U_kU_kᵀ) ΔW
        filtered = left - (left @ Vk) @ Vk.T  # … (I − V_kV_kᵀ)
    return _out(filtered, dev, "the filtered update"), k


# ------------------------------------------------------------------------------- spectral helpers


def _psd_tol(x: object) -> float:
    """Relative size of a negative eigenvalue that rounding of ``x``'s dtype can explain."""
    dtype = x.dtype if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x)[:0]).dtype
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else torch.finfo(torch.float64).eps
    m = x.shape[0] if len(x.shape) else 1
    return max(1e-8, 100.0 * eps * math.sqrt(max(m, 1)))


def _sym_eigh(A: torch.Tensor, name: str, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """eigh of a symmetric PSD float64 matrix after checking symmetry and semidefiniteness.

    ``tol`` is the relative (to the largest |eigenvalue|) negativity that rounding may explain.
    """
    _square(A, name)
    scale = float(A.abs().max())
    if scale > 0 and float((A - A.T).abs().max()) > 1e-5 * scale:
        raise NumericalError(f"{name} is not symmetric: pass an uncentred covariance E[k kᵀ]")
    evals, evecs = torch.linalg.eigh(0.5 * (A + A.T))
    if scale > 0 and float(evals[0]) < -tol * float(evals.abs().max()):
        raise NumericalError(
            f"{name} has a negative eigenvalue {float(evals[0]):.3g}: it is not positive semidefinite; "
            "rebuild the covariance cache"
        )
    return evals, evecs


def _spectrum(A) -> torch.Tensor:
    dev = _work_device(_device_of(A))
    tol = _psd_tol(A)
    A = _prep(A, "the matrix", dev, "rebuild the covariance cache")
    if A.ndim == 1:
        if A.numel() == 0:
            raise ShapeError("the spectrum is empty: pass a non-empty matrix or eigenvalue vector")
        if float(A.min()) < -tol * float(A.abs().max()):
            raise NumericalError(
                f"the eigenvalues include a negative one ({float(A.min()):.3g}): pass a PSD spectrum"
            )
        return A.clamp(min=0)
    return _sym_eigh(A, "the matrix", tol)[0].clamp(min=0)


def condition_number(A) -> float:
    """Spectral condition number ``λ_max / λ_min`` of a symmetric PSD matrix.

    Args:
        A: ``(m, m)`` symmetric PSD matrix, or its ``(m,)`` eigenvalues.

    Returns:
        A float ≥ 1; ``math.inf`` when the matrix is numerically singular, i.e. its smallest
        eigenvalue is at most ``m · eps₆₄ · λ_max`` (the usual numerical-rank cutoff; an exact zero
        eigenvalue comes out of ``eigh`` as ±1e-16-sized noise).  The zero matrix gives ``inf``.
    """
    ev = _spectrum(A)
    lo, hi = float(ev.min()), float(ev.max())
    if hi <= 0 or lo <= ev.numel() * torch.finfo(_F64).eps * hi:
        return math.inf
    return hi / lo


def effective_rank(A) -> float:
    """Effective rank ``exp(H(p))``, ``p = λ / Σλ`` the normalised eigenvalues (Roy & Vetterli).

    Equals ``m`` for a multiple of the identity and 1 for a rank-one matrix.  Negative rounding
    noise in the eigenvalues is clipped to zero.

    Args:
        A: ``(m, m)`` symmetric PSD matrix, or its ``(m,)`` eigenvalues.

    Returns:
        A float in ``[1, m]``; 0.0 for the zero matrix.
    """
    ev = _spectrum(A)
    total = float(ev.sum())
    if total <= 0:
        return 0.0
    p = ev / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))
