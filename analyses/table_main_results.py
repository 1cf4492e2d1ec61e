"""table_main_results: efficacy / paraphrase / locality / overall on instruction queries, every editor and the
unedited model, three protocols; the headline is ``gen`` (RoSE Tab. 1, 4).  Writes ``table_main_results.md`` beside the CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from geomprobe.intervals import Interval, fmt_interval, verdict
from geomprobe.pipeline import main
from geomprobe.plots.results import PROTOCOL_LABEL, counts, has_intervals, plot_metric_bars, results_markdown
from geomprobe.tables import form_scores, model_of, score_difference, score_interval
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
    "- Intervals: 95% percentile bootstrap resampling *subjects* with replacement (2000 resamples, seed 0; requests of "
    "one subject share its key and edit batch, so they are not independent).  `RoSE − MEMIT-Merge` is paired: both "
    "editors' means on the same resampled subjects.  A verdict claims a difference only when that interval "
    "excludes 0.  With few subjects the interval is itself rough.",
)
#: the baseline every editor's paired difference is taken against
VERSUS = "memit-merge"
#: The protocol of the headline numbers (the paper counts success as generating the target).
HEADLINE = "gen"


def compute(ws: Workspace) -> pd.DataFrame:
    editors = ["unedited", *[e for e in ws.settings.editors if e != "unedited"]]
    ev = pd.concat([ws.evaluation(name) for name in editors], ignore_index=True)
    df = form_scores(ev, by=("editor",), versus=VERSUS)  # n_subjects per row, intervals, paired differences
    df.insert(0, "model", ws.lm.name)
    write_extra(df, ws.out)
    return df


def _iv(iv: Interval) -> str:
    return fmt_interval(iv, n=False)


def _finding(df: pd.DataFrame, proto: str | None = None) -> tuple[Interval, Interval, Interval | None, str]:
    """RoSE and MEMIT-Merge instruction efficacy, their paired difference (None in a CSV without it) and the
    verdict: a difference is claimed only when the paired interval excludes 0."""
    proto = proto or (HEADLINE if HEADLINE in set(df["protocol"]) else "prob")
    r, m = score_interval(df, "rose", protocol=proto), score_interval(df, VERSUS, protocol=proto)
    d = score_difference(df, "rose", protocol=proto)
    if d is not None:
        return r, m, d, verdict(d, "RoSE", "MEMIT-Merge")
    if pd.notna(r.estimate) and pd.notna(m.estimate):
        return r, m, None, "RoSE vs MEMIT-Merge: difference not tested (this CSV has no paired interval)"
    return r, m, None, "RoSE vs MEMIT-Merge cannot be compared"


def _diff_text(d: Interval | None) -> str:
    return "" if d is None else f"RoSE − MEMIT-Merge {fmt_interval(d, signed=True, n=False)}"


def _n_text(*ivs: Interval) -> str:
    """``n=16 requests, 4 subjects`` when the numbers share their counts, else each one's."""
    ns = {(iv.n, iv.n_clusters) for iv in ivs if iv.n}
    if len(ns) == 1:
        n, k = ns.pop()
        return f"n={n} requests, {k} subjects" if k else f"n={n} requests"
    return "; ".join(f"n={iv.n}, {iv.n_clusters} subjects" for iv in ivs)


def plot(df: pd.DataFrame):
    r, m, diff, verdict_ = _finding(df)
    model = model_of(df)
    d = df[(df["form"] == "instruction") & (df["protocol"] == HEADLINE)]
    if d.empty:  # evaluated without generation: fall back to prob, then token accuracy
        d = df[(df["form"] == "instruction") & (df["protocol"] == "prob")]
        d = d if len(d) else df[(df["form"] == "instruction")]
    proto = d["protocol"].iloc[0] if len(d) else HEADLINE
    diff = f"; {_diff_text(diff)}" if diff is not None else ""
    title = (f"{model} instruction efficacy: {verdict_} ({_iv(r)} vs {_iv(m)}{diff})\n"
             f"protocol {proto}: {PROTOCOL_LABEL.get(proto, proto)}"
             + (f"; {counts(d)}" if not has_intervals(d) and len(d) else ""))
    return plot_metric_bars(d, editors=list(dict.fromkeys(df["editor"])), title=title, figsize=(6.8, 2.9))


def write_extra(df: pd.DataFrame, out) -> list[str]:
    """``<out>/table_main_results.md`` (Markdown tables per protocol and form, the paper's Tab. 1 below)."""
    path = Path(out) / f"{ID}.md"
    model = model_of(df, "?")
    r, m, diff, verdict_ = _finding(df)
    proto = HEADLINE if HEADLINE in set(df["protocol"]) else "prob"
    diff = f"; {_diff_text(diff)}" if diff is not None else ""
    notes = (f"Model **{model}**; instruction efficacy ({proto}): **{verdict_}** — RoSE {_iv(r)} vs MEMIT-Merge "
             f"{_iv(m)}{diff} ({_n_text(r, m)}; paper, Qwen2.5-7B-Instruct: 86.7 vs 75.5).", "", *NOTES)
    path.write_text(results_markdown(df.drop(columns=[c for c in ("model",) if c in df]),
                                     title="Main results (RoSE Tab. 1)", paper=PAPER_TAB1, notes=notes) + "\n")
    return [str(path)]


def headline(df: pd.DataFrame) -> str:
    """Estimate, 95% subject-bootstrap interval, n requests and n subjects of the headline numbers, and the
    paired RoSE − MEMIT-Merge difference that decides the verdict (no interval in a CSV written before them)."""
    proto = HEADLINE if HEADLINE in set(df["protocol"]) else "prob"
    r, m, diff, verdict_ = _finding(df)
    side = []
    for p in ("prob", "token_acc"):
        if p == proto or p not in set(df["protocol"]):
            continue
        rp, mp, dp, _ = _finding(df, p)
        side.append(f"{p} {_iv(rp)} vs {_iv(mp)}" + (f" ({_diff_text(dp)})" if dp is not None else ""))
    loc = score_interval(df, "rose", "locality", protocol=proto)
    what = "95% subject-bootstrap intervals" if has_intervals(df) else "no intervals in this CSV"
    diff = f"; {_diff_text(diff)}" if diff is not None else ""
    return (f"instruction efficacy ({proto}): rose {_iv(r)} vs memit-merge {_iv(m)}{diff} → {verdict_} "
            f"({_n_text(r, m)}, {what}; paper Qwen2.5-7B: 86.7 vs 75.5)"
            + "".join(f"; {s}" for s in side)
            + f"; rose locality ({proto}) {_iv(loc)} (paper 63.3)")


if __name__ == "__main__":
    main(__file__)
