"""fig02a_tolerance_radius: ρ of isolated (MEMIT), joint same-subject (MEMIT-Merge) and RoSE edits (RoSE Fig. 2a, 8)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from geomprobe.pipeline import main
from geomprobe.plots.tolerance import fmt, plot_tolerance_radius
from geomprobe.tables import (FEW, SHRINK, WIDEN, model_of, predicted_count, predicted_radii, radius_rows, tidy_radius,
                              versus)
from geomprobe.workspace import Workspace

ID = "fig02a_tolerance_radius"
PAPER = "RoSE Fig. 2a, 8"
WHAT = ("Tolerance radius ρ of the optimised values: isolated single-fact edits (memit), joint same-subject edits "
        "(memit-merge) and RoSE; requests whose value does not predict the target are marked, not counted as ρ = 0.")
COLUMNS = ("editor", "metric", "value", "value_rel", "predicted", "status")
EDITORS = ("memit", "memit-merge", "rose")


def compute(ws: Workspace) -> pd.DataFrame:
    return pd.concat([tidy_radius(ws.tolerance(name), ws.lm.name) for name in EDITORS], ignore_index=True)


def _medians(df: pd.DataFrame) -> dict[str, float]:
    """Median ρ/‖h‖ over the predicted requests per editor (NaN where none is predicted)."""
    out = {}
    for ed in dict.fromkeys(radius_rows(df)["editor"]):
        v = predicted_radii(radius_rows(df, ed), "value_rel")
        out[ed] = float(np.median(v)) if len(v) else float("nan")
    return out


def _verdict(df: pd.DataFrame) -> str:
    med = _medians(df)
    iso, joint = med.get("memit", np.nan), med.get("memit-merge", np.nan)
    if not (np.isfinite(iso) and np.isfinite(joint)):
        return "ρ not comparable: " + ", ".join(
            f"{ed} {'/'.join(map(str, predicted_count(radius_rows(df, ed))))} predicted" for ed in med)
    n_pred = [predicted_count(radius_rows(df, ed)) for ed in med]
    if min(k for k, _ in n_pred) < FEW:  # one or two radii are no distribution: report, do not conclude
        return ("Too few targets predicted to compare ρ (" + ", ".join(f"{k}/{n}" for k, n in n_pred) + ")\n"
                + "median ρ/‖h‖ " + ", ".join(f"{ed} {fmt(m)}" for ed, m in med.items()))
    v = versus(joint, iso, WIDEN, SHRINK)
    if v < 0:
        head = f"Joint editing collapses ρ ({fmt(iso)} → {fmt(joint)} of ‖h‖)"
    elif v > 0:
        head = f"Joint editing widens ρ here ({fmt(iso)} → {fmt(joint)} of ‖h‖)"
    else:
        head = f"Joint and isolated ρ similar ({fmt(iso)} vs {fmt(joint)} of ‖h‖)"
    rose = med.get("rose", np.nan)
    if np.isfinite(rose):
        head += f"; RoSE {'restores' if versus(rose, joint, WIDEN) > 0 else 'keeps'} {fmt(rose)}"
    return head


def plot(df: pd.DataFrame):
    model = model_of(df)
    return plot_tolerance_radius(df, title=f"{model}: {_verdict(df)}")


def headline(df: pd.DataFrame) -> str:
    med = _medians(df)
    parts = []
    for ed, m in med.items():
        k, n = predicted_count(radius_rows(df, ed))
        parts.append(f"{ed} {fmt(m)} ({k}/{n} predicted)")
    from geomprobe.claims import rho_joint_vs_isolated

    paired, _ = rho_joint_vs_isolated(df)
    return ("median ρ/‖h‖ of predicted requests: " + ", ".join(parts) + f"; paired by request: {paired}"
            + " (paper: isolated MEMIT wide, joint MEMIT-Merge collapsed, RoSE's HKI widens it again)")


if __name__ == "__main__":
    main(__file__)
