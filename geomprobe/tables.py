"""Tables: the joins and aggregations between probe / evaluation output and the figures, and the thresholds the
figure titles use to call a difference.

The plot functions (:mod:`geomprobe.plots`) only draw; the analyses (``analyses/<id>.py``) build their tidy CSV
layout and the tables a plot needs with the functions here, from the CSV alone (so ``geomprobe figures
--replot`` redraws without a model).

**The tolerance layout** (:func:`tidy_radius`, :func:`tidy_deviation`; RoSE Fig. 2a/8, 2b/10, 7, 12, 17, 19)::

    model, editor, rule, form, case_id, subject, relation, prompt_idx, layer, metric, value, value_rel, h_norm,
    rho, rho_from, predicted, status, safe, step   (+ sweep_layer for Fig. 12 or hki_templates for Fig. 19)

* ``metric == "tolerance_radius"``: one row per request; ``value`` = ρ of the optimised value on the declarative
  edit prompt (residual-norm units at the last edit layer), ``value_rel`` = ρ/‖h‖, ``predicted`` 1 when the
  unperturbed value predicts the target, ``status`` one of :data:`STATUS` (``"not predicted"``: the edit itself
  failed and ρ = 0 means "undefined", not "collapsed").
* ``metric == "activation_deviation"``: one row per (request, form prompt, update rule); ``value`` = Δ =
  ‖ΔW_L Δk‖ in the same units; ``rho`` / ``predicted`` / ``status`` repeat the request's ρ row (measured on
  ``rho_from``'s optimised values); ``safe`` = 1 when Δ < ρ.
* ``metric == "edit_seconds"``: one row per edit (Fig. 19), ``value`` = wall time of the edit in seconds.

**Per-form scores** (:func:`form_scores`, in percent, each request weighing the same):

* ``declarative``: efficacy = the edit prompt itself, paraphrase = the request's declarative paraphrases,
  locality = the declarative neighbourhood prompts;
* ``question`` / ``instruction``: efficacy = the first held-out query of that form (``prompt_idx`` 0),
  paraphrase = the other held-out queries of that form (rephrasings of the same question), locality =
  the neighbourhood prompts rendered in that form.  This is the paper's reading of Tab. 1, where
  "efficacy" and "paraphrase" are measured "in the same linguistic form" as the query;
* ``overall`` = the arithmetic mean of efficacy, paraphrase and locality (as RoSE Tab. 1 reports it; NaN
  when one of them is missing).

Every score carries ``n_requests``, ``n_subjects`` and a 95% bootstrap interval ``low``–``high`` resampling
*subjects* (requests of one subject are not independent; :mod:`geomprobe.intervals`); with ``versus`` an editor's
rows also carry the paired difference to that editor on the same requests, with its interval.  The intervals
are stored in the CSV, so a replot shows them without the per-request rows; an older CSV without these columns
replots without intervals (:func:`score_interval`, :func:`score_difference`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .intervals import (N_BOOT, Interval, paired_difference, percentile_interval, resample_weights,
                        resampled_means)

# ---- verdict thresholds ------------------------------------------------------------------------------------
#: ρ of one edit against another (ratio): below ``SHRINK`` × the other it "collapses" (RoSE Fig. 2a: joint vs
#: isolated editing) ...
SHRINK = 0.8
#: ... above ``WIDEN`` × the other it "widens" / "restores"; in between the two are "similar" (±20-25% is
#: within the spread of ρ over a handful of requests).
WIDEN = 1.25
#: Δ of one update rule against another (ratio): above ``AMPLIFY`` × the other (below 1/``AMPLIFY``) one rule
#: clearly amplifies (damps) the drift; Δ spans orders of magnitude, so 1.5× is the smallest ratio a title calls.
AMPLIFY = 1.5
#: below this many requests whose value predicts the target a comparison of ρ distributions rests on too few
#: radii: titles report the numbers and conclude nothing.
FEW = 3
#: shares (e.g. the Δ < ρ rate of two editors) more than this apart (10 points) differ.
SHARE_MARGIN = 0.1
#: key cosines more than this apart (same subject vs different subjects) are "separated".
SEPARATED = 0.1
#: a mean gradient-conflict score (1 − |cos|) at or above this is "near-orthogonal" ...
ORTHOGONAL = 0.8
#: ... at or above this "mostly orthogonal", below it "partly aligned".
MOSTLY_ORTHOGONAL = 0.5
#: scores (percent) within this of the best tie (instruction efficacy leaders, table and ablation titles).
TIE = 0.05
#: ρ is "stable" over a sweep (HKI templates M) when (max − min) / max of its medians stays below this.
STABLE_SPREAD = 0.25
#: a time ratio at or beyond this (or 1/this) is told as "N× slower / faster", below it in percent.
TIMES = 2.0
#: a condition number above this makes the key covariance "ill-conditioned".
ILL_CONDITIONED = 1e3


def versus(a: float, b: float, above: float, below: float | None = None, margin: bool = False) -> int:
    """Where ``a`` stands against ``b``: +1 clearly above, -1 clearly below, 0 similar (or a NaN).

    Ratio form (default): +1 when ``a > above * b``, -1 when ``a < below * b`` (``below`` default:
    ``b / above``).  ``margin=True``: +1 when ``a > b + above``, -1 when ``a < b - below`` (default ``above``).
    The thresholds are the module constants (:data:`WIDEN` / :data:`SHRINK`, :data:`AMPLIFY`,
    :data:`SHARE_MARGIN`, ...).
    """
    if margin:
        lo = above if below is None else below
        return 1 if a > b + above else -1 if a < b - lo else 0
    if below is None:
        return 1 if a > above * b else -1 if a < b / above else 0
    return -1 if a < below * b else 1 if a > above * b else 0


def compare(a: float, b: float, name_a: str, name_b: str, tol: float = TIE) -> str:
    """``"rose beats memit-merge"`` / ``"ties"`` / ``"trails"``, or ``"cannot be compared"`` with a NaN."""
    if not (np.isfinite(a) and np.isfinite(b)):
        return f"{name_a} vs {name_b} cannot be compared"
    if abs(a - b) <= tol:
        return f"{name_a} ties {name_b}"
    return f"{name_a} {'beats' if a > b else 'trails'} {name_b}"


# ---- generic -----------------------------------------------------------------------------------------------
def first(df: pd.DataFrame, column: str, default=""):
    """The first value of ``column`` (a constant column such as ``model``), ``default`` without the column."""
    return df[column].iloc[0] if column in df else default


def model_of(df: pd.DataFrame, default: str = "") -> str:
    """The model a figure's CSV was measured on (its ``model`` column), ``default`` without one."""
    return first(df, "model", default)


