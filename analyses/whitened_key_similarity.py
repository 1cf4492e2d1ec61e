"""whitened_key_similarity: REP's whitened similarity k₁ᵀC⁻¹k₂ / √(k₁ᵀC⁻¹k₁ · k₂ᵀC⁻¹k₂) between the original
edit key and the keys of paraphrased and long-context prompts, beside the plain cosine (REP Fig. 3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

import geomprobe as gp
from geomprobe.pipeline import main
from geomprobe.plots.spectral import VARIANTS, plot_whitened_similarity
from geomprobe.tables import model_of
from geomprobe.workspace import Workspace

ID = "whitened_key_similarity"
PAPER = "REP (Yan et al.) Fig. 3"
WHAT = ("Whitened key similarity (the metric of the covariance closed form) and plain cosine between each edit "
        "prompt's key and its paraphrase / long-context keys at the last edit layer; keys of other subjects as "
        "the unrelated baseline.")
COLUMNS = ("variant", "metric", "value")


def _other_subject_pairs(ws: Workspace, layer: int, C: torch.Tensor) -> pd.DataFrame:
    """Baseline: the edit key against the edit key of a different subject (same relation when possible)."""
    reqs = ws.batch
    pool = ws.all_requests
    pairs = []
    for r in reqs:
        others = [o for o in pool if o.subject != r.subject]
        if not others:
            continue
        same_rel = [o for o in others if o.relation == r.relation]
        pairs.append((r, (same_rel or others)[0]))
    if not pairs:
        return pd.DataFrame()
    k1 = gp.keys(ws.lm, [gp.render(r.prompt, r.subject, "declarative") for r, _ in pairs], None, [layer])[:, 0].T
    k2 = gp.keys(ws.lm, [gp.render(o.prompt, o.subject, "declarative") for _, o in pairs], None, [layer])[:, 0].T
    wsim = gp.probes.whitened_similarity(k1, k2, C)
    cos = torch.nn.functional.cosine_similarity(k1, k2, dim=0)
    rows = []
    for n, (r, _) in enumerate(pairs):
        for metric, v in (("whitened_similarity", wsim[n]), ("cosine", cos[n])):
            rows.append({"case_id": r.case_id, "subject": r.subject, "variant": "other-subject", "prompt_idx": 0,
                         "layer": layer, "metric": metric, "value": float(v)})
    return pd.DataFrame(rows)


def compute(ws: Workspace) -> pd.DataFrame:
    L = ws.edit_layer
    C = ws.covariance([L])[L]
    df = gp.probes.whitened_key_similarity(ws.lm, ws.batch, L, C)
    df = pd.concat([df, _other_subject_pairs(ws, L, C)], ignore_index=True)
    df.insert(0, "model", ws.lm.name)
    return df


def medians(df: pd.DataFrame) -> pd.DataFrame:
    """Median per variant (rows, in :data:`VARIANTS` order) and metric (columns)."""
    m = df.groupby(["variant", "metric"])["value"].median().unstack("metric")
    return m.reindex([v for v in VARIANTS if v in m.index] + [v for v in m.index if v not in VARIANTS])


def _get(m: pd.DataFrame, variant: str, metric: str) -> float:
    try:
        return float(m.loc[variant, metric])
    except KeyError:
        return float("nan")


def plot(df: pd.DataFrame):
    m = medians(df)
    model = model_of(df)
    perturbed = [v for v in ("paraphrase", "long-context") if v in m.index]
    drops = {v: _get(m, v, "cosine") - _get(m, v, "whitened_similarity") for v in perturbed}
    drops = {v: d for v, d in drops.items() if d == d}
    if drops and max(drops.values()) > 0.05:
        v = max(drops, key=drops.get)
        finding = (f"whitening pushes {v} keys away (median {_get(m, v, 'cosine'):.2f} cosine → "
                   f"{_get(m, v, 'whitened_similarity'):.2f} whitened)")
    elif drops:
        finding = "whitened and plain similarity agree for perturbed keys"
    else:
        finding = "no perturbed keys measured"
    return plot_whitened_similarity(df, title=f"{model}: {finding}")


def headline(df: pd.DataFrame) -> str:
    m = medians(df)
    parts = [f"{v} {_get(m, v, 'whitened_similarity'):.2f} (cosine {_get(m, v, 'cosine'):.2f})" for v in m.index]
    layer = int(df["layer"].iloc[0]) if "layer" in df and np.isfinite(df["layer"].iloc[0]) else "?"
    return (f"median whitened similarity to the edit key at layer {layer}: " + ", ".join(parts)
            + " (REP Fig. 3: paraphrase / long-context keys lose similarity in the whitened metric)")


if __name__ == "__main__":
    main(__file__)
