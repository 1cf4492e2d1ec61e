"""fig16_declarative_results: efficacy / paraphrase / locality on declarative prompts, every editor
(RoSE Fig. 16, App. E).

Every score carries its 95% subject-bootstrap interval and every editor its paired difference to MEMIT-Merge on
the same requests (:func:`geomprobe.tables.form_scores` with ``versus="memit-merge"``); "RoSE > MEMIT-Merge" is
claimed only when the paired interval excludes 0."""

from __future__ import annotations

import pandas as pd

from geomprobe.intervals import fmt_interval, verdict
from geomprobe.pipeline import main
from geomprobe.plots.results import plot_metric_bars
from geomprobe.tables import form_scores, model_of, score_difference, score_interval
from geomprobe.workspace import Workspace

ID = "fig16_declarative_results"
PAPER = "RoSE Fig. 16"
WHAT = "Efficacy / paraphrase / locality (%) on declarative prompts (the edit prompt, its paraphrases), all editors."
COLUMNS = ("editor", "protocol", "form", "metric", "value", "n_requests")
#: RoSE Fig. 16 (Qwen2.5-7B-Instruct, S2RKE declarative test set).
PAPER_FIG16 = {"rose": (98.9, 60.6, 71.9), "memit-merge": (99.2, 55.6, 72.0), "memit": (None, None, 72.8)}
VERSUS = "memit-merge"


def compute(ws: Workspace) -> pd.DataFrame:
    editors = ["unedited", *[e for e in ws.settings.editors if e != "unedited"]]
    ev = pd.concat([ws.evaluation(name) for name in editors], ignore_index=True)
    df = form_scores(ev, by=("editor",), forms=("declarative",), versus=VERSUS)
    df = df[df["metric"] != "overall"].reset_index(drop=True)
    df.insert(0, "model", ws.lm.name)
    return df


def _d(df, ed, metric):
    return score_interval(df, ed, metric, form="declarative")


def _iv(df, ed, metric) -> str:
    return fmt_interval(_d(df, ed, metric), n=False)


def _verdict(df: pd.DataFrame, metric: str) -> str:
    """RoSE vs MEMIT-Merge on ``metric``: a difference only when the paired interval excludes 0."""
    r, m = _d(df, "rose", metric), _d(df, VERSUS, metric)
    if not (pd.notna(r.estimate) and pd.notna(m.estimate)):
        return "RoSE vs MEMIT-Merge cannot be compared"
    d = score_difference(df, "rose", metric, form="declarative")
    if d is None:
        return "RoSE vs MEMIT-Merge: difference not tested (no paired interval in this CSV)"
    return f"{verdict(d, 'RoSE', 'MEMIT-Merge')} (RoSE − MEMIT-Merge {fmt_interval(d, signed=True, n=False)})"


def _counts(df: pd.DataFrame) -> str:
    d = df[(df["form"] == "declarative") & (df["protocol"] == "prob")]
    ns = {int(n) for n in d["n_requests"] if n}
    ks = {int(k) for k in d["n_subjects"].dropna() if k} if "n_subjects" in d else set()
    n = f"n={ns.pop()} requests" if len(ns) == 1 else ""
    return n + (f", {ks.pop()} subjects" if n and len(ks) == 1 else "")


def plot(df: pd.DataFrame):
    d = df[(df["form"] == "declarative") & (df["protocol"] == "prob")]
    model = model_of(df)
    title = (f"{model} declarative prompts: efficacy {_iv(df, 'rose', 'efficacy')} vs "
             f"{_iv(df, VERSUS, 'efficacy')}%: {_verdict(df, 'efficacy')};\n"
             f"paraphrase {_iv(df, 'rose', 'paraphrase')} vs {_iv(df, VERSUS, 'paraphrase')}%: "
             f"{_verdict(df, 'paraphrase')}")
    return plot_metric_bars(d, metrics=("efficacy", "paraphrase", "locality"),
                            editors=list(dict.fromkeys(df["editor"])), title=title,
                            ylabel="declarative score (%, prob)", figsize=(6.0, 2.8))


def headline(df: pd.DataFrame) -> str:
    parts = []
    for ed in ("rose", "memit-merge", "memit"):
        ours = "/".join(_iv(df, ed, m) for m in ("efficacy", "paraphrase", "locality"))
        paper = "/".join("–" if v is None else f"{v}" for v in PAPER_FIG16[ed])
        parts.append(f"{ed} {ours} (paper {paper})")
    n = _counts(df)
    return (f"declarative efficacy/paraphrase/locality (prob{', ' + n if n else ''}): " + "; ".join(parts)
            + f"; efficacy: {_verdict(df, 'efficacy')}; paraphrase: {_verdict(df, 'paraphrase')}")


if __name__ == "__main__":
    main(__file__)
