"""Key heatmap (RoSE Fig. 4, 11): cosines of two subjects' keys in three forms at one layer."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ..models.load import LM
from .key_similarity import FORMS3, cosine_matrix, form_keys

#: short labels of the three forms on the heatmap axes
FORM_LABELS = {"declarative": "Decl", "question": "Q-Form", "instruction": "Inst-Form"}


def key_heatmap(lm: LM, requests: Sequence, layer: int) -> pd.DataFrame:
    """Ordered-pair key cosines of the first two subjects of ``requests`` (their first request each) × three
    forms at ``layer`` (the Fig. 4 layout).

    Columns: ``layer, label_a, label_b, subject_a, subject_b, value`` (labels ``S1 Decl``, ``S2 Q-Form``...).
    """
    subjects = list(dict.fromkeys(r.subject for r in requests))[:2]
    firsts = [next(r for r in requests if r.subject == s) for s in subjects]
    K, index = form_keys(lm, firsts, [layer], FORMS3)
    S = cosine_matrix(K[:, 0])
    names = {s: f"S{i + 1}" for i, s in enumerate(subjects)}
    labels = [f"{names[s]} {FORM_LABELS[f]}" for s, f in zip(index["subject"], index["form"])]
    rows = [{"layer": layer, "label_a": labels[i], "label_b": labels[j], "subject_a": index["subject"][i],
             "subject_b": index["subject"][j], "value": float(S[i, j])}
            for i in range(len(labels)) for j in range(len(labels))]
    return pd.DataFrame(rows)


__all__ = ["FORM_LABELS", "key_heatmap"]
