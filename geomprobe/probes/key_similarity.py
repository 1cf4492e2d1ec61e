"""Key similarity: cosines between keys across forms, subjects and layers (RoSE Fig. 4, 11, 13–15)."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from ..data.forms import eval_prompts
from ..data.requests import EditRequest
from ..errors import GeomprobeError
from ..key_reads import keys
from ..models.load import LM

FORMS3 = ("declarative", "question", "instruction")


def form_keys(lm: LM, requests: Sequence[EditRequest], layers: Sequence[int],
              forms: Sequence[str] = FORMS3) -> tuple[torch.Tensor, pd.DataFrame]:
    """Keys of each request's first prompt in each form.

    Returns:
        ``(K, index)``: K (n, n_layers, d_mlp) float32 CPU, and a DataFrame with one row per key
        (``row, case_id, subject, relation, form``).  Requests with no prompt in a form are skipped there.
    """
    prompts, rows = [], []
    for r in requests:
        for form in forms:
            ps = eval_prompts(r, form, lm.tokenizer)
            if ps:
                prompts.append(ps[0])
                rows.append({"case_id": r.case_id, "subject": r.subject, "relation": r.relation, "form": form})
    if not prompts:
        raise GeomprobeError("no prompts to take keys from; pass requests with prompts in the asked forms")
    index = pd.DataFrame(rows)
    index.insert(0, "row", range(len(index)))
    return keys(lm, prompts, None, list(layers)), index


def cosine_matrix(K: torch.Tensor, centre: bool = False) -> torch.Tensor:
    """Pairwise cosines of the rows of ``K`` (n, m); ``centre`` subtracts the mean key first."""
    if K.dim() != 2 or len(K) == 0:
        raise GeomprobeError(f"expected keys of shape (n, m) with n > 0, got {tuple(K.shape)}")
    K = K.double()
    if centre:
        K = K - K.mean(0, keepdim=True)
    if not torch.isfinite(K).all():
        raise GeomprobeError("keys hold NaN/Inf; check the model's dtype (use float32) and the prompts")
    Kn = torch.nn.functional.normalize(K, dim=-1)
    return (Kn @ Kn.T).float()


def key_similarity(lm: LM, requests: Sequence[EditRequest], layers: Sequence[int],
                   forms: Sequence[str] = FORMS3, centre: bool = False) -> pd.DataFrame:
    """Pairwise key cosines, one row per pair of (subject, form) keys and layer.

    Columns: ``layer, subject_a, form_a, subject_b, form_b, relation_a, relation_b, pair, metric, value,
    centred`` where ``pair`` is ``same-subject`` (same subject, different forms), ``different-subject``
    (different subjects, same form) or ``other``; ``metric`` is ``key_cosine``.
    """
    K, index = form_keys(lm, requests, layers, forms)
    out = []
    for li, layer in enumerate(layers):
        S = cosine_matrix(K[:, li], centre)
        a, b = torch.triu_indices(len(index), len(index), offset=1)
        ia, ib = index.iloc[a.numpy()].reset_index(drop=True), index.iloc[b.numpy()].reset_index(drop=True)
        same_subject = (ia["subject"] == ib["subject"]).to_numpy()
        same_form = (ia["form"] == ib["form"]).to_numpy()
        pair = pd.Series("other", index=ia.index)
        pair[same_subject & ~same_form] = "same-subject"
        pair[~same_subject & same_form] = "different-subject"
        pair[same_subject & same_form] = "same-subject-same-form"
        out.append(pd.DataFrame({
            "layer": layer, "subject_a": ia["subject"], "form_a": ia["form"], "relation_a": ia["relation"],
            "subject_b": ib["subject"], "form_b": ib["form"], "relation_b": ib["relation"], "pair": pair,
            "metric": "key_cosine", "value": S[a, b].numpy(), "centred": centre,
        }))
    return pd.concat(out, ignore_index=True)
