"""The update rules, one registry: rule name -> how ΔW is solved from residuals ``R`` and keys ``K``.

=================  ==================================================================  ============
rule               ΔW                                                                  needs
=================  ==================================================================  ============
``covariance``     ``R Kᵀ (λC + KKᵀ)⁻¹`` (MEMIT)                                       C
``identity``       ``R Kᵀ (αI + KKᵀ)⁻¹`` (RoSE's IGA)                                  —
``projection``     AlphaEdit: null-space projector of C (+ earlier keys ``K_prev``)    C
``rank-one``       ROME: ``ΔW = r (C⁻¹k̄)ᵀ / (kᵀC⁻¹k̄)``, so ``ΔW k = r = v* − W k``      C, W
=================  ==================================================================  ============

Both the editors (:meth:`geomprobe.editors.locate.Editor.compute`) and the counterfactual rules of
:func:`geomprobe.probes.deviation.activation_deviation` solve through :func:`solve`, so a rule means the
same thing wherever it is named.  Tensors are used where they are: move them to one device first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .. import linalg
from ..errors import GeomprobeError
from .config import RULES, EditorConfig, Rule


def _covariance(R, K, cfg, C, K_prev, W):
    return linalg.memit_delta(R, K, C, cfg.lam)


def _identity(R, K, cfg, C, K_prev, W):
    return linalg.isotropic_delta(R, K, cfg.alpha)


def _projection(R, K, cfg, C, K_prev, W):
    proj = linalg.nullspace_projector(C, cfg.projection_threshold, cfg.projection_mode)
    return linalg.alphaedit_delta(R, K, proj.P, K_prev, cfg.l2)


def _rank_one(R, K, cfg, C, K_prev, W, K_read=None):
    if R.shape[1] != 1 or K.shape[1] != 1 or (K_read is not None and K_read.shape != K.shape):
        raise GeomprobeError(f"the rank-one rule writes one key at a time, got {K.shape[1]} keys; "
                             "edit the requests one after another (rome)")
    k_read = K[:, 0] if K_read is None else K_read[:, 0]
    v_star = W @ k_read + R[:, 0]  # v* − b = W k + δ at the key the update must map
    return linalg.rome_delta(v_star, K[:, 0], W, C, k_read=k_read)


@dataclass(frozen=True)
class UpdateRule:
    """One rule: its solver and the inputs it needs besides ``R``, ``K`` and the config."""

    name: Rule
    solver: Callable[..., torch.Tensor]
    needs_covariance: bool
    needs_weight: bool = False
    uses_previous_keys: bool = False


UPDATE_RULES: dict[Rule, UpdateRule] = {
    "covariance": UpdateRule("covariance", _covariance, needs_covariance=True),
    "identity": UpdateRule("identity", _identity, needs_covariance=False),
    "projection": UpdateRule("projection", _projection, needs_covariance=True, uses_previous_keys=True),
    "rank-one": UpdateRule("rank-one", _rank_one, needs_covariance=True, needs_weight=True),
}
assert tuple(UPDATE_RULES) == RULES


def get_rule(rule: str) -> UpdateRule:
    """The registry entry of ``rule``; an unknown name is an error."""
    try:
        return UPDATE_RULES[rule]  # type: ignore[index]
    except KeyError:
        raise GeomprobeError(f"unknown update rule {rule!r}; use one of {', '.join(RULES)}") from None


def solve(rule: Rule, R: torch.Tensor, K: torch.Tensor, cfg: EditorConfig, C: torch.Tensor | None = None,
          K_prev: torch.Tensor | None = None, W: torch.Tensor | None = None,
          K_read: torch.Tensor | None = None) -> torch.Tensor:
    """ΔW (d, m) under ``rule`` for residuals ``R`` (d, n) and keys ``K`` (m, n).

    Args:
        cfg: λ (``lam``), α (``alpha``, isotropic), AlphaEdit's ``l2`` and the projection settings.
        C: (m, m) key covariance, for the rules that need it.
        K_prev: (m, n_prev) keys of earlier edits to protect (``projection`` only; ignored by the others).
        W: (d, m) current weight (``rank-one`` only).
        K_read: (m, 1) ``rank-one`` only: the key at which ``ΔW k = R`` must hold when it differs from the
            direction key ``K`` (ROME: the bare prompt's key; ``K`` the mean over its context copies).
    """
    spec = get_rule(rule)
    if spec.needs_covariance and C is None:
        raise GeomprobeError(f"update rule {rule!r} needs the key covariance C")
    if spec.needs_weight and W is None:
        raise GeomprobeError(f"update rule {rule!r} needs the current weight W")
    extra = {"K_read": K_read} if rule == "rank-one" else {}
    return spec.solver(R, K, cfg, C, K_prev if spec.uses_previous_keys else None, W, **extra)
