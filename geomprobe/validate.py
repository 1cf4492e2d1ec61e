"""Do diagnose's criteria *predict* failure?  Predictive validation on held-out subjects (issue 11).

    import geomprobe as gp
    from geomprobe.validate import validate   # the module keeps the name: geomprobe.validate.validate
    res = validate("smollm2-135m", "same-subject", subjects=40, out="figures/validation")
    print(res["table"])         # one row per (criterion, editor or "all"): AUC, accuracies, intervals

Each editor edits the subjects in chunks of ``chunk`` subjects (the first ``relations`` requests of each subject in
one batch, each chunk from the unedited weights, as the catalogue's same-subject batch) and :func:`geomprobe.report.diagnose.measure`
measures every request-form: success after the edit, the paper's Δ and ρ, and the interventions of the causal
chain.  The outcome is the **post-edit failure of the request-form** (``success_after`` < FORM_SUCCESS, the share of
the form's prompts on which the target wins).  Each criterion is a score, higher = "predicts failure":

================================  =====================================================================  =========
criterion                         score (footing)                                                        natural
================================  =====================================================================  =========
``paper: Δ_L > ρ``                Δ_L / ρ: one layer's ΔW_L(k_form − k_decl), unedited keys, against     1
                                  isotropic ρ on the declarative edit prompt (the paper's account)
``paper: Δ_cov > ρ``              the covariance rule's Δ / ρ (claim 2's quantity)                       1
``miss > ρ along the miss``       ‖v − δ‖ / the tolerance from δ along v − δ: the edited model's         1
                                  actual change v at (L, subject) on the form's own prompts, against
                                  the tolerance measured in that very direction on those prompts
``cumulative drift > ρ along −δ̂``  ‖Σ_l ΔW_l Δk_l‖ (edited-model keys) / tolerance along −δ̂             1
``written share < WRITTEN_OK``    1 − written share of δ on the form's prompts                           0.2
``δ patched loses``               1 − share of prompts on which h_form + δ in the unedited model wins     0.5
``edited + δ patched loses``      1 − the same with δ delivered exactly in the edited model              0.5
================================  =====================================================================  =========

Statistics: ROC AUC (ties count half) over all request-forms and on the **held-out half of the subjects**
(subjects split once by ``seed``; nothing is tuned on them); accuracy at the natural threshold and at the threshold
that maximises accuracy on the fitting half, both scored on the held-out half.  Every number carries a 95%
percentile bootstrap interval resampling subjects (a subject's request-forms are not independent), n request-forms,
n subjects and n failures.  ``causes`` gives the share of failing request-forms per cause
(:mod:`geomprobe.report.cause`) and the share whose cause rests on its defining intervention.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .errors import GeomprobeError
from .intervals import N_BOOT, cluster_bootstrap, index_bootstrap

#: memit-merge and rose-no-hki share the joint value δ and differ only in the update rule (claim 2's comparison)
DEFAULT_EDITORS = ("memit-merge", "rose-no-hki", "rose", "memit")


@dataclass(frozen=True)
class Criterion:
    """A failure predictor: ``score(records) -> array`` (higher = predicts failure), its natural threshold."""

    name: str
    account: str          # "paper" or "causal"
    natural: float
    footing: str
    score: Callable[[pd.DataFrame], np.ndarray]


def _ratio(a: pd.Series, b: pd.Series) -> np.ndarray:
    """a / b with 0/0 → 0 and x/0 → inf (a zero tolerance predicts failure for any drift)."""
    a, b = a.astype(float).to_numpy(), b.astype(float).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(b > 0, a / np.where(b > 0, b, 1.0), np.where(a > 0, np.inf, 0.0))
    return np.where(np.isnan(a) | np.isnan(b), np.nan, out)


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series(np.nan, index=df.index)


CRITERIA: tuple[Criterion, ...] = (
    Criterion("paper: Δ_L > ρ", "paper", 1.0, "one layer's ΔW_L Δk (unedited keys) vs isotropic ρ (declarative)",
              lambda d: _ratio(_col(d, "delta"), _col(d, "rho"))),
    Criterion("paper: Δ_cov > ρ", "paper", 1.0, "covariance rule's ΔW_L Δk vs isotropic ρ (declarative)",
              lambda d: _ratio(_col(d, "delta_covariance"), _col(d, "rho"))),
    Criterion("miss > ρ along the miss", "causal", 1.0, "‖v − δ‖ of the edited model vs the tolerance along v − δ, "
              "both on the form's own prompts", lambda d: _ratio(_col(d, "miss_norm"), _col(d, "rho_along_drift"))),
    Criterion("cumulative drift > ρ along −δ̂", "causal", 1.0, "‖Σ_l ΔW_l Δk_l‖ (edited keys) vs tolerance along −δ̂",
              lambda d: _ratio(_col(d, "cumulative_drift"), _col(d, "rho_along_delta"))),
    Criterion("written share < 0.8", "causal", 0.2, "1 − ⟨v, δ⟩/‖δ‖² on the form's prompts",
              lambda d: 1.0 - _col(d, "written_share").astype(float).to_numpy()),
    Criterion("δ patched loses", "causal", 0.5, "1 − share of the form's prompts won by h_form + δ (unedited model)",
              lambda d: 1.0 - _col(d, "patched_success").astype(float).to_numpy()),
    Criterion("edited + δ patched loses", "causal", 0.5, "1 − the same with δ delivered exactly in the edited model",
              lambda d: 1.0 - _col(d, "edited_patched_success").astype(float).to_numpy()),
)


# ---- statistics -----------------------------------------------------------------------------------------
def auc(score: np.ndarray, failed: np.ndarray) -> float:
    """ROC AUC of ``score`` for ``failed`` (Mann–Whitney, ties half; ±inf allowed); NaN without both classes."""
    score, failed = np.asarray(score, float), np.asarray(failed, bool)
    pos, neg = failed.sum(), (~failed).sum()
    if pos == 0 or neg == 0:
        return math.nan
    from scipy.stats import rankdata

    finite = np.nan_to_num(score, posinf=np.finfo(float).max, neginf=-np.finfo(float).max)
    ranks = rankdata(finite)
    return float((ranks[failed].sum() - pos * (pos + 1) / 2) / (pos * neg))


def accuracy(score: np.ndarray, failed: np.ndarray, threshold: float) -> float:
    """Share of request-forms where ``score > threshold`` equals ``failed``."""
    return float(np.mean((np.asarray(score, float) > threshold) == np.asarray(failed, bool))) if len(score) else math.nan


def best_threshold(score: np.ndarray, failed: np.ndarray) -> float:
    """The threshold (midpoint between distinct scores, or beyond them) that maximises accuracy; the lowest wins
    ties."""
    s = np.unique(np.nan_to_num(np.asarray(score, float), posinf=1e300, neginf=-1e300))
    cands = np.concatenate([[s[0] - 1.0], (s[:-1] + s[1:]) / 2, [s[-1]]]) if len(s) else np.array([0.0])
    accs = [accuracy(score, failed, t) for t in cands]
    return float(cands[int(np.argmax(accs))])


def _boot(stat: Callable[[np.ndarray], float], clusters: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile interval of ``stat(indices)`` resampling clusters (subjects); NaN with fewer than two."""
    iv = index_bootstrap(stat, clusters, n_boot, seed)
    return iv.low, iv.high


