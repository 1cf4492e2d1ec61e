"""Singular-subspace drift over sequential edits (REVIVE): LS_k, SS_i, ‖W_t‖/‖W₀‖, top-k energy, and how
well ``W₀``'s own top-k singular triplets survive (triplet residual, preserved count)."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from ..errors import GeomprobeError


#: Relative residual ``‖W_t v_i − σ_i u_i‖ / σ_i`` below which a triplet of ``W₀`` counts as preserved.
PRESERVED_TOL = 1e-6


def _svd(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    W = W.double().cpu()
    if not torch.isfinite(W).all():
        raise GeomprobeError("weight holds NaN/Inf; the edits diverged")
    return torch.linalg.svd(W, full_matrices=False)


def subspace_drift(W0: torch.Tensor, Ws: Sequence[torch.Tensor], k: int = 32, n_directions: int = 8,
                   steps: Sequence[int] | None = None, layer: int | None = None) -> pd.DataFrame:
    """Drift of the dominant singular subspace of ``W0`` (d, m) along edited weights ``Ws``.

    Metrics per step t (one row each): ``LS_k = ‖U_k(W₀)ᵀ U_k(W_t)‖_F² / k``, ``SS_i = |cos(u_i(W₀), u_i(W_t))|``
    for i < n_directions, ``norm_ratio = ‖W_t‖_F / ‖W₀‖_F`` and ``topk_energy = Σ_{i≤k} σ_i² / Σ σ_i²``.

    LS_k and SS_i compare the top-k *sets* of ``W₀`` and ``W_t``, which reorder as soon as an update adds a
    singular value above ``σ_k`` even when ``W₀``'s directions are untouched.  Two metrics therefore check
    ``W₀``'s own top-k triplets ``(u_i, σ_i, v_i)`` directly in ``W_t`` (index = k, float64):
    ``triplet_residual = max_{i<k} ‖W_t v_i − σ_i u_i‖ / σ_i`` (0 when all are preserved exactly) and
    ``preserved_k = #{i < k : ‖W_t v_i − σ_i u_i‖ / σ_i < PRESERVED_TOL}`` (1e-6).  A two-sided REVIVE
    filtered update (:func:`geomprobe.linalg.revive_filter`) keeps ``preserved_k = k``.  Step 0: 0.0 and k.

    Args:
        W0: ``(d, m)`` unedited weight, out×in.
        Ws: ``(d, m)`` weights after each edit.
        k: size of the dominant subspace (clipped to ``min(d, m)``).
        n_directions: how many leading directions get an ``SS`` row.
        steps: step labels for ``Ws`` (default 1..len(Ws)).
        layer: value of the ``layer`` column.

    Returns:
        long DataFrame with columns layer, step, metric, index, value.
    """
    if not Ws:
        raise GeomprobeError("no edited weights given; pass the weight after each edit")
    U0, S0, V0h = _svd(W0)
    k = min(k, len(S0))
    # relative residuals divide by σ_i; a zero σ_i (rank-deficient W0) is floored so the residual stays finite
    floor = max(float(S0[0]) * 1e-12, torch.finfo(torch.float64).tiny) if len(S0) else 1.0
    Uk0, Sk0, Vk0 = U0[:, :k], S0[:k].clamp_min(floor), V0h[:k].T
    steps = list(steps) if steps is not None else list(range(1, len(Ws) + 1))
    if len(steps) != len(Ws):
        raise GeomprobeError(f"{len(steps)} step labels for {len(Ws)} weights")
    rows = [{"layer": layer, "step": 0, "metric": "LS_k", "index": k, "value": 1.0},
            {"layer": layer, "step": 0, "metric": "norm_ratio", "index": None, "value": 1.0},
            {"layer": layer, "step": 0, "metric": "topk_energy", "index": k,
             "value": float(S0[:k].pow(2).sum() / S0.pow(2).sum())},
            {"layer": layer, "step": 0, "metric": "triplet_residual", "index": k, "value": 0.0},
            {"layer": layer, "step": 0, "metric": "preserved_k", "index": k, "value": float(k)}]
    rows += [{"layer": layer, "step": 0, "metric": "SS", "index": i, "value": 1.0} for i in range(n_directions)]
    n0 = float(W0.double().norm())
    for t, W in zip(steps, Ws):
        if W.shape != W0.shape:
            raise GeomprobeError(f"weight shape {tuple(W.shape)} differs from W0 {tuple(W0.shape)}")
        U, S, _ = _svd(W)
        ls = float((U0[:, :k].T @ U[:, :k]).pow(2).sum() / k)
        rows.append({"layer": layer, "step": t, "metric": "LS_k", "index": k, "value": ls})
        rows.append({"layer": layer, "step": t, "metric": "norm_ratio", "index": None,
                     "value": float(W.double().norm()) / n0})
        rows.append({"layer": layer, "step": t, "metric": "topk_energy", "index": k,
                     "value": float(S[:k].pow(2).sum() / S.pow(2).sum())})
        res = (W.double().cpu() @ Vk0 - Uk0 * S0[:k]).norm(dim=0) / Sk0  # (k,) relative residuals
        rows.append({"layer": layer, "step": t, "metric": "triplet_residual", "index": k,
                     "value": float(res.max()) if k else 0.0})
        rows.append({"layer": layer, "step": t, "metric": "preserved_k", "index": k,
                     "value": float(int((res < PRESERVED_TOL).sum()))})
        for i in range(min(n_directions, len(S))):
            rows.append({"layer": layer, "step": t, "metric": "SS", "index": i,
                         "value": float((U0[:, i] @ U[:, i]).abs())})
    return pd.DataFrame(rows)


def perplexity(lm, texts: Sequence[str], max_len: int = 128, batch_size: int = 8) -> float:
    """Token-level perplexity of ``texts`` (a general-ability proxy to read next to drift)."""
    from ..positions import tokenize

    if not texts:
        raise GeomprobeError("no texts for perplexity; pass at least one")
    nll, count = 0.0, 0
    for i in range(0, len(texts), batch_size):
        batch = tokenize(lm.tokenizer, list(texts[i:i + batch_size]), padding_side="right", max_length=max_len)
        with torch.no_grad():
            logits = lm.forward(batch).float()
        ids = batch.input_ids.to(logits.device)
        mask = batch.attention_mask.to(logits.device)[:, 1:].bool()
        lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        nll -= float(lp[mask].sum())
        count += int(mask.sum())
    return float(torch.exp(torch.tensor(nll / max(count, 1))))
