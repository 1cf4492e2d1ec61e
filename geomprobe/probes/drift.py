"""Singular-subspace drift over sequential edits (REVIVE): LS_k, SS_i, ‖W_t‖/‖W₀‖, top-k energy."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from ..errors import GeomprobeError


def _svd(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    W = W.double().cpu()
    if not torch.isfinite(W).all():
        raise GeomprobeError("weight holds NaN/Inf; the edits diverged")
    U, S, _ = torch.linalg.svd(W, full_matrices=False)
    return U, S


def subspace_drift(W0: torch.Tensor, Ws: Sequence[torch.Tensor], k: int = 32, n_directions: int = 8,
                   steps: Sequence[int] | None = None, layer: int | None = None) -> pd.DataFrame:
    """Drift of the dominant singular subspace of ``W0`` (d, m) along edited weights ``Ws``.

    Metrics per step t (one row each): ``LS_k = ‖U_k(W₀)ᵀ U_k(W_t)‖_F² / k``, ``SS_i = |cos(u_i(W₀), u_i(W_t))|``
    for i < n_directions, ``norm_ratio = ‖W_t‖_F / ‖W₀‖_F`` and ``topk_energy = Σ_{i≤k} σ_i² / Σ σ_i²``.
    """
    if not Ws:
        raise GeomprobeError("no edited weights given; pass the weight after each edit")
    U0, S0 = _svd(W0)
    k = min(k, len(S0))
    steps = list(steps) if steps is not None else list(range(1, len(Ws) + 1))
    if len(steps) != len(Ws):
        raise GeomprobeError(f"{len(steps)} step labels for {len(Ws)} weights")
    rows = [{"layer": layer, "step": 0, "metric": "LS_k", "index": k, "value": 1.0},
            {"layer": layer, "step": 0, "metric": "norm_ratio", "index": None, "value": 1.0},
            {"layer": layer, "step": 0, "metric": "topk_energy", "index": k,
             "value": float(S0[:k].pow(2).sum() / S0.pow(2).sum())}]
    rows += [{"layer": layer, "step": 0, "metric": "SS", "index": i, "value": 1.0} for i in range(n_directions)]
    n0 = float(W0.double().norm())
    for t, W in zip(steps, Ws):
        if W.shape != W0.shape:
            raise GeomprobeError(f"weight shape {tuple(W.shape)} differs from W0 {tuple(W0.shape)}")
        U, S = _svd(W)
        ls = float((U0[:, :k].T @ U[:, :k]).pow(2).sum() / k)
        rows.append({"layer": layer, "step": t, "metric": "LS_k", "index": k, "value": ls})
        rows.append({"layer": layer, "step": t, "metric": "norm_ratio", "index": None,
                     "value": float(W.double().norm()) / n0})
        rows.append({"layer": layer, "step": t, "metric": "topk_energy", "index": k,
                     "value": float(S[:k].pow(2).sum() / S.pow(2).sum())})
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
