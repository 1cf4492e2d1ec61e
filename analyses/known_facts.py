"""known_facts: which built-in facts the unedited model knows, per form (true-fact recall before any edit)."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from geomprobe.evaluate import evaluate
from geomprobe.intervals import cluster_bootstrap, fmt_interval
from geomprobe.pipeline import main
from geomprobe.plots.results import plot_known_facts
from geomprobe.tables import model_of
from geomprobe.workspace import Workspace

ID = "known_facts"
PAPER = "precondition of every edit (the paper's models know the facts they overwrite)"
WHAT = ("True-fact recall of the unedited model on every built-in request with a true answer, per form: the greedy "
        "continuation starts with target_true (every answer token the argmax, teacher-forced; one forward per "
        "prompt) and the share of answer tokens that are; 95% intervals resample subjects.  A subject counts as "
        "known when at least half its declarative facts are recalled.")
COLUMNS = ("subject", "relation", "form", "protocol", "value")
FORMS = ("declarative", "question", "instruction")


def facts(requests) -> list:
    """The requests that carry a true answer, rewritten so that ``target_new`` is that answer."""
    return [replace(r, target_new=r.target_true, target_true=None) for r in requests if r.target_true]


def compute(ws: Workspace) -> pd.DataFrame:
    reqs = facts(ws.all_requests)
    ev = evaluate(ws.lm, reqs, forms=FORMS, protocols=("token_acc",), locality=False)
    ev = ev[ev["metric"].isin(("efficacy", "generalization"))]
    starts = ev[ev["protocol"] == "token_acc"].assign(protocol="starts_with",
                                                       value=lambda d: (d["value"] >= 1.0).astype(float))
    ev = pd.concat([ev, starts], ignore_index=True)
    df = ev.groupby(["subject", "relation", "form", "protocol"], as_index=False, sort=False)["value"].mean()
    df.insert(0, "model", ws.lm.name)
    df["n_requests"] = len(reqs)
    return df


def recall(df: pd.DataFrame, form: str, protocol: str = "starts_with"):
    """Mean recall of one form with its subject-bootstrap interval (one value per request)."""
    d = df[(df["form"] == form) & (df["protocol"] == protocol)]
    return cluster_bootstrap(d["value"].to_numpy(float), d["subject"].to_numpy())


def known_subjects(df: pd.DataFrame, threshold: float = 0.5) -> tuple[list[str], int]:
    """Subjects whose declarative facts are recalled (greedy continuation starts with the answer) on at least
    ``threshold`` of their relations."""
    d = df[(df["form"] == "declarative") & (df["protocol"] == "starts_with")]
    share = d.groupby("subject", sort=False)["value"].mean()
    return [s for s, v in share.items() if v >= threshold], len(share)


def plot(df: pd.DataFrame):
    rows = []
    for form in FORMS:
        for protocol in ("starts_with", "token_acc"):
            iv = recall(df, form, protocol)
            rows.append({"form": form, "protocol": protocol, "value": iv.estimate, "low": iv.low, "high": iv.high,
                         "n": iv.n, "n_subjects": iv.n_clusters})
    known, total = known_subjects(df)
    by_rel = (df[(df["form"] == "declarative") & (df["protocol"] == "starts_with")]
              .groupby("relation")["value"].agg(["mean", "size"]).reset_index())
    return plot_known_facts(pd.DataFrame(rows), by_rel,
                            title=f"{model_of(df)}: true-fact recall before any edit "
                                  f"({len(known)}/{total} subjects known declaratively)")


def headline(df: pd.DataFrame) -> str:
    parts = [f"{form} {fmt_interval(recall(df, form), scale=100)}" for form in FORMS]
    known, total = known_subjects(df)
    acc = fmt_interval(recall(df, "declarative", "token_acc"), scale=100, n=False)
    return ("greedy continuation starts with the true answer: " + "; ".join(parts)
            + f" (declarative token accuracy {acc}); subjects known (≥ half their declarative facts): "
              f"{len(known)} of {total}")


if __name__ == "__main__":
    main(__file__)