def flag(s: pd.Series) -> pd.Series:
    """A 0/1 / bool / "True" column as bool, NaN as False (CSV round trip safe)."""
    def one(x) -> bool:
        if x is None or (isinstance(x, float) and np.isnan(x)):
            return False
        if isinstance(x, str):
            return x.strip().lower() in ("1", "1.0", "true", "yes")
        return bool(x)

    return s.map(one).astype(bool)


# ---- the tolerance layout ----------------------------------------------------------------------------------
RHO, DEV, SECONDS = "tolerance_radius", "activation_deviation", "edit_seconds"
#: like-for-like rows (issue 11): the edited model's miss ‖v − δ‖ against the tolerance along that miss, and the
#: cumulative drift ‖Σ_l ΔW_l Δk_l‖ (edited keys) against the tolerance along −δ̂; per request-form
MISS, CUMULATIVE = "edited_miss", "cumulative_drift"
#: status of a request's ρ
MEASURED, COLLAPSED, NOT_PREDICTED = "measured", "collapsed", "not predicted"
STATUS = (MEASURED, COLLAPSED, NOT_PREDICTED)
#: rule of the ρ rows (ρ belongs to the optimised value, not to an update rule)
NO_RULE = "-"

TIDY_COLUMNS = ("model", "editor", "rule", "form", "case_id", "subject", "relation", "prompt_idx", "layer", "metric",
                "value", "value_rel", "h_norm", "rho", "rho_from", "predicted", "status", "safe", "step")


def _case(df: pd.DataFrame) -> pd.Series:
    cid = df["case_id"] if "case_id" in df else pd.Series([None] * len(df), index=df.index)
    fallback = df["subject"].astype(str) + "/" + df["relation"].astype(str)
    return cid.where(cid.notna(), fallback).astype(str)


