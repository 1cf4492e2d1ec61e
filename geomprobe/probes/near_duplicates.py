"""Near-duplicate subjects (RoSE Fig. 15, Tab. 3): key cosines of twin subjects and the teacher-forced
log-probability of a target after arbitrary prompt texts (to measure how an edit pulls a twin's prompts)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import pandas as pd
import torch

from ..data.forms import Rendered
from ..models.load import LM
from ..scoring import target_logprob, with_targets
from .key_similarity import FORMS3, cosine_matrix, form_keys


def mean_target_logprob(lm: LM, texts: Sequence[str], targets: Sequence[str], batch_size: int = 16) -> list[float]:
    """Mean per-token log-prob of each target after its full prompt text (teacher-forced, no gradient)."""
    out: list[float] = []
    texts, targets = list(texts), list(targets)
    for s in range(0, len(texts), batch_size):
        chunk = texts[s:s + batch_size]
        prompts = [Rendered(t, (len(t) - len(t.lstrip()), len(t) - len(t.lstrip()) + 1), "declarative") for t in chunk]
        tb = with_targets(lm.tokenizer, prompts, targets[s:s + batch_size])
        with torch.no_grad():
            logits = lm.forward(tb.batch)
        lp = target_logprob(logits, tb.labels.to(logits.device)).cpu()
        out += (lp / tb.n_target.float()).tolist()
    return out


def pair_id(case_id: str) -> str:
    """``"nd03"`` of ``"nd03-a"``: the pair a near-duplicate request belongs to."""
    return case_id.rpartition("-")[0]


def near_duplicate_key_cosines(lm: LM, pairs: Sequence[tuple], layer: int,
                               forms: Sequence[str] = FORMS3) -> pd.DataFrame:
    """Key cosines at ``layer`` between every two subjects of ``pairs`` (``(a, b)`` request pairs whose case ids
    end in ``-a`` / ``-b``), per form: ``pair_kind`` ``near-duplicate`` for the two sides of one pair,
    ``different-subject`` for subjects of two pairs.

    Columns: ``kind, editor, pair, form, probe, metric, value, pair_kind, subject_a, subject_b`` (``kind`` and
    ``metric`` ``key_cosine``; ``editor`` / ``probe`` empty: the layout of the Fig. 15 CSV).
    """
    reqs = [r for pair in pairs for r in pair]
    K, index = form_keys(lm, reqs, [layer], forms=forms)
    pid = {r.case_id: pair_id(r.case_id) for r in reqs}
    rows = []
    for form in forms:
        idx = index[index["form"] == form]
        if len(idx) < 2:
            continue
        C = cosine_matrix(K[torch.tensor(idx["row"].tolist()), 0])
        cases = list(idx["case_id"])
        subj = list(idx["subject"])
        for i, j in combinations(range(len(cases)), 2):
            same = pid[cases[i]] == pid[cases[j]]
            rows.append({"kind": "key_cosine", "editor": "", "pair": pid[cases[i]] if same else
                         f"{pid[cases[i]]}|{pid[cases[j]]}", "form": form, "probe": "",
                         "metric": "key_cosine", "value": float(C[i, j]),
                         "pair_kind": "near-duplicate" if same else "different-subject",
                         "subject_a": subj[i], "subject_b": subj[j]})
    return pd.DataFrame(rows, columns=["kind", "editor", "pair", "form", "probe", "metric", "value", "pair_kind",
                                       "subject_a", "subject_b"])


__all__ = ["mean_target_logprob", "near_duplicate_key_cosines", "pair_id"]
