"""fig15_similar_subjects: key cosines of near-duplicate subjects ("Windows 10" / "Windows 11") and the locality
breach an edit of one causes on the other, per editor (RoSE Fig. 15, Tab. 3).

Set-up: the built-in ``near-duplicates`` requests come in pairs ``ndXX-a`` / ``ndXX-b``; the first
``settings.near_duplicate_pairs`` pairs are used.  Only the ``-a`` subjects are edited (one batch per editor).
Each ``-a`` request's neighbourhood holds the ``-b`` subject's prompt ("Windows 11 is a product made by") and an
unrelated subject's prompt ("Kindle is a product made by"), rendered in declarative, question and instruction
form (:func:`geomprobe.evaluate.neighborhood_prompts`).

Measured per editor, pair, form and probe (``near-duplicate`` = the ``-b`` subject's prompts, ``unrelated`` = the
control subject's prompts):

* ``breach_prob`` = 1 − MEMIT-style locality: the share of probe prompts whose preference between the ``-a``
  request's true and new targets (mean per-token log-prob) differs from the pre-edit model's preference, i.e.
  the edit of "Windows 10 → Apple" made the model prefer "Apple" on a Windows 11 prompt where it did not before;
* ``breach_token`` = 1 − EasyEdit-style locality: the share of the pre-edit greedy answer tokens the edited model
  no longer predicts (top-1 changed);
* ``dlogp_new`` = post − pre mean per-token log-prob of the ``-a`` request's new target on the probe prompt
  (nats; > 0 = pulled towards the edited answer).

Plus ``edit`` rows (declarative efficacy of the ``-a`` edits, prob protocol, 0/1 per pair) and ``key_cosine`` rows:
cosines between the subjects' keys at the last edit layer in each form, for each near-duplicate pair and for
every pair of subjects from different pairs (the different-subject baseline).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

import geomprobe as gp
from geomprobe.pipeline import main
from geomprobe.plots.results import fmt, plot_similar_subjects
from geomprobe.probes.near_duplicates import mean_target_logprob, near_duplicate_key_cosines, pair_id
from geomprobe.tables import breach_share, breach_table, model_of
from geomprobe.workspace import Workspace

ID = "fig15_similar_subjects"
PAPER = "RoSE Fig. 15, Tab. 3"
WHAT = ("Key cosines of near-duplicate subject pairs vs different subjects, and the locality breach on the "
        "near-duplicate subject's prompts after editing only its twin, per editor.")
COLUMNS = ("kind", "editor", "pair", "pair_kind", "form", "probe", "metric", "value")
EDITORS = ("memit", "memit-merge", "alphaedit", "rose")
FORMS = ("declarative", "question", "instruction")


def near_duplicate_pairs(ws: Workspace) -> list[tuple]:
    """The first ``settings.near_duplicate_pairs`` (a, b) request pairs of the built-in near-duplicate set."""
    def make():
        sides: dict[str, dict[str, object]] = {}
        for r in gp.load_requests("near-duplicates"):
            pid, _, side = (r.case_id or "").rpartition("-")
            if pid and side in ("a", "b"):
                sides.setdefault(pid, {})[side] = r
        pairs = [(v["a"], v["b"]) for v in sides.values() if "a" in v and "b" in v]
        return pairs[: ws.settings.near_duplicate_pairs]
    return ws.memo("near_duplicate_pairs", make)


def _breach_rows(ws: Workspace, pairs, name: str) -> list[dict]:
    a_reqs = [a for a, _ in pairs]
    ref = ws.reference(a_reqs)
    ev = ws.evaluation(name, requests=a_reqs)
    upd = ws.update(name, requests=a_reqs)
    prompts = {(p.request, p.form, p.prompt_idx): p for p in ref.prompts}
    with upd.applied(ws.lm):
        post = mean_target_logprob(ws.lm, [p.text for p in ref.prompts],
                                   [a_reqs[p.request].target_new for p in ref.prompts])
    dlogp = {(p.request, p.form, p.prompt_idx): post[k] - p.logp_new / max(p.n_new, 1)
             for k, p in enumerate(ref.prompts)}

    def probe_of(req_i: int, form: str, j: int) -> str:
        b = pairs[req_i][1]
        return "near-duplicate" if b.subject.lower() in prompts[(req_i, form, j)].text.lower() else "unrelated"

    rows = []
    def base(i: int) -> dict:
        return {"kind": "breach", "editor": name, "pair": pair_id(a_reqs[i].case_id),
                "subject_a": a_reqs[i].subject, "subject_b": pairs[i][1].subject}

    loc = ev[ev["metric"] == "locality"].copy()
    if not loc.empty:
        loc["probe"] = [probe_of(i, f, j) for i, f, j in zip(loc["request"], loc["form"], loc["prompt_idx"])]
        metric_of = {"prob": "breach_prob", "token_acc": "breach_token"}
        for (i, form, probe, proto), g in loc.groupby(["request", "form", "probe", "protocol"], sort=False):
            if proto in metric_of:
                rows.append({**base(i), "form": form, "probe": probe, "metric": metric_of[proto],
                             "value": 1.0 - float(g["value"].mean()), "n_prompts": len(g)})
    for (i, form, j), d in dlogp.items():
        rows.append({**base(i), "form": form, "probe": probe_of(i, form, j), "metric": "dlogp_new", "value": d,
                     "n_prompts": 1})
    eff = ev[(ev["metric"] == "efficacy") & (ev["protocol"] == "prob")]
    for i, g in eff.groupby("request"):
        rows.append({**base(i), "kind": "edit", "form": "declarative", "probe": "edited",
                     "metric": "efficacy_a", "value": float(g["value"].mean()), "n_prompts": len(g)})
    return rows


def compute(ws: Workspace) -> pd.DataFrame:
    pairs = near_duplicate_pairs(ws)
    if not pairs:
        raise gp.GeomprobeError("the near-duplicates set holds no a/b pairs; check geomprobe/data/builtin")
    rows = near_duplicate_key_cosines(ws.lm, pairs, ws.edit_layer, FORMS).to_dict("records")
    editors = [e for e in EDITORS if e in ws.settings.editors] or list(EDITORS)
    for name in editors:
        rows += _breach_rows(ws, pairs, name)
    df = pd.DataFrame(rows)
    df.insert(0, "model", ws.lm.name)
    df["layer"] = ws.edit_layer
    df["n_pairs"] = len(pairs)
    return df


def _key_means(df: pd.DataFrame) -> tuple[float, float]:
    kc = df[df["kind"] == "key_cosine"]
    nd = kc[kc["pair_kind"] == "near-duplicate"]["value"].mean()
    ds = kc[kc["pair_kind"] == "different-subject"]["value"].mean()
    return float(nd) if pd.notna(nd) else math.nan, float(ds) if pd.notna(ds) else math.nan


def plot(df: pd.DataFrame):
    nd, ds = _key_means(df)
    r, m = breach_share(df, "rose"), breach_share(df, "memit-merge")
    if np.isfinite(r) and np.isfinite(m):
        verdict = ("RoSE breaches no more than MEMIT-Merge" if r <= m + 0.5 else "RoSE breaches more than MEMIT-Merge")
        sel = (df["kind"] == "breach") & (df["probe"] == "near-duplicate") & (df["metric"] == "breach_prob")
        n_p = int(df.loc[sel & (df["editor"] == "rose"), "n_prompts"].sum()) if "n_prompts" in df else 0
        verdict += f" ({r:.0f} vs {m:.0f}% of {n_p} prompts)"
    else:
        verdict = "breach not measured for RoSE / MEMIT-Merge"
    model = model_of(df)
    n = int(df["n_pairs"].iloc[0]) if "n_pairs" in df else 0
    title = (f"{model}, {n} near-duplicate pairs: key cosine {fmt(nd, 2)} vs {fmt(ds, 2)} for different subjects;\n"
             f"{verdict} on the twin subject's prompts (all forms, prob)")
    layer = int(df["layer"].iloc[0]) if "layer" in df else None
    return plot_similar_subjects(df, breach_table(df), title=title, layer=layer)


def headline(df: pd.DataFrame) -> str:
    nd, ds = _key_means(df)
    eds = list(dict.fromkeys(df.loc[df["kind"] == "breach", "editor"]))
    br = ", ".join(f"{e} {fmt(breach_share(df, e))}% ({fmt(breach_share(df, e, 'unrelated'))}%)" for e in eds)
    return (f"near-duplicate key cosine {fmt(nd, 2)} vs different subjects {fmt(ds, 2)} (paper ≈0.5 vs ≈0.04); "
            f"breach on twin (unrelated) prompts: {br} (paper Tab. 3: RoSE and MEMIT-Merge both fail)")


if __name__ == "__main__":
    main(__file__)