def tidy_radius(tol: pd.DataFrame, model: str, editor: str | None = None, rho_from: str | None = None,
                **extra) -> pd.DataFrame:
    """ρ rows in the tidy layout from :func:`geomprobe.probes.tolerance_radius` output.

    Args:
        tol: the probe's DataFrame (one row per request).
        model: model name.
        editor: editor to file the rows under (default: the probe's); ``rho_from`` the editor whose optimised
            values were measured (default: the same).
        extra: constant columns (``sweep_layer=3``...).
    """
    pred = flag(tol["predicted"])
    status = np.where(~pred, NOT_PREDICTED, np.where(tol["value"] < tol["step"], COLLAPSED, MEASURED))
    src = rho_from or (str(tol["editor"].iloc[0]) if len(tol) else "")
    out = pd.DataFrame({
        "model": model, "editor": editor or tol["editor"], "rule": NO_RULE, "form": tol["form"],
        "case_id": _case(tol), "subject": tol["subject"], "relation": tol["relation"], "prompt_idx": 0,
        "layer": tol["layer"], "metric": RHO, "value": tol["value"], "value_rel": tol["value_rel"],
        "h_norm": tol["h_norm"], "rho": tol["value"], "rho_from": src, "predicted": pred.astype(int),
        "status": status, "safe": np.nan, "step": tol["step"],
        "criterion": tol["criterion"] if "criterion" in tol else "argmax",
    })
    for k, v in extra.items():
        out[k] = v
    return out


def tidy_deviation(dev: pd.DataFrame, tol: pd.DataFrame, model: str, rho_from: str | None = None,
                   **extra) -> pd.DataFrame:
    """Δ rows in the tidy layout from :func:`geomprobe.probes.activation_deviation` output, each joined with
    its request's ρ from ``tol`` (the tolerance probe on the same requests)."""
    rho = tidy_radius(tol, model, rho_from=rho_from).set_index("case_id")
    case = _case(dev)
    get = lambda col: case.map(rho[col]).to_numpy()  # noqa: E731
    r = get("rho").astype(float)
    out = pd.DataFrame({
        "model": model, "editor": dev["editor"], "rule": dev["rule"], "form": dev["form"], "case_id": case,
        "subject": dev["subject"], "relation": dev["relation"], "prompt_idx": dev["prompt_idx"],
        "layer": dev["layer"], "metric": DEV, "value": dev["value"],
        "value_rel": dev["value"].to_numpy() / get("h_norm").astype(float), "h_norm": get("h_norm"), "rho": r,
        "rho_from": get("rho_from"), "predicted": get("predicted"), "status": get("status"),
        "safe": np.where(np.isnan(r), np.nan, (dev["value"].to_numpy() < r).astype(float)), "step": get("step"),
    })
    for k, v in extra.items():
        out[k] = v
    return out


def tidy_like_for_like(records: pd.DataFrame, model: str, forms: Sequence[str] = ("question", "instruction")
                       ) -> pd.DataFrame:
    """Like-for-like rows from causal-chain records (:func:`geomprobe.validate.chain`),
    one per request-form and metric: :data:`MISS` (``value`` = ‖v − δ‖ of the edited model at (L, subject),
    ``rho`` = the tolerance from δ along v − δ on the same prompt) and :data:`CUMULATIVE` (``value`` = ‖Σ_l ΔW_l
    Δk_l‖ with edited keys, ``rho`` = the tolerance along −δ̂); ``safe`` = value ≤ rho; ``predicted`` = the
    tolerance is defined (δ itself wins there).  Medians over the form's measured prompts; residual-norm units."""
    d = records[records["form"].isin(forms)]
    out = []
    for metric, value, rho in ((MISS, "miss_norm", "rho_along_drift"), (CUMULATIVE, "cumulative_drift",
                                                                         "rho_along_delta")):
        v, r = d[value].astype(float).to_numpy(), d[rho].astype(float).to_numpy()
        ok = ~np.isnan(r)
        out.append(pd.DataFrame({
            "model": model, "editor": d["editor"].to_numpy(), "rule": d["editor_rule"].to_numpy(),
            "form": d["form"].to_numpy(), "case_id": d["case_id"].to_numpy(), "subject": d["subject"].to_numpy(),
            "relation": d["relation"].to_numpy(), "metric": metric, "value": v, "rho": r,
            "predicted": ok, "safe": np.where(ok & ~np.isnan(v), (v <= r).astype(float), np.nan),
            "success_after": d["success_after"].astype(float).to_numpy()}))
    return pd.concat(out, ignore_index=True)


