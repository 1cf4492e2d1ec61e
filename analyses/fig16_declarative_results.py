"""fig16_declarative_results: efficacy / paraphrase / locality on declarative prompts, every editor
(RoSE Fig. 16, App. E)."""

from __future__ import annotations

import pandas as pd

from geomprobe.pipeline import main
from geomprobe.plots.results import fmt, plot_metric_bars
from geomprobe.tables import compare, form_scores, model_of, score
from geomprobe.workspace import Workspace

ID = "fig16_declarative_results"
PAPER = "RoSE Fig. 16"
WHAT = "Efficacy / paraphrase / locality (%) on declarative prompts (the edit prompt, its paraphrases), all editors."
COLUMNS = ("editor", "protocol", "form", "metric", "value", "n_requests")
#: RoSE Fig. 16 (Qwen2.5-7B-Instruct, S2RKE declarative test set).
PAPER_FIG16 = {"rose": (98.9, 60.6, 71.9), "memit-merge": (99.2, 55.6, 72.0), "memit": (None, None, 72.8)}


def compute(ws: Workspace) -> pd.DataFrame:
    editors = ["unedited", *[e for e in ws.settings.editors if e != "unedited"]]
    ev = pd.concat([ws.evaluation(name) for name in editors], ignore_index=True)
    df = form_scores(ev, by=("editor",), forms=("declarative",))
    df = df[df["metric"] != "overall"].reset_index(drop=True)
    df.insert(0, "model", ws.lm.name)
    return df


def _d(df, ed, metric):
    return score(df, ed, metric, form="declarative")


def plot(df: pd.DataFrame):
    d = df[(df["form"] == "declarative") & (df["protocol"] == "prob")]
    model = model_of(df)
    re_, me = _d(df, "rose", "efficacy"), _d(df, "memit-merge", "efficacy")
    rp, mp = _d(df, "rose", "paraphrase"), _d(df, "memit-merge", "paraphrase")
    e = compare(re_, me, "RoSE", "MEMIT-Merge", tol=1.0)
    p = compare(rp, mp, "RoSE", "MEMIT-Merge", tol=1.0)
    title = (f"{model} declarative prompts: {e} on efficacy ({fmt(re_)} vs {fmt(me)}%);\n"
             f"{p} on paraphrase ({fmt(rp)} vs {fmt(mp)}%)")
    return plot_metric_bars(d, metrics=("efficacy", "paraphrase", "locality"),
                            editors=list(dict.fromkeys(df["editor"])), title=title,
                            ylabel="declarative score (%, prob)", figsize=(6.0, 2.8))


def headline(df: pd.DataFrame) -> str:
    parts = []
    for ed in ("rose", "memit-merge", "memit"):
        ours = "/".join(fmt(_d(df, ed, m)) for m in ("efficacy", "paraphrase", "locality"))
        paper = "/".join("–" if v is None else f"{v}" for v in PAPER_FIG16[ed])
        parts.append(f"{ed} {ours} (paper {paper})")
    return "declarative efficacy/paraphrase/locality: " + "; ".join(parts)


if __name__ == "__main__":
    main(__file__)
