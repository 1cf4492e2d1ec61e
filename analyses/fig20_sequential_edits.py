"""fig20_sequential_edits: instruction-query metrics after 5, 10, 20, 40 sequential edits, per editor
(RoSE Fig. 20, App. K)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from geomprobe.pipeline import main
from geomprobe.plots.results import fmt, plot_sequential
from geomprobe.tables import TIE, form_scores, model_of
from geomprobe.workspace import Workspace

ID = "fig20_sequential_edits"
PAPER = "RoSE Fig. 20"
WHAT = ("Efficacy / paraphrase / locality / overall (%) on instruction queries (question, declarative rows too) over "
        "every request edited so far, after each number of sequential edits, per editor.")
COLUMNS = ("editor", "n_edits", "protocol", "form", "metric", "value")


def compute(ws: Workspace) -> pd.DataFrame:
    frames = []
    for name in ws.settings.sequential_editors:
        seq = ws.sequential(name)
        df = form_scores(seq["metrics"], by=("editor", "n_edits"))
        extra = [{"editor": name, "n_edits": n, "protocol": "heldout", "form": "general", "metric": "perplexity",
                  "value": float(p), "n_requests": 0} for n, p in seq["perplexity"].items()]
        extra += [{"editor": name, "n_edits": n, "protocol": "time", "form": "general", "metric": "edit_seconds",
                   "value": float(s), "n_requests": int(n)} for n, s in seq["seconds"].items()]
        frames += [df, pd.DataFrame(extra)]
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "model", ws.lm.name)
    return out


def _at_last(df: pd.DataFrame, metric: str = "efficacy") -> tuple[int, dict[str, float]]:
    d = df[(df["form"] == "instruction") & (df["protocol"] == "prob") & (df["metric"] == metric)]
    if d.empty:
        return 0, {}
    n = int(d["n_edits"].max())
    last = d[d["n_edits"] == n]
    return n, {e: float(v) for e, v in zip(last["editor"], last["value"])}


def _finding(df: pd.DataFrame) -> str:
    n, eff = _at_last(df)
    eff = {e: v for e, v in eff.items() if np.isfinite(v)}
    if not eff:
        return "no instruction efficacy measured"
    best = max(eff.values())
    leaders = [e for e, v in eff.items() if v >= best - TIE]
    who = leaders[0] if len(leaders) == 1 else " = ".join(leaders)
    lead = "leads" if len(leaders) == 1 else "tie"
    return f"after {n} sequential edits {who} {lead} on instruction efficacy ({best:.0f}%)"


def plot(df: pd.DataFrame):
    model = model_of(df)
    return plot_sequential(df, title=f"{model}: {_finding(df)}")


def headline(df: pd.DataFrame) -> str:
    n, eff = _at_last(df)
    _, overall = _at_last(df, "overall")
    parts = ", ".join(f"{e} {fmt(eff.get(e, np.nan))}/{fmt(overall.get(e, np.nan))}" for e in eff)
    return (f"instruction efficacy/overall after {n} sequential edits: {parts} "
            "(paper Qwen2.5-7B: RoSE leads up to 40 edits, overall 64.9)")


if __name__ == "__main__":
    main(__file__)