def radius_rows(df: pd.DataFrame, editor: str | None = None) -> pd.DataFrame:
    """The ρ rows (of ``editor``)."""
    d = df[df["metric"] == RHO]
    return d if editor is None else d[d["editor"] == editor]


def predicted_radii(df: pd.DataFrame, column: str = "value") -> np.ndarray:
    """ρ values (``column``) of the requests whose optimised value predicts the target."""
    d = df[df["metric"] == RHO] if "metric" in df else df
    return d.loc[flag(d["predicted"]), column].astype(float).to_numpy()


def quartiles(values) -> tuple[float, float, float] | None:
    """(q25, median, q75) of finite values, None when there are none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    q = np.percentile(v, [25, 50, 75])
    return float(q[0]), float(q[1]), float(q[2])


def safe_share(dev: pd.DataFrame) -> float:
    """Share of Δ rows with Δ < ρ among the prompts of requests whose value predicts the target (NaN if none)."""
    d = dev[flag(dev["predicted"])] if len(dev) else dev
    return float(flag(d["safe"]).mean()) if len(d) else float("nan")


def predicted_count(df: pd.DataFrame) -> tuple[int, int]:
    """(requests predicted, requests) among ρ rows."""
    d = radius_rows(df)
    return int(flag(d["predicted"]).sum()), len(d)


def median_iqr(d: pd.DataFrame, by: str, values: str = "value") -> pd.DataFrame:
    """``q25, med, q75`` of ``values`` per ``by``."""
    g = d.groupby(by)[values]
    return pd.DataFrame({"q25": g.quantile(0.25), "med": g.median(), "q75": g.quantile(0.75)})


# ---- per-form scores ---------------------------------------------------------------------------------------
FORM_ORDER: tuple[str, ...] = ("instruction", "question", "declarative")
METRICS: tuple[str, ...] = ("efficacy", "paraphrase", "locality", "overall")
SCORE_COLUMNS = ("protocol", "form", "metric", "value", "n_requests")
#: what :func:`form_scores` adds: the subject-bootstrap 95% interval of ``value`` and the subjects it rests on
INTERVAL_COLUMNS = ("low", "high", "n_subjects")
#: and with ``versus``: the paired difference ``value − versus's value`` on the same requests and its interval
DIFF_COLUMNS = ("versus", "diff", "diff_low", "diff_high", "n_paired", "n_paired_subjects")


def _per_request(rows: pd.DataFrame) -> pd.DataFrame:
    """``unit, subject, value`` (percent): each request's mean over its prompts, one row per request."""
    if rows.empty:
        return pd.DataFrame({"unit": [], "subject": [], "value": []})
    key = "request" if "request" in rows.columns else "case_id"
    g = rows.groupby(key, sort=True)
    subj = g["subject"].first().astype(str) if "subject" in rows.columns else g[key].first().astype(str)
    per = g["value"].mean()
    return pd.DataFrame({"unit": per.index.astype(str), "subject": subj.to_numpy(),
                         "value": per.to_numpy(dtype=float) * 100.0})


def _mean_per_request(rows: pd.DataFrame) -> tuple[float, int]:
    if rows.empty:
        return math.nan, 0
    key = "request" if "request" in rows.columns else "case_id"
    per = rows.groupby(key)["value"].mean()
    return float(per.mean() * 100.0), int(len(per))


def _form_parts(g: pd.DataFrame, form: str) -> dict[str, pd.DataFrame]:
    if form == "declarative":
        parts = {"efficacy": g[(g["form"] == "declarative") & (g["metric"] == "efficacy")],
                 "paraphrase": g[(g["form"] == "paraphrase") & (g["metric"] == "paraphrase")]}
    else:
        gen = g[(g["form"] == form) & (g["metric"] == "generalization")]
        parts = {"efficacy": gen[gen["prompt_idx"] == 0], "paraphrase": gen[gen["prompt_idx"] > 0]}
    parts["locality"] = g[(g["form"] == form) & (g["metric"] == "locality")]
    return parts


THREE = ("efficacy", "paraphrase", "locality")