def split_subjects(subjects: Sequence[str], seed: int = 0) -> tuple[set[str], set[str]]:
    """``(fit, held_out)``: the distinct subjects split in half by a seeded permutation."""
    uniq = sorted(set(subjects))
    perm = np.random.default_rng(seed).permutation(len(uniq))
    half = len(uniq) // 2
    return {uniq[i] for i in perm[:half]}, {uniq[i] for i in perm[half:]}


def evaluable(records: pd.DataFrame) -> pd.DataFrame:
    """The request-forms with a measured success, with ``failed`` (success_after < FORM_SUCCESS)."""
    from .report.cause import FORM_SUCCESS

    d = records[records["success_after"].notna()].copy()
    d["failed"] = d["success_after"].astype(float) < FORM_SUCCESS
    return d


def criterion_table(records: pd.DataFrame, seed: int = 0, n_boot: int = N_BOOT,
                    by_editor: bool = True) -> pd.DataFrame:
    """One row per (criterion, editor — and ``all``): AUC over every request-form and on held-out subjects,
    accuracies on held-out subjects, intervals (bootstrap over subjects), n, n_subjects, n_failed."""
    d = evaluable(records)
    fit_s, held_s = split_subjects(d["subject"], seed)
    groups = [("all", d)] + ([(e, g) for e, g in d.groupby("editor", sort=False)] if by_editor else [])
    rows = []
    for crit in CRITERIA:
        for editor, g in groups:
            score = np.asarray(crit.score(g), float)
            ok = ~np.isnan(score)
            g, score = g[ok], score[ok]
            failed = g["failed"].to_numpy(bool)
            subj = g["subject"].to_numpy()
            fit, held = np.isin(subj, list(fit_s)), np.isin(subj, list(held_s))
            fitted = best_threshold(score[fit], failed[fit]) if fit.any() else math.nan
            hs, hf, hsub = score[held], failed[held], subj[held]
            row = {"criterion": crit.name, "account": crit.account, "editor": editor, "footing": crit.footing,
                   "n": int(len(g)), "n_subjects": int(len(set(subj))), "n_failed": int(failed.sum()),
                   "auc": auc(score, failed), "n_held_out": int(held.sum()),
                   "n_subjects_held_out": int(len(set(hsub))), "n_failed_held_out": int(hf.sum()),
                   "auc_held_out": auc(hs, hf), "natural_threshold": crit.natural,
                   "accuracy_natural_held_out": accuracy(hs, hf, crit.natural) if len(hs) else math.nan,
                   "fitted_threshold": fitted,
                   "accuracy_fitted_held_out": accuracy(hs, hf, fitted) if len(hs) else math.nan,
                   "majority_held_out": float(max(hf.mean(), 1 - hf.mean())) if len(hf) else math.nan}
            for key, stat, sc, fl, cl in (
                    ("auc", lambda i, s=score, f=failed: auc(s[i], f[i]), score, failed, subj),
                    ("auc_held_out", lambda i, s=hs, f=hf: auc(s[i], f[i]), hs, hf, hsub),
                    ("accuracy_natural_held_out", lambda i, s=hs, f=hf: accuracy(s[i], f[i], crit.natural),
                     hs, hf, hsub),
                    ("accuracy_fitted_held_out", lambda i, s=hs, f=hf, t=fitted: accuracy(s[i], f[i], t),
                     hs, hf, hsub)):
                row[f"{key}_low"], row[f"{key}_high"] = _boot(stat, cl, n_boot, seed) if len(sc) else (math.nan,) * 2
            rows.append(row)
    return pd.DataFrame(rows)


