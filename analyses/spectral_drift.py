"""spectral_drift: drift of the dominant singular subspace of the last edit layer over sequential edits,
editors with and without REVIVE, next to perplexity (REVIVE, Zhang et al.)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

import geomprobe as gp
from geomprobe.pipeline import main
from geomprobe.plots.spectral import plot_spectral_drift
from geomprobe.tables import model_of
from geomprobe.workspace import Workspace

ID = "spectral_drift"
PAPER = "REVIVE (Zhang et al.) LS / SS analysis"
WHAT = ("Dominant-subspace similarity LS_k, top singular-vector similarity SS_i and ‖W_t‖/‖W₀‖ of the last edit "
        "layer vs number of sequential edits, editors with and without REVIVE, with held-out perplexity.")
COLUMNS = ("editor", "step", "metric", "index", "value")
TOP_SHARE = 0.05  # LS_k over the top 5% singular directions (REVIVE: ability concentrates there)
N_DIRECTIONS = 8


def editors(ws: Workspace) -> list[str]:
    base = list(ws.settings.sequential_editors)
    return base + [f"revive({b})" for b in ws.settings.revive_editors if b in base]


def compute(ws: Workspace) -> pd.DataFrame:
    parts = []
    for name in editors(ws):
        seq = ws.sequential(name)  # memoised: fig20 reuses the same runs
        L = max(seq["w0"])
        W0 = seq["w0"][L]
        steps = sorted(seq["weights"])
        k = max(1, math.ceil(TOP_SHARE * min(W0.shape)))
        d = gp.probes.subspace_drift(W0, [seq["weights"][n][L] for n in steps], k=k,
                                     n_directions=min(N_DIRECTIONS, k), steps=steps, layer=L)
        ppl = pd.DataFrame({"layer": L, "step": sorted(seq["perplexity"]), "metric": "perplexity", "index": np.nan,
                            "value": [seq["perplexity"][n] for n in sorted(seq["perplexity"])]})
        d = pd.concat([d, ppl], ignore_index=True)
        d.insert(0, "editor", name)
        d["k"] = k
        d["rank"] = min(W0.shape)
        parts.append(d)
    df = pd.concat(parts, ignore_index=True)
    df.insert(0, "model", ws.lm.name)
    return df


def final(df: pd.DataFrame, metric: str, index: int | None = None) -> pd.Series:
    """Value of ``metric`` per editor after the most edits (SS: mean over directions unless ``index``)."""
    d = df[df["metric"] == metric]
    if index is not None:
        d = d[d["index"] == index]
    last = d["step"].max()
    return d[d["step"] == last].groupby("editor", sort=False)["value"].mean()


def plot(df: pd.DataFrame):
    ls = final(df, "LS_k")
    n = int(df["step"].max())
    model = model_of(df)
    pairs = [(b, f"revive({b})") for b in ls.index if f"revive({b})" in ls.index]
    if pairs:
        gains = {b: ls[r] - ls[b] for b, r in pairs}
        b = max(gains, key=lambda x: abs(gains[x]))
        r = f"revive({b})"
        if gains[b] > 0.01:
            finding = f"REVIVE keeps LS_k at {ls[r]:.2f} vs {ls[b]:.2f} for {b} after {n} edits"
        elif gains[b] < -0.01:
            finding = f"REVIVE does not protect LS_k ({ls[r]:.2f} vs {ls[b]:.2f} for {b}) after {n} edits"
        else:
            finding = f"LS_k unchanged by REVIVE after {n} edits ({ls[r]:.2f} vs {ls[b]:.2f} for {b})"
    elif len(ls):
        finding = f"LS_k after {n} edits: lowest {ls.min():.2f} ({ls.idxmin()})"
    else:
        finding = "no drift measured"
    return plot_spectral_drift(df, title=f"{model}: {finding}")


def headline(df: pd.DataFrame) -> str:
    ls, nr, ppl = final(df, "LS_k"), final(df, "norm_ratio"), final(df, "perplexity")
    n = int(df["step"].max())
    p0 = df[(df["metric"] == "perplexity") & (df["step"] == 0)]["value"]
    k = int(df["k"].iloc[0]) if "k" in df else "?"
    parts = [f"{e} LS_k {ls.get(e, np.nan):.2f}, ‖W‖ ×{nr.get(e, np.nan):.3g}, ppl {ppl.get(e, np.nan):.4g}"
             for e in ls.index]
    return (f"after {n} sequential edits (k={k}, ppl before {p0.iloc[0] if len(p0) else float('nan'):.4g}): "
            + "; ".join(parts) + " (REVIVE: dominant directions erode with edits; REVIVE preserves them)")


if __name__ == "__main__":
    main(__file__)
