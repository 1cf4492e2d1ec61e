"""fig07_geometric_restoration: each editor's own Δ (boxes per form) against its ρ zone; the safe condition Δ < ρ
(RoSE Fig. 7)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from geomprobe.editors import EDITORS as EDITOR_MODES
from geomprobe.pipeline import main
from geomprobe.plots.tolerance import few_note, pct, plot_restoration
from geomprobe.tables import (DEV, FEW, MISS, SHARE_MARGIN, model_of, predicted_count, radius_rows, safe_share,
                              tidy_deviation, tidy_like_for_like, tidy_radius, versus)
from geomprobe.validate import chain
from geomprobe.workspace import Workspace

ID = "fig07_geometric_restoration"
PAPER = "RoSE Fig. 7"
WHAT = ("Activation deviation Δ of each editor's own update (question / instruction forms) against the tolerance "
        "zone ρ of its optimised values; the safe condition Δ < ρ per editor — the paper's footing; below it, "
        "like-for-like, each edited model's miss ‖v − δ‖ at (L, subject) against the tolerance along that miss on "
        "the same prompts.")
COLUMNS = ("editor", "rule", "form", "metric", "value", "rho", "predicted", "safe")
EDITORS = ("memit-merge", "rose", "rose-no-iga", "rose-no-hki", "alphaedit", "memit")
#: editors whose ρ is measured once per value-optimisation mode (ρ depends on the optimised values only, and the
#: workspace hands editors of one mode the same values, so e.g. rose-no-hki's ρ is memit-merge's)
RHO_EDITORS = ("memit-merge", "rose", "memit")
#: editors whose edited models are also measured like-for-like (miss ‖v − δ‖ vs the tolerance along it; the causal
#: chain shared with why_forms_fail and fig02b)
LIKE_FOR_LIKE = ("memit-merge", "rose-no-hki", "rose", "memit")


def rho_editor(name: str) -> str:
    """The editor whose ρ stands for ``name``'s: the first of :data:`RHO_EDITORS` with the same value mode."""
    mode = EDITOR_MODES[name][0]
    return next((e for e in RHO_EDITORS if EDITOR_MODES[e][0] == mode), name)


def compute(ws: Workspace) -> pd.DataFrame:
    model, frames = ws.lm.name, []
    for name in (e for e in EDITORS if e in ws.settings.editors):
        src = rho_editor(name)
        tol = ws.tolerance(src)
        frames.append(tidy_radius(tol, model, editor=name, rho_from=src))
        frames.append(tidy_deviation(ws.deviation(name, ("update",)), tol, model, rho_from=src))
        if name in LIKE_FOR_LIKE:
            frames.append(tidy_like_for_like(chain(ws, name)[0], model))
    return pd.concat(frames, ignore_index=True)


def _rates(df: pd.DataFrame) -> dict[str, float]:
    dev = df[df["metric"] == DEV]
    return {ed: safe_share(dev[dev["editor"] == ed]) for ed in dict.fromkeys(df["editor"])}


def _verdict(df: pd.DataFrame) -> str:
    r = _rates(df)
    ok = {e: v for e, v in r.items() if np.isfinite(v)}
    if not ok:
        return "Δ < ρ not measurable: no editor's values predict their targets"
    best = max(ok, key=ok.get)
    rose, merge = r.get("rose", np.nan), r.get("memit-merge", np.nan)
    few = any(predicted_count(radius_rows(df, e))[0] < FEW for e in ("rose", "memit-merge") if e in r)
    if np.isfinite(rose) and np.isfinite(merge) and few:
        head = f"Δ < ρ for RoSE {pct(rose)} of prompts vs memit-merge {pct(merge)}"
    elif np.isfinite(rose) and np.isfinite(merge):
        v = versus(rose, merge, SHARE_MARGIN, margin=True)
        if v > 0:
            head = f"RoSE restores Δ < ρ: {pct(rose)} of prompts vs memit-merge {pct(merge)}"
        elif v < 0:
            head = f"RoSE does not restore Δ < ρ here: {pct(rose)} vs memit-merge {pct(merge)}"
        else:
            head = f"RoSE and memit-merge meet Δ < ρ equally often ({pct(rose)} vs {pct(merge)})"
    else:
        head = f"Δ < ρ most often for {best} ({pct(ok[best])})"
    head += few_note(df[df["editor"] == "memit-merge"]) if "memit-merge" in r else ""
    missing = [e for e, v in r.items() if not np.isfinite(v)]
    if missing:
        head += f"\nno target predicted (ρ undefined): {', '.join(missing)}"
    return head


def plot(df: pd.DataFrame):
    model = model_of(df)
    return plot_restoration(df, title=f"{model}: {_verdict(df)}")


def headline(df: pd.DataFrame) -> str:
    r = _rates(df)
    parts = []
    for ed, v in r.items():
        k, n = predicted_count(radius_rows(df, ed))
        parts.append(f"{ed} {pct(v)} ({k}/{n} pred.)")
    lfl = []
    for ed in dict.fromkeys(df.loc[df["metric"] == MISS, "editor"]):
        d = df[(df["metric"] == MISS) & (df["editor"] == ed)]
        ok = d["safe"].dropna()
        lfl.append(f"{ed} {pct(ok.mean()) if len(ok) else 'n/a'} of {len(ok)} "
                   f"(fails {pct(float((d['success_after'].astype(float) < 0.5).mean()))})")
    return ("paper's footing, Δ<ρ share of prompts of predicted requests: " + ", ".join(parts)
            + " (paper: memit-merge Δ above its ρ zone, RoSE's Δ box almost entirely inside it)"
            + ("; like-for-like, miss ≤ tolerance along it (question/instruction request-forms): " + ", ".join(lfl)
               if lfl else ""))


if __name__ == "__main__":
    main(__file__)