def _boot_metrics(per: dict[str, pd.DataFrame], n_boot: int, seed: int) -> tuple[dict[str, np.ndarray], int]:
    """Bootstrap replicates of each metric's mean and of ``overall`` (mean of the three), all on one set of
    subject resamples (the subjects of the form's requests)."""
    universe = sorted(set().union(*(set(p["subject"]) for p in per.values())))
    w = resample_weights(len(universe), n_boot, seed)
    boot = {m: resampled_means(p["value"], p["subject"], universe, w) for m, p in per.items()}
    boot["overall"] = np.mean([boot[m] for m in THREE], axis=0)
    return boot, len(universe)


def form_scores(ev: pd.DataFrame, by: Sequence[str] = ("editor",), forms: Sequence[str] = FORM_ORDER,
                versus: str | None = None, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per-form efficacy / paraphrase / locality / overall (percent) from :func:`evaluate` rows, each with its
    95% subject-bootstrap interval (:mod:`geomprobe.intervals`).

    Args:
        ev: rows of :func:`geomprobe.evaluate.evaluate` (plus the ``by`` columns).
        by: grouping columns kept in the output (e.g. ``editor``, ``n_edits``).
        forms: forms to report.
        versus: an editor (``by`` must hold ``editor``): every other editor's row also gets the paired difference
            ``its value − versus's value`` on the requests both were scored on, with its interval (subjects
            resampled once for both editors), in :data:`DIFF_COLUMNS`.
        n_boot, seed: bootstrap resamples and seed (fixed: the CSV is reproducible).

    Returns:
        tidy DataFrame: ``*by, protocol, form, metric, value, n_requests, low, high, n_subjects`` (``value``,
        ``low``, ``high`` in percent; ``low``/``high`` NaN with one subject), plus :data:`DIFF_COLUMNS` with
        ``versus``.  ``value`` is the mean over requests of each request's mean over its prompts; ``overall``'s
        interval is that of the mean of the three metrics on the same resamples.
    """
    by = [c for c in by if c in ev.columns]
    if versus is not None and "editor" not in by:
        raise ValueError("form_scores(versus=...) needs 'editor' among the `by` columns")
    rows, kept = [], {}
    for keys, g in ev.groupby([*by, "protocol"], sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        base = dict(zip([*by, "protocol"], keys))
        for form in forms:
            parts = _form_parts(g, form)
            vals = {m: _mean_per_request(sub) for m, sub in parts.items()}
            if all(n == 0 for _, n in vals.values()):
                continue
            three = [vals[m][0] for m in THREE]
            overall = float(np.mean(three)) if all(np.isfinite(three)) else math.nan
            n_max = max(n for _, n in vals.values())
            vals["overall"] = (overall, n_max if np.isfinite(overall) else 0)
            per = {m: _per_request(sub) for m, sub in parts.items()}
            boot, _ = _boot_metrics(per, n_boot, seed)
            kept[(*keys, form)] = per
            for m in METRICS:
                subs = per[m]["subject"] if m != "overall" else pd.concat([per[x]["subject"] for x in THREE])
                n_sub = int(subs.nunique()) if vals[m][1] else 0
                iv = percentile_interval(vals[m][0], boot[m], vals[m][1], n_sub)
                rows.append({**base, "form": form, "metric": m, "value": vals[m][0], "n_requests": vals[m][1],
                             "low": iv.low, "high": iv.high, "n_subjects": n_sub})
    out = pd.DataFrame(rows, columns=[*by, *SCORE_COLUMNS, *INTERVAL_COLUMNS])
    if versus is not None:
        out = _add_differences(out, kept, by, versus, n_boot, seed)
    return out


def _paired(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Requests scored for both (same request and subject): ``subject, a, b``."""
    m = a.merge(b, on=["unit", "subject"], suffixes=("_a", "_b"))
    m = m[np.isfinite(m["value_a"]) & np.isfinite(m["value_b"])]
    return m.rename(columns={"value_a": "a", "value_b": "b"})[["subject", "a", "b"]]


