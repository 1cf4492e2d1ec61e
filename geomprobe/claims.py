"""The RoSE paper's five geometric claims, measured per model from a figures folder's CSVs, side by side.

Each claim reads the tidy data of the figure that tests it (no model is loaded) and returns the measured number
with its 95% subject-bootstrap interval and n, and a verdict: ``holds``, ``does not hold``, ``not decided``
(the interval straddles the threshold) or ``not measured`` (the figure is missing from that folder).  The
thresholds are written in :data:`CLAIMS` so a reader can disagree with them.

1. **ρ joint < ρ isolated** (fig02a): per request, ρ/‖h‖ of MEMIT-Merge (joint value) minus that of MEMIT
   (isolated value), same requests and prompts; holds when the paired interval lies below 0.
2. **covariance drift > identity drift, beyond the tolerance** (why_forms_fail, like-for-like footing of
   issue 11): the share of question/instruction request-forms whose edited-model miss ‖v − δ‖ exceeds the
   tolerance along that miss, MEMIT-Merge (covariance rule) vs RoSE-no-HKI (identity rule, same δ); holds when
   the covariance share is higher and its interval excludes the identity share's estimate.
3. **near-orthogonal relation gradients** (fig03): mean absolute cosine between the value gradients of two relations of
   one subject at step 0; holds when the interval's upper end is below 0.2 (paper: conflict 0.85–0.90, i.e.
   |cos| ≈ 0.10–0.15).
4. **same-subject keys ≫ different-subject keys** (fig13, last edit layer): mean cosine of one subject's keys
   across forms minus the mean cosine of different subjects' keys; holds when the interval lies above 0 and
   the same-subject mean is at least twice the different-subject one.
5. **RoSE > MEMIT-Merge on instruction efficacy** (table_main_results, the table's headline protocol): the
   paired difference; holds when its interval lies above 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .intervals import Interval, cluster_bootstrap, fmt_interval, paired_difference

__all__ = ["CLAIMS", "Claim", "claims_markdown", "measure"]


@dataclass(frozen=True)
class Claim:
    """One claim: what the paper says (with its number) and how a folder's CSVs decide it."""

    name: str
    paper: str
    figure: str
    measure: Callable[[pd.DataFrame], tuple[str, str]]  # CSV -> (measured text, verdict)


def _read(folder: Path, figure: str) -> pd.DataFrame | None:
    path = Path(folder) / f"{figure}.csv"
    return pd.read_csv(path) if path.is_file() else None


def _below(iv: Interval, x: float) -> str:
    if not iv.defined:
        return "not decided (no interval)"
    return "holds" if iv.high < x else "does not hold" if iv.low >= x else "not decided"


def _above(iv: Interval, x: float) -> str:
    if not iv.defined:
        return "not decided (no interval)"
    return "holds" if iv.low > x else "does not hold" if iv.high <= x else "not decided"


def rho_joint_vs_isolated(df: pd.DataFrame) -> tuple[str, str]:
    """Claim 1 from fig02a's rows (one per request and editor): MEMIT-Merge − MEMIT in ρ/‖h‖, paired by request."""
    d = df[df["metric"] == "tolerance_radius"] if "metric" in df else df
    piv = d.pivot_table(index=["case_id", "subject"], columns="editor", values="value_rel", aggfunc="mean")
    if not {"memit", "memit-merge"} <= set(piv.columns):
        return "no MEMIT / MEMIT-Merge radii", "not measured"
    piv = piv.dropna(subset=["memit", "memit-merge"]).reset_index()
    diff = paired_difference(piv["memit-merge"], piv["memit"], piv["subject"])
    text = (f"ρ/‖h‖ joint {np.median(piv['memit-merge']):.2f} vs isolated {np.median(piv['memit']):.2f} "
            f"(medians); joint − isolated {fmt_interval(diff, pct=False, digits=2, signed=True)}")
    return text, _below(diff, 0.0)


