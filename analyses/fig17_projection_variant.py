"""fig17_projection_variant: Δ under AlphaEdit's null-space projection vs the covariance and identity rules on the
same K, R of the MEMIT-Merge edit, against its ρ band (RoSE Fig. 17, App. F)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from geomprobe.pipeline import main
from geomprobe.plots.tolerance import few_note, fmt, pct, plot_deviation_vs_radius
from geomprobe.tables import (AMPLIFY, DEV, model_of, predicted_count, predicted_radii, safe_share, tidy_deviation,
                              tidy_radius, versus)
from geomprobe.workspace import Workspace

ID = "fig17_projection_variant"
PAPER = "RoSE Fig. 17 (App. F)"
WHAT = ("Activation deviation Δ of question / instruction prompts under the covariance, AlphaEdit projection and "
        "identity rules on the same keys and residuals of the memit-merge edit, against memit-merge's ρ band.")
COLUMNS = ("editor", "rule", "form", "metric", "value", "rho", "predicted", "safe")
EDITOR = "memit-merge"
#: same tuple as fig02b_covariance_trap, so both share one memoised probe
RULES = ("covariance", "identity", "projection")
PLOT_RULES = ("covariance", "projection", "identity")
FORMS = ("question", "instruction")


def compute(ws: Workspace) -> pd.DataFrame:
    tol = ws.tolerance(EDITOR)
    dev = ws.deviation(EDITOR, RULES)
    return pd.concat([tidy_radius(tol, ws.lm.name), tidy_deviation(dev, tol, ws.lm.name)], ignore_index=True)


def _summary(df: pd.DataFrame) -> dict:
    dev = df[df["metric"] == DEV]
    rho = predicted_radii(df)
    out = {"rho": float(np.median(rho)) if len(rho) else float("nan"), "pred": predicted_count(df)}
    for r in PLOT_RULES:
        d = dev[dev["rule"] == r]
        out[r] = (float(d["value"].median()) if len(d) else float("nan"), safe_share(d))
    return out


def _verdict(s: dict) -> str:
    c, p, i = (s[r][0] for r in PLOT_RULES)
    if not all(np.isfinite(x) for x in (p, c, i)):
        return "not every rule measured"
    v = versus(p, i, AMPLIFY)
    if v > 0:
        head = f"Projection does not close the trap:\nΔ {fmt(p)} vs identity {fmt(i)} (covariance {fmt(c)})"
    elif v < 0:
        head = f"Projection Δ {fmt(p)} below identity {fmt(i)} here\n(covariance {fmt(c)})"
    else:
        head = f"Projection Δ {fmt(p)} ≈ identity {fmt(i)} here\n(covariance {fmt(c)})"
    if np.isfinite(s["rho"]):
        head += "\nΔ<ρ: " + ", ".join(f"{r} {pct(s[r][1])}" for r in PLOT_RULES)
    else:
        k, n = s["pred"]
        head += f"\nρ undefined ({k}/{n} targets predicted)"
    return head


def plot(df: pd.DataFrame):
    model = model_of(df)
    return plot_deviation_vs_radius(df, rules=PLOT_RULES, forms=FORMS,
                                    title=f"{model} {EDITOR}: {_verdict(_summary(df))}{few_note(df)}")


def headline(df: pd.DataFrame) -> str:
    s = _summary(df)
    k, n = s["pred"]
    rules = ", ".join(f"{r} {fmt(s[r][0])} (Δ<ρ {pct(s[r][1])})" for r in PLOT_RULES)
    return (f"median Δ: {rules}; median ρ {fmt(s['rho'])} ({k}/{n} predicted) "
            "(paper: projection keeps the anisotropy, Δ stays above identity's)")


if __name__ == "__main__":
    main(__file__)
