"""fig02b_covariance_trap: Δ of question / instruction prompts under the covariance vs the identity update on the same
K, R of the MEMIT-Merge edit, against MEMIT-Merge's ρ band (RoSE Fig. 2b, 10)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from geomprobe.pipeline import main
from geomprobe.plots.tolerance import few_note, fmt, pct, plot_deviation_vs_radius
from geomprobe.tables import (AMPLIFY, DEV, MISS, model_of, predicted_count, predicted_radii, safe_share,
                              tidy_deviation, tidy_like_for_like, tidy_radius, versus)
from geomprobe.validate import chain
from geomprobe.workspace import Workspace

ID = "fig02b_covariance_trap"
PAPER = "RoSE Fig. 2b, 10"
WHAT = ("Activation deviation Δ = ‖ΔW Δk‖ of question / instruction prompts under the covariance (MEMIT) and the "
        "identity (IGA) rule on the same keys and residuals of the memit-merge edit, against memit-merge's ρ band "
        "(both residual-norm units at the last edit layer) — the paper's footing; beside it, like-for-like, the "
        "edited models' actual miss ‖v − δ‖ (memit-merge: covariance, rose-no-hki: identity, same δ) against the "
        "tolerance measured along that miss on the same prompts.")
COLUMNS = ("editor", "rule", "form", "metric", "value", "rho", "predicted", "safe")
EDITOR = "memit-merge"
RULES = ("covariance", "identity")
#: the rules asked of the workspace: fig17 asks the same tuple, so both figures share one memoised probe
ALL_RULES = ("covariance", "identity", "projection")
FORMS = ("question", "instruction")


#: like-for-like (issue 11): the edited models of the two rules on the same joint value δ — memit-merge (covariance)
#: and rose-no-hki (identity) — their miss ‖v − δ‖ at (L, subject) against the tolerance along it
LIKE_FOR_LIKE = ("memit-merge", "rose-no-hki")


def compute(ws: Workspace) -> pd.DataFrame:
    tol = ws.tolerance(EDITOR)
    dev = ws.deviation(EDITOR, ALL_RULES)
    dev = dev[dev["rule"].isin(RULES)]
    frames = [tidy_radius(tol, ws.lm.name), tidy_deviation(dev, tol, ws.lm.name)]
    frames += [tidy_like_for_like(chain(ws, e)[0], ws.lm.name, FORMS) for e in LIKE_FOR_LIKE]
    return pd.concat(frames, ignore_index=True)


def summary(df: pd.DataFrame, rules=RULES) -> dict:
    """Median Δ and safe share per rule (both forms), median ρ of predicted requests."""
    dev = df[df["metric"] == DEV]
    rho = predicted_radii(df)
    out = {"rho": float(np.median(rho)) if len(rho) else float("nan"), "pred": predicted_count(df)}
    for r in rules:
        d = dev[dev["rule"] == r]
        out[r] = (float(d["value"].median()) if len(d) else float("nan"), safe_share(d),
                  {f: safe_share(d[d["form"] == f]) for f in FORMS})
    return out


def verdict(s: dict, trap: str = "covariance", fix: str = "identity") -> str:
    c, i, rho = s[trap][0], s[fix][0], s["rho"]
    if not (np.isfinite(c) and np.isfinite(i)):
        return "no Δ measured"
    ratio = c / i if i > 0 else float("inf")
    v = versus(c, i, AMPLIFY) if i > 0 else 1  # no identity Δ at all: any covariance Δ is an amplification
    if v > 0:
        head = f"{trap.capitalize()} amplifies Δ {ratio:.1f}× over {fix}"
    elif v < 0:
        head = f"{trap.capitalize()} Δ is {1 / ratio:.1f}× below {fix} here (no trap)"
    else:
        head = f"{trap.capitalize()} and {fix} Δ similar (median {fmt(c)} vs {fmt(i)})"
    if np.isfinite(rho):
        head += f"\nmedian ρ {fmt(rho)}: Δ<ρ {pct(s[trap][1])} ({trap}) vs {pct(s[fix][1])} ({fix})"
    else:
        k, n = s["pred"]
        head += f"\nρ undefined ({k}/{n} targets predicted)"
    return head


def plot(df: pd.DataFrame):
    model = model_of(df)
    s = summary(df)
    return plot_deviation_vs_radius(df, rules=RULES, forms=FORMS,
                                    title=f"{model} {EDITOR}: {verdict(s)}{few_note(df)}")


def like_for_like(df: pd.DataFrame) -> str:
    """``"like-for-like miss ≤ tolerance: covariance 40% of 16 (fails 60%), identity ..."``; empty without rows."""
    parts = []
    for e, rule in zip(LIKE_FOR_LIKE, RULES):
        d = df[(df["metric"] == MISS) & (df["editor"] == e)] if "metric" in df else df.iloc[:0]
        ok = d["safe"].dropna() if len(d) else d
        if len(ok):
            from geomprobe.intervals import cluster_bootstrap, fmt_interval

            fail = float((d["success_after"].astype(float) < 0.5).mean())
            d = d[d["safe"].notna()]
            within = cluster_bootstrap(d["safe"].astype(float).to_numpy(), d["subject"].to_numpy())
            parts.append(f"{rule} ({e}) median miss {fmt(d['value'].median())} vs tolerance "
                         f"{fmt(d['rho'].median())}, within {fmt_interval(within, scale=100, digits=0)}, "
                         f"fails {pct(fail)}")
    return ("like-for-like: " + "; ".join(parts)) if parts else ""


def headline(df: pd.DataFrame) -> str:
    s = summary(df)
    k, n = s["pred"]
    lfl = like_for_like(df)
    rules = "; ".join(f"{r} median Δ {fmt(s[r][0])}, Δ<ρ " + ", ".join(f"{f} {pct(v)}" for f, v in s[r][2].items())
                      for r in RULES)
    return (f"paper's footing: {rules}; median ρ {fmt(s['rho'])} ({k}/{n} predicted) "
            "(paper: covariance Δ ≫ identity Δ, covariance Δ > ρ, identity Δ < ρ)" + (f". {lfl}" if lfl else ""))


if __name__ == "__main__":
    main(__file__)