def cause_table(records: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Share of failing request-forms per (editor, form, cause), and per (editor, form) the share whose cause is
    confirmed by its intervention (``cause`` = ``"confirmed"`` rows); intervals by subject."""
    from .report.cause import CAUSES

    d = evaluable(records)
    d = d[d["failed"]]
    rows = []
    for (editor, form), g in d.groupby(["editor", "form"], sort=False):
        subj = g["subject"].to_numpy()
        for c in CAUSES + ("confirmed",):
            hit = (g["cause_confirmed"].fillna(False).astype(bool) if c == "confirmed" else g["cause"] == c)
            hit = hit.to_numpy(float)
            iv = cluster_bootstrap(hit, subj, n_boot=n_boot, seed=seed)
            low, high = iv.low, iv.high
            rows.append({"editor": editor, "form": form, "cause": c, "share": float(hit.mean()), "low": low,
                         "high": high, "count": int(hit.sum()), "n_failed": int(len(g)),
                         "n_subjects": int(len(set(subj)))})
    return pd.DataFrame(rows)


def claim2_table(records: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0,
                 editors: tuple[str, str] = ("memit-merge", "rose-no-hki")) -> pd.DataFrame:
    """The paper's claim 2 (the covariance update drifts more than the identity update, beyond the tolerance) on
    question / instruction request-forms, on both footings, one row per (footing, rule):

    * ``paper``: the counterfactual Δ of the covariance and the identity rule on the *same* K, R (memit-merge's
      records, ``delta_covariance`` / ``delta_identity``) against the isotropic ρ of the declarative prompt;
    * ``like-for-like``: each edited model's actual miss ‖v − δ‖ at (L, subject) against the tolerance measured
      along that miss on the same prompt — memit-merge (covariance rule) and rose-no-hki (identity rule: the
      same joint value δ, only the update differs).

    Columns: ``footing, rule, editor, drift_median, tolerance_median, beyond`` (share with drift > tolerance),
    ``beyond_low/high``, ``failed`` (share of those request-forms that fail after the edit), ``n, n_subjects``.
    """
    d = evaluable(records)
    d = d[d["form"].isin(("question", "instruction"))]
    cov_ed, iso_ed = editors
    specs = [("paper", "covariance", cov_ed, "delta_covariance", "rho"),
             ("paper", "identity", cov_ed, "delta_identity", "rho"),
             ("like-for-like", "covariance", cov_ed, "miss_norm", "rho_along_drift"),
             ("like-for-like", "identity", iso_ed, "miss_norm", "rho_along_drift")]
    rows = []
    for footing, rule, editor, drift, tol in specs:
        g = d[d["editor"] == editor]
        if drift not in g or tol not in g:
            continue
        g = g[g[drift].notna() & g[tol].notna()]
        dv, tv = g[drift].astype(float).to_numpy(), g[tol].astype(float).to_numpy()
        beyond = (dv > tv).astype(float)
        subj = g["subject"].to_numpy()
        iv = cluster_bootstrap(beyond, subj, n_boot=n_boot, seed=seed) if len(g) else None
        low, high = (iv.low, iv.high) if iv is not None else (math.nan, math.nan)
        rows.append({"footing": footing, "rule": rule, "editor": editor, "drift": drift, "tolerance": tol,
                     "drift_median": float(np.median(dv)) if len(g) else math.nan,
                     "tolerance_median": float(np.median(tv)) if len(g) else math.nan,
                     "beyond": float(beyond.mean()) if len(g) else math.nan, "beyond_low": low, "beyond_high": high,
                     "failed": float(g["failed"].mean()) if len(g) else math.nan, "n": int(len(g)),
                     "n_subjects": int(len(set(subj)))})
    return pd.DataFrame(rows)


# ---- collection -----------------------------------------------------------------------------------------
def collect(ws, requests: Sequence, editors: Sequence[str] = DEFAULT_EDITORS, chunk: int = 8,
            per_form: int | None = 2, log: Callable[[str], None] = print,
            save: Callable[[pd.DataFrame, pd.DataFrame], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(records, curve)``: diagnose's measurement of every request-form (one row each, with the verdict's cause
    and ``cause_confirmed``) and the δ-scaling curve rows, for each editor, edited in chunks of ``chunk`` subjects
    (chunks outer, editors inner: a run stopped early keeps the editors balanced; ``save`` receives the tables
    after every chunk).  The outcome ``success_after`` is measured on every prompt of the form; the patches and
    directional searches on the first ``per_form`` prompts of each form (None: all).  The isotropic ρ per form is
    not measured (``rho_forms="none"``): no criterion reads it, and measuring it on failures only would leak the
    outcome."""
    from .report.diagnose import measure

    subjects = list(dict.fromkeys(r.subject for r in requests))
    chunks = [subjects[i:i + chunk] for i in range(0, len(subjects), chunk)]
    recs, curves = [], []
    for k, subs in enumerate(chunks):
        reqs = [r for r in requests if r.subject in set(subs)]
        for editor in editors:
            t0 = time.perf_counter()
            log(f"validate: chunk {k + 1}/{len(chunks)} ({len(subs)} subjects, {len(reqs)} requests), {editor}")
            res = measure(ws, reqs, editor, rho_forms="none", per_form=per_form)
            for m, v in zip(res["measurements"], res["verdicts"]):
                rec = m.to_dict()
                rec.update({"cause": v.cause, "cause_confirmed": v.cause_confirmed, "chunk": k,
                            "paper_rules": ";".join(v.rules), "edit_layers": " ".join(map(str, m.edit_layers or ()))})
                recs.append(rec)
            curves.append(res["curve"].assign(editor=editor, chunk=k))
            log(f"validate: chunk {k + 1}, {editor} done in {time.perf_counter() - t0:.0f} s")
        if save is not None:
            save(pd.DataFrame(recs), pd.concat(curves, ignore_index=True))
    return pd.DataFrame(recs), pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()


def chain(ws, name: str, requests: Sequence | None = None, per_form: int | None = 1
          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(records, curve)`` of :func:`collect` for editor ``name`` on ``requests`` (default the workspace's shared
    batch), memoised in the workspace: one causal chain per editor per run, shared by why_forms_fail, fig02b and
    fig07."""
    from .report.common import case_key

    requests = list(ws.batch if requests is None else requests)
    key = ("chain", name, case_key(requests), per_form)
    return ws.memo(key, lambda: collect(ws, requests, (name,), chunk=len(requests), per_form=per_form, log=ws.log))


def select_requests(requests: Sequence, subjects: int, relations: int | None = 2, min_relations: int = 2) -> list:
    """The first ``relations`` requests (file order) of each of the first ``subjects`` subjects that have
    ``min_relations`` or more (same-subject edits: every chosen subject is edited on several relations at once)."""
    count: dict[str, int] = {}
    for r in requests:
        count[r.subject] = count.get(r.subject, 0) + 1
    subs = [s for s in count if count[s] >= min_relations][:subjects]
    if len(subs) < 2:
        raise GeomprobeError(f"validation needs at least 2 subjects with {min_relations}+ requests; the request set "
                             f"has {len(subs)}")
    keep, taken, out = set(subs), {}, []
    for r in requests:
        if r.subject in keep and (relations is None or taken.get(r.subject, 0) < relations):
            taken[r.subject] = taken.get(r.subject, 0) + 1
            out.append(r)
    return out


def validate(model: Any = "smollm2-135m", requests: Any = "same-subject", editors: Sequence[str] = DEFAULT_EDITORS,
             subjects: int = 40, relations: int | None = 2, chunk: int = 8, per_form: int | None = 1,
             out: str | Path | None = None, seed: int = 0,
             n_boot: int = N_BOOT, device: str | None = None, dtype: str | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every request-form of ``subjects`` subjects under each editor and score the criteria (module
    docstring).  With ``out``: ``validation_records.csv``, ``validation_curve.csv``, ``validation_auc.csv`` /
    ``.md``, ``validation_causes.csv`` and the figure ``why_forms_fail.png`` / ``.pdf``.

    Returns:
        ``{records, curve, table, causes, seconds, files}`` (DataFrames).
    """
    from .report.common import check_editors, load_inputs, make_workspace, snapshot, check_unchanged

    t0 = time.perf_counter()
    editors = check_editors(list(editors))
    lm, reqs = load_inputs(model, requests, device, dtype, log, editors=editors)
    reqs = select_requests(reqs, subjects, relations)
    saved = snapshot(lm)
    ws = make_workspace(lm, reqs, lm.name, out, 10, log)
    def save(records: pd.DataFrame, curve: pd.DataFrame) -> None:  # partial results survive a stop
        Path(out).mkdir(parents=True, exist_ok=True)
        records.to_csv(Path(out) / "validation_records.csv", index=False)
        curve.to_csv(Path(out) / "validation_curve.csv", index=False)

    records, curve = collect(ws, reqs, editors, chunk, per_form, log, save if out is not None else None)
    check_unchanged(lm, saved)
    table = criterion_table(records, seed, n_boot)
    causes = cause_table(records, n_boot, seed)
    res = {"records": records, "curve": curve, "table": table, "causes": causes,
           "claim2": claim2_table(records, n_boot, seed),
           "seconds": time.perf_counter() - t0, "files": [], "model": lm.name}
    if out is not None:
        res["files"] = write(res, Path(out))
    return res


def from_files(out: str | Path, seed: int = 0, n_boot: int = N_BOOT, model: str = "") -> dict[str, Any]:
    """Score the records a (possibly stopped) run left in ``out`` and rewrite the tables and the figure."""
    out = Path(out)
    records = pd.read_csv(out / "validation_records.csv")
    curve = pd.read_csv(out / "validation_curve.csv")
    res = {"records": records, "curve": curve, "table": criterion_table(records, seed, n_boot),
           "causes": cause_table(records, n_boot, seed), "claim2": claim2_table(records, n_boot, seed),
           "files": [], "model": model}
    if out is not None:
        res["files"] = write(res, Path(out))
    return res


def _thr(t: float) -> str:
    """A fitted threshold; one beyond every score means the criterion never fires (always "succeeds")."""
    return "never fires" if not np.isfinite(t) or abs(t) > 1e100 else f"{t:.3g}"


def markdown(table: pd.DataFrame, editor: str = "all") -> str:
    """The criterion table as Markdown (one editor's rows), estimates with their intervals."""
    def iv(row, key, pct=False):
        v, lo, hi = row[key], row.get(f"{key}_low"), row.get(f"{key}_high")
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "n/a"
        f = (lambda x: f"{100 * x:.0f}%") if pct else (lambda x: f"{x:.2f}")
        return f"{f(v)} [{f(lo)}, {f(hi)}]" if lo == lo and hi == hi else f(v)

    t = table[table["editor"] == editor]
    lines = ["| criterion | account | AUC (all) | AUC held-out | acc. held-out, natural thr. | "
             "acc. held-out, fitted thr. (thr.) | majority | n (held-out) | subjects | failures |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in t.iterrows():
        lines.append(f"| {r['criterion']} | {r['account']} | {iv(r, 'auc')} | {iv(r, 'auc_held_out')} | "
                     f"{iv(r, 'accuracy_natural_held_out', True)} | {iv(r, 'accuracy_fitted_held_out', True)} "
                     f"({_thr(r['fitted_threshold'])}) | {100 * r['majority_held_out']:.0f}% | {r['n']} "
                     f"({r['n_held_out']}) | {r['n_subjects']} | {r['n_failed']} |")
    return "\n".join(lines) + "\n"


def claim2_markdown(c: pd.DataFrame) -> str:
    lines = ["| footing | rule (editor) | drift (median) | tolerance (median) | drift > tolerance | failed | n "
             "| subjects |", "|---|---|---|---|---|---|---|---|"]
    for _, r in c.iterrows():
        iv = (f"{100 * r['beyond']:.0f}% [{100 * r['beyond_low']:.0f}, {100 * r['beyond_high']:.0f}]"
              if r["beyond_low"] == r["beyond_low"] else f"{100 * r['beyond']:.0f}%")
        lines.append(f"| {r['footing']} | {r['rule']} ({r['editor']}) | {r['drift']} {r['drift_median']:.1f} | "
                     f"{r['tolerance']} {r['tolerance_median']:.1f} | {iv} | {100 * r['failed']:.0f}% | {r['n']} | "
                     f"{r['n_subjects']} |")
    return "\n".join(lines) + "\n"


def write(res: dict[str, Any], out: Path) -> list[str]:
    """Write the CSVs, the Markdown table and the figure; returns the file names."""
    from .plots.validation import plot_validation

    out.mkdir(parents=True, exist_ok=True)
    files = {"validation_records.csv": res["records"], "validation_curve.csv": res["curve"],
             "validation_auc.csv": res["table"], "validation_causes.csv": res["causes"],
             "validation_claim2.csv": res["claim2"]}
    for name, df in files.items():
        df.to_csv(out / name, index=False)
    md = [f"# Predictive validation on {res.get('model', '')}\n",
          "Request-forms edited in chunks of subjects; failure = target wins on < 50% of the form's prompts. "
          "Intervals: 95% bootstrap over subjects. Held-out: the half of the subjects no threshold saw.\n"]
    editors = [e for e in dict.fromkeys(res["table"]["editor"]) if e != "all"]
    for e in ["all"] + editors:
        md += [f"\n## {e}\n", markdown(res["table"], e)]
    md += ["\n## Claim 2 on both footings (question / instruction request-forms)\n", claim2_markdown(res["claim2"])]
    (out / "validation_auc.md").write_text("\n".join(md))
    fig = plot_validation(res["records"], res["curve"], res["table"], res["causes"], res["claim2"])
    for ext in ("png", "pdf"):
        fig.savefig(out / f"why_forms_fail.{ext}", dpi=150 if ext == "png" else None, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return list(files) + ["validation_auc.md", "why_forms_fail.png", "why_forms_fail.pdf"]


__all__ = ["chain", "CRITERIA", "Criterion", "DEFAULT_EDITORS", "accuracy", "auc", "best_threshold", "cause_table", "claim2_markdown", "claim2_table",
           "collect", "criterion_table", "evaluable", "from_files", "markdown", "select_requests", "split_subjects", "validate",
           "write"]
