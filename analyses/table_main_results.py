"""table_main_results: efficacy / paraphrase / locality / overall on instruction queries, every editor and the
unedited model, three protocols; the headline is ``gen`` (RoSE Tab. 1, 4).  Writes ``table_main_results.md`` beside the CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from geomprobe.pipeline import main
from geomprobe.plots.results import PROTOCOL_LABEL, fmt, plot_metric_bars, results_markdown
from geomprobe.tables import compare, form_scores, model_of, score
from geomprobe.workspace import Workspace

ID = "table_main_results"
PAPER = "RoSE Tab. 1, 4"
WHAT = ("Efficacy / paraphrase / locality / overall (%) on instruction queries (question and declarative rows too), "
        "every editor and the unedited model. Headline: gen (greedy generation of the target, the paper's "
        "criterion); MEMIT-style prob and EasyEdit-style token_acc beside it.")
COLUMNS = ("editor", "protocol", "form", "metric", "value", "n_requests")

#: RoSE Tab. 1, Qwen2.5-7B-Instruct, instruction queries (prob-style success rates, %).
PAPER_TAB1 = pd.DataFrame([
    ("unedited", 26.0, 38.7, 64.3, 43.0), ("memit", 50.5, 44.7, 63.6, 51.8), ("alphaedit", 63.8, 49.6, 63.5, 58.5),
    ("memit-merge", 75.5, 52.8, 63.8, 64.0), ("rose", 86.7, 63.8, 63.3, 72.2)],
    columns=["editor (paper, Qwen2.5-7B)", "efficacy", "paraphrase", "locality", "overall"])

NOTES = (
    "- Scores in percent; each request weighs the same (mean over its prompts, then over requests).",
    "- Instruction / question rows: efficacy = the first held-out query of that form, paraphrase = its other held-out "
    "rephrasings, locality = neighbourhood prompts rendered in that form; declarative rows: the edit prompt, its "
    "paraphrases and the raw neighbourhood prompts.  overall = mean of efficacy, paraphrase, locality (paper Tab. 1).",
    "- `prob`: MEMIT-style, 1 if P(target_new) > P(target_true) (mean per-token log-prob); locality = the pre-edit "
    "preference kept.  `token_acc`: EasyEdit-style teacher-forced token accuracy; locality = pre-edit argmax kept.  "
    "`gen` (the headline, the paper's 'generating the target'): greedy generation, exact match of the target; "
    "locality = the pre-edit generation kept.",
)
#: The protocol of the headline numbers (the paper counts success as generating the target).
HEADLINE = "gen"


def compute(ws: Workspace) -> pd.DataFrame:
    editors = ["unedited", *[e for e in ws.settings.editors if e != "unedited"]]
    ev = pd.concat([ws.evaluation(name) for name in editors], ignore_index=True)
    df = form_scores(ev, by=("editor",))
    df.insert(0, "model", ws.lm.name)
    df["n_subjects"] = len(ws.subjects)
    write_extra(df, ws.out)
    return df


def _finding(df: pd.DataFrame) -> tuple[float, float, str]:
    proto = HEADLINE if HEADLINE in set(df["protocol"]) else "prob"
    r, m = score(df, "rose", protocol=proto), score(df, "memit-merge", protocol=proto)
    return r, m, compare(r, m, "RoSE", "MEMIT-Merge")


def plot(df: pd.DataFrame):
    r, m, verdict = _finding(df)
    model = model_of(df)
    d = df[(df["form"] == "instruction") & (df["protocol"] == HEADLINE)]
    if d.empty:  # evaluated without generation: fall back to prob, then token accuracy
        d = df[(df["form"] == "instruction") & (df["protocol"] == "prob")]
        d = d if len(d) else df[(df["form"] == "instruction")]
    proto = d["protocol"].iloc[0] if len(d) else HEADLINE
    title = (f"{model} instruction queries: {verdict} on efficacy ({fmt(r)} vs {fmt(m)}%)\n"
             f"protocol {proto}: {PROTOCOL_LABEL.get(proto, proto)}")
    return plot_metric_bars(d, editors=list(dict.fromkeys(df["editor"])), title=title, figsize=(6.8, 2.9))


def write_extra(df: pd.DataFrame, out) -> list[str]:
    """``<out>/table_main_results.md`` (Markdown tables per protocol and form, the paper's Tab. 1 below)."""
    path = Path(out) / f"{ID}.md"
    model = model_of(df, "?")
    r, m, verdict = _finding(df)
    notes = (f"Model **{model}**; {verdict} on instruction efficacy ({HEADLINE}): {fmt(r)} vs {fmt(m)} "
             "(paper, Qwen2.5-7B-Instruct: 86.7 vs 75.5).", "", *NOTES)
    path.write_text(results_markdown(df.drop(columns=[c for c in ("model", "n_subjects") if c in df]),
                                     title="Main results (RoSE Tab. 1)", paper=PAPER_TAB1, notes=notes) + "\n")
    return [str(path)]


def headline(df: pd.DataFrame) -> str:
    r, m, verdict = _finding(df)
    rp, mp = score(df, "rose", protocol="prob"), score(df, "memit-merge", protocol="prob")
    rt, mt = score(df, "rose", protocol="token_acc"), score(df, "memit-merge", protocol="token_acc")
    loc = score(df, "rose", "locality", protocol=HEADLINE)
    return (f"instruction efficacy ({HEADLINE}): rose {fmt(r)} vs memit-merge {fmt(m)} → {verdict} "
            f"(paper Qwen2.5-7B: 86.7 vs 75.5); prob {fmt(rp)} vs {fmt(mp)}; token_acc {fmt(rt)} vs {fmt(mt)}; "
            f"rose locality ({HEADLINE}) {fmt(loc)} (paper 63.3)")


if __name__ == "__main__":
    main(__file__)
