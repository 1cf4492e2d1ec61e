"""why_forms_fail: why question / instruction forms fail, from interventions on every request-form of the catalogue's
same-subject batch, and which criterion predicts the failure (issue 11; no paper figure: the paper's account is
the Δ-vs-ρ criterion, scored here beside the interventions).

Set-up: the shared batch (``settings.n_subjects`` subjects, every relation) edited by memit-merge, rose-no-hki
(the identity update on memit-merge's joint value), rose and memit; :func:`geomprobe.validate.collect` measures
every request-form (diagnose's measurement with the causal chain: written share, δ patched into the unedited and
the edited model, δ scaling, tolerance along −δ̂ and along the edited model's miss; patches on the first prompt of
each form, the outcome on all).  The CSV holds the records (``table = "record"``) and the δ-scaling curve
(``table = "curve"``).  The held-out AUCs of panel (c) split the batch's subjects in half — at the catalogue's few
subjects they are wide; ``geomprobe validate`` (``figures/validation/``) runs the same measurement on 40 subjects.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from geomprobe.pipeline import main
from geomprobe.tables import model_of
from geomprobe.validate import chain
from geomprobe.workspace import Workspace

ID = "why_forms_fail"
PAPER = "— (issue 11; the paper's account is Fig. 2b's Δ vs ρ)"
WHAT = ("Cause of every failing request-form from interventions (δ patched into the unedited / edited model, δ "
        "scaling), the transfer curve, held-out AUC of each failure criterion (the paper's Δ vs ρ beside the "
        "interventions), and the paper's claim 2 on its own footing and like-for-like.")
COLUMNS = ("table", "editor", "subject", "form", "success_after", "cause")
EDITORS = ("memit-merge", "rose-no-hki", "rose", "memit")
PER_FORM = 1


def compute(ws: Workspace) -> pd.DataFrame:
    parts = [chain(ws, e, per_form=PER_FORM) for e in EDITORS]
    records = pd.concat([r for r, _ in parts], ignore_index=True).assign(table="record", model=ws.lm.name)
    curve = pd.concat([c for _, c in parts], ignore_index=True).assign(table="curve", model=ws.lm.name)
    return pd.concat([records, curve], ignore_index=True)


def _tables(df: pd.DataFrame):
    from geomprobe.validate import cause_table, claim2_table, criterion_table

    rec = df[df["table"] == "record"].reset_index(drop=True)
    curve = df[df["table"] == "curve"].reset_index(drop=True)
    return rec, curve, criterion_table(rec, n_boot=500), cause_table(rec, n_boot=500), claim2_table(rec, n_boot=500)


def plot(df: pd.DataFrame):
    from geomprobe.plots.validation import plot_validation

    rec, curve, table, causes, claim2 = _tables(df)
    fig = plot_validation(rec, curve, table, causes, claim2)
    fig.suptitle(f"{model_of(df)}: {headline(df)}", fontsize=8.5)
    return fig


def headline(df: pd.DataFrame) -> str:
    rec, _, table, causes, claim2 = _tables(df)
    t = table[(table["editor"] == "all") & np.isfinite(table["auc"])]
    if not len(t):
        return "no criterion measured"
    best = t.sort_values("auc", ascending=False).iloc[0]
    paper = t[t["criterion"] == "paper: Δ_L > ρ"]
    failing = causes[causes["cause"] == "confirmed"]
    conf = (failing["count"].sum() / failing["n_failed"].sum()) if failing["n_failed"].sum() else float("nan")
    top = causes[causes["cause"] != "confirmed"].groupby("cause")["count"].sum().sort_values(ascending=False)
    share = top / top.sum() if top.sum() else top
    causes_txt = ", ".join(f"{c} {v:.0%}" for c, v in share.head(3).items())
    p = (f"; paper's Δ_L > ρ AUC {paper['auc'].iloc[0]:.2f}" if len(paper) else "")
    return (f"{int(best['n'])} request-forms, {int(best['n_subjects'])} subjects, {int(best['n_failed'])} failing; "
            f"best predictor '{best['criterion']}' AUC {best['auc']:.2f} [{best['auc_low']:.2f}, "
            f"{best['auc_high']:.2f}]{p}; causes of failures: {causes_txt}; {conf:.0%} intervention-confirmed")


if __name__ == "__main__":
    main(__file__)