def _add_differences(out: pd.DataFrame, kept: dict, by: list[str], versus: str, n_boot: int,
                     seed: int) -> pd.DataFrame:
    cols = {c: [] for c in DIFF_COLUMNS}
    ei = by.index("editor")
    for rec in out.itertuples(index=False):
        r = rec._asdict()
        key = tuple(r[c] for c in [*by, "protocol"]) + (r["form"],)
        ref = key[:ei] + (versus,) + key[ei + 1:]
        d = Interval(math.nan, math.nan, math.nan, 0, 0)
        if r["editor"] != versus and ref in kept:
            pairs = {m: _paired(kept[key][m], kept[ref][m]) for m in THREE}
            if r["metric"] != "overall":
                p = pairs[r["metric"]]
                d = paired_difference(p["a"], p["b"], p["subject"], n_boot=n_boot, seed=seed)
            elif all(len(p) for p in pairs.values()):
                subs = pd.concat([p["subject"] for p in pairs.values()])
                universe = sorted(set(subs))
                w = resample_weights(len(universe), n_boot, seed)
                boot = np.mean([resampled_means(p["a"], p["subject"], universe, w)
                                - resampled_means(p["b"], p["subject"], universe, w) for p in pairs.values()], axis=0)
                est = float(np.mean([p["a"].mean() - p["b"].mean() for p in pairs.values()]))
                d = percentile_interval(est, boot, max(len(p) for p in pairs.values()), len(universe))
        cols["versus"].append(versus)
        cols["diff"].append(d.estimate)
        cols["diff_low"].append(d.low)
        cols["diff_high"].append(d.high)
        cols["n_paired"].append(d.n)
        cols["n_paired_subjects"].append(d.n_clusters)
    return out.assign(**cols)


def score(df: pd.DataFrame, editor: str, metric: str = "efficacy", form: str = "instruction",
          protocol: str = "prob", **where) -> float:
    """One number from a :func:`form_scores` table (NaN when absent)."""
    row = _score_row(df, editor, metric, form, protocol, **where)
    return math.nan if row is None else float(row["value"])


def _score_row(df: pd.DataFrame, editor: str, metric: str, form: str, protocol: str, **where) -> pd.Series | None:
    sel = (df["editor"] == editor) & (df["metric"] == metric) & (df["form"] == form) & (df["protocol"] == protocol)
    for k, v in where.items():
        sel &= df[k] == v
    d = df[sel & df["value"].notna()]
    return d.iloc[0] if len(d) else None


def _get(row: pd.Series, col: str, default=math.nan):
    v = row.get(col, default)
    return default if v is None or (isinstance(v, float) and math.isnan(v)) else v


def score_interval(df: pd.DataFrame, editor: str, metric: str = "efficacy", form: str = "instruction",
                   protocol: str = "prob", **where) -> Interval:
    """:func:`score` with its interval and counts from the CSV (bounds NaN for a CSV written before the
    intervals, or with one subject; ``n_subjects`` 0 when the CSV does not say)."""
    row = _score_row(df, editor, metric, form, protocol, **where)
    if row is None:
        return Interval(math.nan, math.nan, math.nan, 0, 0)
    return Interval(float(row["value"]), float(_get(row, "low")), float(_get(row, "high")),
                    int(_get(row, "n_requests", 0)), int(_get(row, "n_subjects", 0)))


def score_difference(df: pd.DataFrame, editor: str, metric: str = "efficacy", form: str = "instruction",
                     protocol: str = "prob", **where) -> Interval | None:
    """The paired difference ``editor − versus`` stored by :func:`form_scores` (``versus=``) for that row; None
    when the CSV has no difference columns or no difference for it (e.g. an old CSV)."""
    row = _score_row(df, editor, metric, form, protocol, **where)
    if row is None or "diff" not in row.index or not np.isfinite(float(_get(row, "diff"))):
        return None
    return Interval(float(row["diff"]), float(_get(row, "diff_low")), float(_get(row, "diff_high")),
                    int(_get(row, "n_paired", 0)), int(_get(row, "n_paired_subjects", 0)))


# ---- gradient conflict (RoSE Fig. 3 / 9) -------------------------------------------------------------------
def first_step(df: pd.DataFrame) -> pd.DataFrame:
    """The conflict rows of the first recorded optimisation step."""
    return df[df["step"] == df["step"].min()]


