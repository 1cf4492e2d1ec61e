"""fig06_ablation: efficacy and paraphrase on instruction queries for MEMIT-Merge, RoSE and its two ablations
(RoSE Fig. 6)."""

from __future__ import annotations

import pandas as pd

from geomprobe.pipeline import main
from geomprobe.plots.results import fmt, plot_metric_bars
from geomprobe.tables import TIE, form_scores, model_of, score
from geomprobe.workspace import Workspace

ID = "fig06_ablation"
PAPER = "RoSE Fig. 6"
WHAT = "Efficacy and paraphrase (%) on instruction queries: MEMIT-Merge, RoSE, RoSE w/o IGA, RoSE w/o HKI."
COLUMNS = ("editor", "protocol", "form", "metric", "value", "n_requests")
EDITORS = ("memit-merge", "rose", "rose-no-iga", "rose-no-hki")


def compute(ws: Workspace) -> pd.DataFrame:
    ev = pd.concat([ws.evaluation(name) for name in EDITORS], ignore_index=True)
    df = form_scores(ev, by=("editor",))
    df = df[df["metric"].isin(["efficacy", "paraphrase"])].reset_index(drop=True)
    df.insert(0, "model", ws.lm.name)
    return df


def _finding(df: pd.DataFrame) -> str:
    vals = {e: score(df, e) for e in EDITORS}
    finite = {e: v for e, v in vals.items() if pd.notna(v)}
    if not finite:
        return "no instruction efficacy measured"
    best = max(finite.values())
    leaders = [e for e, v in finite.items() if v >= best - TIE]
    if leaders == ["rose"]:
        return "full RoSE leads both ablations and MEMIT-Merge on instruction efficacy"
    if "rose" in leaders:
        others = "all the others" if len(leaders) == len(finite) else ", ".join(e for e in leaders if e != "rose")
        return f"RoSE ties {others} on instruction efficacy ({best:.0f}%)"
    return f"{', '.join(leaders)} lead{'s' if len(leaders) == 1 else ''} on instruction efficacy, not full RoSE"


def plot(df: pd.DataFrame):
    d = df[(df["form"] == "instruction") & (df["protocol"] == "prob")]
    model = model_of(df)
    return plot_metric_bars(d, metrics=("efficacy", "paraphrase"), editors=EDITORS, figsize=(3.6, 2.7),
                            title=f"{model}: {_finding(df)}", ylabel="instruction-query score (%, prob)",
                            legend_cols=2)


def headline(df: pd.DataFrame) -> str:
    eff = ", ".join(f"{e} {fmt(score(df, e))}" for e in EDITORS)
    par = ", ".join(f"{e} {fmt(score(df, e, 'paraphrase'))}" for e in EDITORS)
    return (f"instruction efficacy: {eff}; paraphrase: {par} (paper: RoSE 86.7/63.8 > each ablation > "
            "MEMIT-Merge 75.5/52.8)")


if __name__ == "__main__":
    main(__file__)