def covariance_drift(df: pd.DataFrame) -> tuple[str, str]:
    """Claim 2 from why_forms_fail's records: like-for-like share beyond the tolerance, covariance vs identity."""
    from .validate import claim2_table

    rec = df[df["table"] == "record"].reset_index(drop=True) if "table" in df else df
    both = claim2_table(rec)
    t = both[both["footing"] == "like-for-like"].set_index("rule")
    if not {"covariance", "identity"} <= set(t.index):
        return "no like-for-like records for both rules", "not measured"
    c, i = t.loc["covariance"], t.loc["identity"]
    paper = both[both["footing"] == "paper"].set_index("rule")
    text = (f"miss beyond the tolerance along it: covariance {100 * c['beyond']:.0f}% [{100 * c['beyond_low']:.0f}, "
            f"{100 * c['beyond_high']:.0f}] vs identity {100 * i['beyond']:.0f}% [{100 * i['beyond_low']:.0f}, "
            f"{100 * i['beyond_high']:.0f}] (n={int(c['n'])}, {int(c['n_subjects'])} subjects; median miss "
            f"{c['drift_median']:.3g} vs {i['drift_median']:.3g})")
    if {"covariance", "identity"} <= set(paper.index):
        text += (f"; paper's footing: Δ_cov {paper.loc['covariance', 'drift_median']:.3g} vs Δ_I "
                 f"{paper.loc['identity', 'drift_median']:.3g} vs ρ {paper.loc['covariance', 'tolerance_median']:.3g}")
    if not (np.isfinite(c["beyond_low"]) and np.isfinite(c["beyond_high"])):
        return text, "not decided (no interval)"
    if c["beyond_low"] > i["beyond"] and c["drift_median"] > i["drift_median"]:
        return text, "holds"
    if c["beyond_high"] < i["beyond"] or c["beyond"] <= i["beyond"]:
        return text, "does not hold"
    return text, "not decided"


def gradient_orthogonality(df: pd.DataFrame) -> tuple[str, str]:
    """Claim 3 from fig03's rows at step 0: mean |cos| between two relations' value gradients of one subject."""
    s0 = df[(df["step"] == df["step"].min()) & (df["metric"] == "gradient_conflict")]
    if not len(s0):
        return "no step-0 gradients", "not measured"
    iv = cluster_bootstrap(s0["cosine"].abs().to_numpy(float), s0["subject"].to_numpy())
    text = f"mean absolute cosine {fmt_interval(iv, pct=False, digits=2)} (relation pairs of one subject)"
    return text, _below(iv, 0.2)


def key_separation(df: pd.DataFrame) -> tuple[str, str]:
    """Claim 4 from fig13 at the edit layer: same-subject cross-form cosine minus different-subject cosine."""
    d = df[(df["layer"] == df["edit_layer"]) & (df["metric"] == "key_cosine")]
    if "centred" in d:
        d = d[~d["centred"].astype(bool)]
    same = d[d["pair"] == "same-subject"].groupby("subject_a")["value"].mean()
    other = d[d["pair"] == "different-subject"].groupby("subject_a")["value"].mean()
    both = pd.concat([same.rename("same"), other.rename("diff")], axis=1).dropna()
    if not len(both):
        return "no key pairs", "not measured"
    diff = paired_difference(both["same"], both["diff"], both.index.to_numpy())
    s, o = float(both["same"].mean()), float(both["diff"].mean())
    text = (f"layer {int(d['layer'].iloc[0])}: same subject across forms {s:.2f} vs different subjects {o:.2f}; "
            f"difference {fmt_interval(diff, pct=False, digits=2, signed=True, n=False)} "
            f"(n={len(both)} subjects)")
    verdict = _above(diff, 0.0)
    if verdict == "holds" and not s >= 2 * o:
        verdict = "does not hold (separated, but not ≫: same < 2× different)"
    return text, verdict


