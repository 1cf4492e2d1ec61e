"""Covariance spectrum of the keys (RoSE App. A): eigenvalues of C_l, conditioning, and where the prompt
drift Δk falls in the spectrum — the mechanism of the Covariance Trap."""

from __future__ import annotations

import pandas as pd
import torch

from .. import linalg
from ..errors import GeomprobeError


def _eigh(C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    C = C.double().cpu()
    if C.dim() != 2 or C.shape[0] != C.shape[1]:
        raise GeomprobeError(f"C must be square, got {tuple(C.shape)}")
    if not torch.isfinite(C).all():
        raise GeomprobeError("C holds NaN/Inf; rebuild the covariance cache (geomprobe stats)")
    evals, evecs = torch.linalg.eigh((C + C.T) / 2)
    return evals.clamp(min=0).flip(0), evecs.flip(1)  # descending


def covariance_spectrum(C: torch.Tensor, layer: int | None = None, low_share: float = 0.5) -> pd.DataFrame:
    """Eigenvalues (descending) of C as rows ``layer, rank, metric="eigenvalue", value, share`` plus
    summary rows ``condition_number`` and ``effective_rank``.

    Args:
        low_share: the lowest ``low_share`` fraction of directions counts as "low variance" elsewhere.
    """
    evals, _ = _eigh(C)
    total = float(evals.sum())
    if total <= 0:
        raise GeomprobeError("C is zero; the covariance was built from no tokens")
    rows = [{"layer": layer, "rank": i + 1, "metric": "eigenvalue", "value": float(v), "share": float(v) / total}
            for i, v in enumerate(evals)]
    rows.append({"layer": layer, "rank": None, "metric": "condition_number", "value": linalg.condition_number(C),
                 "share": None})
    rows.append({"layer": layer, "rank": None, "metric": "effective_rank", "value": linalg.effective_rank(C),
                 "share": None})
    return pd.DataFrame(rows)


def drift_in_spectrum(C: torch.Tensor, dk: torch.Tensor, R: torch.Tensor, K: torch.Tensor, lam: float,
                      alpha: float = 1.0, low_share: float = 0.5, layer: int | None = None) -> pd.DataFrame:
    """Where Δk falls in C's spectrum and how much the covariance update amplifies it over the identity one.

    Args:
        C: (m, m) key covariance.
        dk: (m, n) key drifts ``k_form − k_decl``.
        R, K: residuals (d, n_cols) and keys (m, n_cols) of an update.

    Returns:
        one row per drift column with ``low_variance_share`` (share of ‖Δk‖² on the lowest ``low_share``
        fraction of eigen-directions), ``amplification`` (‖ΔW_C Δk‖ / ‖ΔW_I Δk‖) and the two norms.
    """
    if dk.dim() == 1:
        dk = dk[:, None]
    evals, evecs = _eigh(C)
    m = len(evals)
    n_low = max(1, int(round(low_share * m)))
    coords = evecs.T @ dk.double().cpu()  # (m, n) in the eigenbasis, descending variance
    energy = coords.pow(2)
    low = energy[-n_low:].sum(0) / energy.sum(0).clamp_min(1e-30)
    dW_c = linalg.memit_delta(R, K, C, lam).double().cpu()
    dW_i = linalg.isotropic_delta(R, K, alpha).double().cpu()
    dev_c = (dW_c @ dk.double().cpu()).norm(dim=0)
    dev_i = (dW_i @ dk.double().cpu()).norm(dim=0)
    return pd.DataFrame({"layer": layer, "drift": range(dk.shape[1]), "low_variance_share": low.numpy(),
                         "deviation_covariance": dev_c.numpy(), "deviation_identity": dev_i.numpy(),
                         "amplification": (dev_c / dev_i.clamp_min(1e-30)).numpy(), "low_share": low_share})
