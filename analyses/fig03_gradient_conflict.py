"""fig03_gradient_conflict: pairwise gradient-conflict scores between the relations of one subject during
joint (MEMIT-Merge) value optimisation (RoSE Fig. 3, 9)."""

from __future__ import annotations

import pandas as pd

import geomprobe as gp
from geomprobe.pipeline import main
from geomprobe.plots.spectral import plot_gradient_conflict
from geomprobe.tables import (MOSTLY_ORTHOGONAL, ORTHOGONAL, conflict_by_step, conflict_matrix, first, first_step,
                              model_of)
from geomprobe.workspace import Workspace

ID = "fig03_gradient_conflict"
PAPER = "RoSE Fig. 3, 9"
WHAT = ("Gradient-conflict score (1 minus the absolute cosine of g_i and g_j) between the relation gradients of "
        "one subject at the start of joint value optimisation (relation × relation, mean over subjects), and its mean along optimisation.")
COLUMNS = ("subject", "relation_a", "relation_b", "step", "value")
EDITOR = "memit-merge"


def compute(ws: Workspace) -> pd.DataFrame:
    # recorded gradients of the shared joint optimisation (step 0 and every record_every steps)
    df = gp.probes.gradient_conflict(update=ws.update(EDITOR))
    df.insert(0, "model", ws.lm.name)
    df["layer"] = ws.edit_layer
    return df


def plot(df: pd.DataFrame):
    s0 = first_step(df)
    mean, lo, hi = s0["value"].mean(), s0["value"].min(), s0["value"].max()
    if mean >= ORTHOGONAL:
        finding = "relation gradients near-orthogonal"
    elif mean >= MOSTLY_ORTHOGONAL:
        finding = "relation gradients mostly orthogonal"
    else:
        finding = "relation gradients partly aligned"
    model = model_of(df)
    title = f"{model}: {finding} (mean conflict {mean:.2f}, range {lo:.2f}-{hi:.2f})"
    M, N = conflict_matrix(s0)
    return plot_gradient_conflict(M, N, conflict_by_step(df), editor=first(df, "editor", None), title=title)


def headline(df: pd.DataFrame) -> str:
    from geomprobe.claims import gradient_orthogonality

    s0 = first_step(df)
    M, _ = conflict_matrix(s0)
    steps = df.groupby("step")["value"].mean()
    return (f"conflict at step 0: mean {s0['value'].mean():.2f} over {len(s0)} pairs "
            f"({s0['subject'].nunique()} subjects, {len(M)} relations), last recorded step {int(steps.index[-1])}: "
            f"{steps.iloc[-1]:.2f}; at step 0 {gradient_orthogonality(df)[0]} (paper 0.85-0.90, near-orthogonal)")


if __name__ == "__main__":
    main(__file__)