def rose_vs_merge(df: pd.DataFrame) -> tuple[str, str]:
    """Claim 5 from table_main_results: RoSE − MEMIT-Merge instruction efficacy under the table's headline."""
    from .tables import score_difference, score_interval

    proto = "gen" if "gen" in set(df["protocol"]) else "prob"
    r, m = score_interval(df, "rose", protocol=proto), score_interval(df, "memit-merge", protocol=proto)
    if not (np.isfinite(r.estimate) and np.isfinite(m.estimate)):
        return "RoSE or MEMIT-Merge not in the table", "not measured"
    d = score_difference(df, "rose", protocol=proto)
    text = f"instruction efficacy ({proto}): RoSE {fmt_interval(r, n=False)} vs MEMIT-Merge {fmt_interval(m, n=False)}"
    if d is None:
        return text + f" (n={r.n} requests; this CSV has no paired interval)", "not decided (no interval)"
    return text + f"; RoSE − MEMIT-Merge {fmt_interval(d, signed=True)}", _above(d, 0.0)


CLAIMS: tuple[Claim, ...] = (
    Claim("1. joint optimisation collapses the tolerance radius (ρ joint < ρ isolated)",
          "Fig. 2a: MEMIT-Merge's ρ well below isolated MEMIT's", "fig02a_tolerance_radius", rho_joint_vs_isolated),
    Claim("2. the covariance update drifts more than the identity one, beyond the tolerance (like-for-like)",
          "Fig. 2b: Δ_cov > ρ > Δ_I on question / instruction prompts", "why_forms_fail", covariance_drift),
    Claim("3. same-subject relation gradients are near-orthogonal",
          "Fig. 3: gradient conflict 0.85–0.90 (absolute cosine ≈ 0.1)", "fig03_gradient_conflict", gradient_orthogonality),
    Claim("4. same-subject keys ≫ different-subject keys across forms",
          "Fig. 4, 13: 0.88–0.92 vs ~0.04", "fig13_key_orthogonality_layers", key_separation),
    Claim("5. RoSE > MEMIT-Merge on instruction efficacy",
          "Table 1 (Qwen2.5-7B): 86.7 vs 75.5", "table_main_results", rose_vs_merge),
)


def measure(folder: str | Path) -> list[tuple[str, str]]:
    """(measured text, verdict) per claim of :data:`CLAIMS` from ``folder``'s CSVs."""
    out = []
    for claim in CLAIMS:
        df = _read(Path(folder), claim.figure)
        if df is None:
            out.append(("—", "not measured"))
            continue
        try:
            out.append(claim.measure(df))
        except (KeyError, ValueError) as e:  # a CSV from an older catalogue without the columns a claim needs
            out.append((f"not readable from this CSV ({type(e).__name__}: {e})", "not measured"))
    return out


def claims_markdown(folders: dict[str, Path]) -> list[str]:
    """Markdown lines: one row per claim, the paper's number, then each model's measurement and verdict."""
    measured = {label: measure(path) for label, path in folders.items()}
    head = "| claim | paper | " + " | ".join(folders) + " |"
    lines = [head, "|" + "---|" * (2 + len(folders))]
    for k, claim in enumerate(CLAIMS):
        cells = [f"**{measured[label][k][1]}**: {measured[label][k][0]} ([{claim.figure}]"
                 f"({_rel(folders, label, claim.figure)}.png))" if measured[label][k][1] != "not measured"
                 else "not measured" for label in folders]
        lines.append(f"| {claim.name} | {claim.paper} | " + " | ".join(cells) + " |")
    return lines


def _rel(folders: dict[str, Path], label: str, figure: str) -> str:
    """Link from the first folder's index to ``figure`` in ``label``'s folder."""
    first = Path(next(iter(folders.values())))
    target = Path(folders[label])
    try:
        rel = target.resolve().relative_to(first.resolve())
    except ValueError:
        rel = target
    return f"{rel.as_posix()}/{figure}" if str(rel) not in ("", ".") else figure
