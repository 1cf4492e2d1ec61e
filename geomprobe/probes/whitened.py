"""Whitened key similarity (REP, Fig. 3): ``k₁ᵀC⁻¹k₂ / √(k₁ᵀC⁻¹k₁ · k₂ᵀC⁻¹k₂)``.

Measures how similar two keys look *to the covariance-weighted closed form*: a paraphrase whose key is
close in cosine can still be far in the whitened metric when the difference lies on low-variance directions.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from ..data.forms import render
from ..data.requests import EditRequest
from ..errors import GeomprobeError, NumericalError
from ..key_reads import keys
from ..models.load import LM


def whitened_similarity(k1: torch.Tensor, k2: torch.Tensor, C: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """Whitened cosine between columns of ``k1`` (m, n) and ``k2`` (m, n) → (n,).

    ``C`` gets ``ridge · tr(C)/m`` added to its diagonal so a rank-deficient estimate stays invertible.
    """
    k1 = k1[:, None] if k1.dim() == 1 else k1
    k2 = k2[:, None] if k2.dim() == 1 else k2
    if k1.shape != k2.shape or C.shape != (k1.shape[0], k1.shape[0]):
        raise GeomprobeError(f"shapes do not match: k1 {tuple(k1.shape)}, k2 {tuple(k2.shape)}, C {tuple(C.shape)}")
    C = C.double().cpu()
    if not (torch.isfinite(C).all() and torch.isfinite(k1).all() and torch.isfinite(k2).all()):
        raise NumericalError("keys or C hold NaN/Inf; rebuild the covariance cache or use float32")
    m = C.shape[0]
    A = C + ridge * torch.trace(C) / m * torch.eye(m, dtype=torch.float64)
    try:
        L = torch.linalg.cholesky(A)
    except RuntimeError:
        raise NumericalError("C is not positive definite even with the ridge; raise ridge or rebuild C") from None
    w1 = torch.linalg.solve_triangular(L, k1.double().cpu(), upper=False)
    w2 = torch.linalg.solve_triangular(L, k2.double().cpu(), upper=False)
    return ((w1 * w2).sum(0) / (w1.norm(dim=0) * w2.norm(dim=0)).clamp_min(1e-30)).float()


LONG_CONTEXT = ("The following passage is part of a long document about many different topics, written for "
                "general readers. It covers history, geography, science and everyday life in some detail. ")


def whitened_key_similarity(lm: LM, requests: Sequence[EditRequest], layer: int, C: torch.Tensor,
                            long_context: str = LONG_CONTEXT) -> pd.DataFrame:
    """Whitened and plain cosines between each request's original key and its paraphrase keys and a
    long-context key (the edit prompt after ``long_context``).

    Columns: ``case_id, subject, variant ("paraphrase"|"long-context"), prompt_idx, layer, metric, value``
    with metric ``whitened_similarity`` or ``cosine``.
    """
    orig, other, meta = [], [], []
    for r in requests:
        base = render(r.prompt, r.subject, "declarative")
        for j, p in enumerate(r.paraphrases):
            orig.append(base)
            other.append(p)
            meta.append((r, "paraphrase", j))
        orig.append(base)
        other.append(render(long_context + r.prompt, r.subject, "declarative"))
        meta.append((r, "long-context", 0))
    if not orig:
        raise GeomprobeError("no requests given")
    subjects = [m[0].subject for m in meta]
    k1 = keys(lm, orig, None, [layer])[:, 0].T
    k2 = keys(lm, other, subjects, [layer])[:, 0].T
    ws = whitened_similarity(k1, k2, C)
    cos = torch.nn.functional.cosine_similarity(k1, k2, dim=0)
    rows = []
    for n, (r, variant, j) in enumerate(meta):
        for metric, v in (("whitened_similarity", ws[n]), ("cosine", cos[n])):
            rows.append({"case_id": r.case_id, "subject": r.subject, "variant": variant, "prompt_idx": j,
                         "layer": layer, "metric": metric, "value": float(v)})
    return pd.DataFrame(rows)
