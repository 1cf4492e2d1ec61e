"""spectral_energy: how much general ability the top-p% singular components of the edit layers keep
(REVIVE, Zhang et al.: ability concentrates in the dominant singular directions)."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

import geomprobe as gp
from geomprobe.editors.update import restoring
from geomprobe.pipeline import main
from geomprobe.plots.spectral import plot_spectral_energy
from geomprobe.tables import ABILITY_METRICS, model_of, retained
from geomprobe.workspace import Workspace

ID = "spectral_energy"
PAPER = "REVIVE (Zhang et al.) spectral-truncation analysis"
WHAT = ("General ability kept when every edit layer's W is replaced by its top-p% singular components: held-out "
        "perplexity and true-fact recall (token accuracy, probability of target_true), as a share of the "
        "full model's, next to the spectral energy those components carry.")
COLUMNS = ("percent", "metric", "value")
PERCENTS = (0, 1, 2, 5, 10, 20, 50, 100)  # 0 = the edit layers' W zeroed (the floor of the retained share)


def _true_fact_requests(ws: Workspace) -> list:
    return [replace(r, target_new=r.target_true) for r in ws.batch if r.target_true]


def _ability(ws: Workspace, texts: list[str], facts: list) -> dict[str, float]:
    out = {"perplexity": gp.probes.perplexity(ws.lm, texts)}
    if facts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no reference: locality is not needed here
            ev = gp.evaluate.evaluate(ws.lm, facts, forms=("declarative", "paraphrase"),
                                      protocols=("prob", "token_acc"))
        tok = ev[(ev["protocol"] == "token_acc") & ev["metric"].isin(["efficacy", "paraphrase"])]["value"]
        prob = ev[(ev["protocol"] == "prob") & (ev["metric"] == "target_prob")]["value"]
        out["true_token_acc"] = float(tok.mean()) if len(tok) else float("nan")
        out["true_prob"] = float(prob.mean()) if len(prob) else float("nan")
    return out


def compute(ws: Workspace) -> pd.DataFrame:
    lm = ws.lm
    layers = list(ws.config.layers)
    texts, facts = ws.heldout_texts(), _true_fact_requests(ws)
    svd = {}
    for l in layers:
        W = lm.weight(l).detach().double().cpu()
        svd[l] = torch.linalg.svd(W, full_matrices=False)
    rows = []
    with restoring(lm, layers), torch.no_grad():
        for p in PERCENTS:
            kept = {}
            for l in layers:
                U, S, Vh = svd[l]
                r = len(S)
                k = min(r, math.ceil(p / 100 * r))
                kept[l] = k
                w = lm.weight(l)
                w.copy_(((U[:, :k] * S[:k]) @ Vh[:k]).to(device=w.device, dtype=w.dtype))
                rows.append({"percent": p, "layer": l, "metric": "energy_share", "rank_kept": k, "rank": r,
                             "value": float(S[:k].pow(2).sum() / S.pow(2).sum())})
            ability = _ability(ws, texts, facts)
            for metric, v in ability.items():
                rows.append({"percent": p, "layer": np.nan, "metric": metric, "rank_kept": np.nan, "rank": np.nan,
                             "value": v})
            ws.log(f"  top {p}% singular components of layers {layers} (ranks {list(kept.values())}): "
                   + ", ".join(f"{m} {v:.3g}" for m, v in ability.items()))
    # restoring() copied the original weights back bit-exactly
    df = pd.DataFrame(rows)
    df.insert(0, "model", lm.name)
    df["layers"] = " ".join(map(str, layers))
    df["n_texts"], df["n_facts"] = len(texts), len(facts)
    return df


def _at(df: pd.DataFrame, p: float) -> tuple[dict, float]:
    """Retained share per ability metric and mean spectral energy share at ``p`` percent (nearest measured)."""
    ps = sorted(df["percent"].unique())
    q = min(ps, key=lambda x: abs(x - p))
    ret = retained(df)
    kept = {m: float(ret[(ret["metric"] == m) & (ret["percent"] == q)]["retained"].mean()) for m in ABILITY_METRICS
            if m in set(ret["metric"])}
    energy = float(df[(df["metric"] == "energy_share") & (df["percent"] == q)]["value"].mean())
    return kept, energy


NAMES = {"perplexity": "held-out perplexity", "true_token_acc": "true-fact token accuracy",
         "true_prob": "P(true answer)"}


def plot(df: pd.DataFrame):
    kept, energy = _at(df, 5)
    model = model_of(df)
    finite = {m: v for m, v in kept.items() if v == v}
    if finite:
        m, v = next(iter(finite.items()))
        finding = (f"top 5% of singular components keep {100 * v:.0f}% of {NAMES[m]} "
                   f"with {100 * energy:.0f}% of spectral energy")
    else:
        finding = f"top 5% of singular components carry {100 * energy:.0f}% of spectral energy"
    return plot_spectral_energy(df, retained(df), title=f"{model}: {finding}")


def headline(df: pd.DataFrame) -> str:
    kept, energy = _at(df, 5)
    parts = ", ".join(f"{NAMES.get(m, m)} {100 * v:.0f}%" if v == v else f"{NAMES.get(m, m)} n/a (full model no "
                      "better than zeroed layers)" for m, v in kept.items())
    return (f"top 5% singular components of the edit layers: {100 * energy:.0f}% of spectral energy; share of "
            f"ability kept (0 = layers zeroed, 1 = full): {parts} (REVIVE: top 5% recover ~62.6% of general "
            "performance)")


if __name__ == "__main__":
    main(__file__)