def conflict_matrix(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Symmetric relation × relation mean conflict (over subjects) and the number of subjects per cell."""
    rels = list(dict.fromkeys(list(df["relation_a"]) + list(df["relation_b"])))
    a = pd.concat([df[["relation_a", "relation_b", "value"]],
                   df[["relation_b", "relation_a", "value"]].set_axis(["relation_a", "relation_b", "value"], axis=1)])
    g = a.groupby(["relation_a", "relation_b"])["value"]
    mean = g.mean().unstack().reindex(index=rels, columns=rels)
    count = g.count().unstack().reindex(index=rels, columns=rels).fillna(0).astype(int)
    return mean, count


def conflict_by_step(df: pd.DataFrame) -> pd.DataFrame:
    """``step, mean, std, count`` of the conflict score along optimisation."""
    return df.groupby("step")["value"].agg(["mean", "std", "count"]).reset_index()


# ---- spectral energy (REVIVE) ------------------------------------------------------------------------------
#: ability metrics of the spectral-energy figure and whether higher is better
ABILITY_METRICS = {"perplexity": False, "true_token_acc": True, "true_prob": True}


def retained(df: pd.DataFrame) -> pd.DataFrame:
    """Share of ability kept at each percent, per ability metric: (s(p) − s(0)) / (s(100) − s(0)) with
    s = −log perplexity or the accuracy / probability; 0 = the edit layers zeroed, 1 = the full model."""
    rows = []
    for metric, higher in ABILITY_METRICS.items():
        d = df[df["metric"] == metric].groupby("percent")["value"].mean()
        if d.empty or 0 not in d.index or 100 not in d.index:
            continue
        s = d if higher else -np.log(d.clip(lower=1e-30))
        span = s[100] - s[0]
        for p, v in s.items():
            # a full model no better than the zeroed layers gives no scale to measure a share on
            rows.append({"metric": metric, "percent": p, "retained": float((v - s[0]) / span) if span > 1e-12
                         else np.nan})
    return pd.DataFrame(rows, columns=["metric", "percent", "retained"])


# ---- near-duplicate subjects (RoSE Fig. 15) ----------------------------------------------------------------
def breach_share(df: pd.DataFrame, editor: str, probe: str = "near-duplicate", metric: str = "breach_prob",
                 dropna: bool = False) -> float:
    """Locality breach of ``editor`` on ``probe`` prompts, percent of prompts (``n_prompts`` weights), NaN if
    not measured (``dropna``: rows without a value do not count)."""
    v = df[(df["kind"] == "breach") & (df["editor"] == editor) & (df["probe"] == probe) & (df["metric"] == metric)]
    if dropna:
        v = v.dropna(subset=["value"])
    if v.empty:
        return math.nan
    w = v["n_prompts"].astype(float) if "n_prompts" in v else pd.Series(1.0, index=v.index)
    return float((v["value"] * w).sum() / w.sum() * 100) if w.sum() > 0 else math.nan


def breach_table(df: pd.DataFrame, probes: Sequence[str] = ("near-duplicate", "unrelated"),
                 metric: str = "breach_prob") -> pd.DataFrame:
    """``editor, probe, value`` (percent of prompts breached) for every editor with breach rows, in CSV order."""
    eds = list(dict.fromkeys(df.loc[(df["kind"] == "breach") & (df["metric"] == metric), "editor"]))
    return pd.DataFrame([{"editor": e, "probe": p, "value": breach_share(df, e, p, metric, dropna=True)} for p in probes
                         for e in eds], columns=["editor", "probe", "value"])


__all__ = ["ABILITY_METRICS", "AMPLIFY", "COLLAPSED", "DEV", "FEW", "FORM_ORDER", "ILL_CONDITIONED", "MEASURED",
           "METRICS", "MOSTLY_ORTHOGONAL", "NOT_PREDICTED", "NO_RULE", "ORTHOGONAL", "RHO", "SCORE_COLUMNS", "SECONDS",
           "SEPARATED", "SHARE_MARGIN", "SHRINK", "STABLE_SPREAD", "STATUS", "TIDY_COLUMNS", "TIE", "TIMES", "WIDEN",
           "DIFF_COLUMNS", "INTERVAL_COLUMNS", "breach_share", "breach_table", "compare", "conflict_by_step",
           "conflict_matrix", "first", "first_step", "flag", "form_scores", "median_iqr", "model_of", "predicted_count",
           "predicted_radii", "quartiles", "radius_rows", "retained", "safe_share", "score", "score_difference",
           "score_interval", "tidy_deviation", "tidy_radius", "versus"]
