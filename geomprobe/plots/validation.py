"""``why_forms_fail``: what the interventions show on failing request-forms, and which criterion predicts failure.

Input: the tables of :mod:`geomprobe.validate` (records, δ-scaling curve, criterion table, cause table).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .style import FORM_COLORS, OKABE_ITO, setup

CAUSE_COLORS = {"write-side": OKABE_ITO[0], "read-side": OKABE_ITO[1], "magnitude": OKABE_ITO[4],
                "interference": OKABE_ITO[3], "declarative-failed": "#999999", "value-not-reached": OKABE_ITO[5],
                "near-duplicate": OKABE_ITO[6], "unexplained": "#000000"}


def _causes_panel(ax, causes: pd.DataFrame) -> None:
    c = causes[causes["cause"] != "confirmed"]
    groups = list(dict.fromkeys(zip(c["editor"], c["form"])))
    x = np.arange(len(groups))
    bottom = np.zeros(len(groups))
    for cause, color in CAUSE_COLORS.items():
        share = np.array([float(c[(c["editor"] == e) & (c["form"] == f) & (c["cause"] == cause)]["share"].sum())
                          for e, f in groups])
        if share.any():
            ax.bar(x, share, bottom=bottom, color=color, label=cause, width=0.75, edgecolor="white", linewidth=0.4)
        bottom += share
    conf = causes[causes["cause"] == "confirmed"].set_index(["editor", "form"])
    for i, (e, f) in enumerate(groups):
        n = int(c[(c["editor"] == e) & (c["form"] == f)]["n_failed"].iloc[0])
        k = conf.loc[(e, f)] if (e, f) in conf.index else None
        ax.text(i, 1.01, f"n={n}" + (f"\n{k['share']:.0%} conf." if k is not None else ""), ha="center",
                va="bottom", fontsize=5.5)
    ax.set_xticks(x, [f"{e}\n{f[:5]}." for e, f in groups], rotation=35, ha="right", fontsize=5.5)
    ax.set_ylim(0, 1.18)
    ax.set_ylabel("share of failing request-forms")
    ax.set_title("(a) Cause of each failing request-form, from interventions\n"
                 "(n = failing request-forms; conf. = cause backed by its intervention)")
    ax.legend(fontsize=5.5, ncol=4, loc="upper left", bbox_to_anchor=(0, -0.2), frameon=False)


def _curve_panel(ax, curve: pd.DataFrame) -> None:
    if curve is None or not len(curve):
        ax.set_axis_off()
        return
    for form, g in curve.groupby("form", sort=False):
        per = g.groupby(["case_id", "editor", "scale"])["success"].mean().reset_index()
        m = per.groupby("scale")["success"].agg(["mean", "count"])
        ax.plot(m.index, m["mean"], marker="o", ms=3, color=FORM_COLORS.get(form, "#777777"),
                label=f"{form} (n={int(m['count'].max())} request-forms)")
    ax.axvline(1.0, color="#777777", lw=0.6, ls=":")
    ax.set_xlabel("s (h_form + s·δ patched at (L, subject's last token), unedited model)")
    ax.set_ylabel("share of prompts where the target wins")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("(b) Does the optimised value transfer? δ-scaling on each form\n"
                 "(all editors pooled; s = 1 is the exact value)")
    ax.legend(fontsize=6, loc="lower right")


def _auc_panel(ax, table: pd.DataFrame) -> None:
    t = table[table["editor"] == "all"].reset_index(drop=True)
    y = np.arange(len(t))[::-1]
    for yi, (_, r) in zip(y, t.iterrows()):
        color = OKABE_ITO[1] if r["account"] == "paper" else OKABE_ITO[0]
        lo, hi = r["auc_held_out_low"], r["auc_held_out_high"]
        if np.isfinite(r["auc_held_out"]):
            ax.errorbar(r["auc_held_out"], yi + 0.12, xerr=[[r["auc_held_out"] - lo], [hi - r["auc_held_out"]]]
                        if np.isfinite(lo) else None, fmt="o", color=color, ms=4, capsize=2)
        if np.isfinite(r["auc"]):
            alo, ahi = r["auc_low"], r["auc_high"]
            ax.errorbar(r["auc"], yi - 0.12, xerr=[[r["auc"] - alo], [ahi - r["auc"]]] if np.isfinite(alo) else None,
                        fmt="o", mfc="white", color=color, ms=4, capsize=2)
        ax.text(1.0, yi, f" {r['auc_held_out']:.2f} / {r['auc']:.2f}", va="center", fontsize=6)
    ax.set_yticks(y, [f"{r['criterion']} ({r['account']})" for _, r in t.iterrows()], fontsize=6)
    ax.axvline(0.5, color="#777777", lw=0.6, ls=":")
    ax.axvline(0.85, color="#777777", lw=0.6, ls="--")
    ax.set_xlim(0.3, 1.0)
    ax.set_xlabel("ROC AUC for post-edit failure (95% CI by subject): filled = held-out half of the subjects, "
                  "hollow = all subjects")
    n = int(t["n_held_out"].max()) if len(t) else 0
    ns = int(t["n_subjects_held_out"].max()) if len(t) else 0
    ax.set_title(f"(c) Which criterion predicts failure? (held-out: n={n} request-forms, {ns} subjects; "
                 f"right: held-out / all;\n"
                 "orange = the paper's Δ vs ρ, blue = interventions; dashed = 0.85 target)")


def _claim2_panel(ax, claim2: pd.DataFrame | None) -> None:
    if claim2 is None or not len(claim2):
        ax.set_axis_off()
        return
    labels, x = [], 0
    for footing, g in claim2.groupby("footing", sort=False):
        for _, r in g.iterrows():
            color = OKABE_ITO[1] if r["rule"] == "covariance" else OKABE_ITO[2]
            err = ([[r["beyond"] - r["beyond_low"]], [r["beyond_high"] - r["beyond"]]]
                   if np.isfinite(r["beyond_low"]) else None)
            ax.bar(x, r["beyond"], color=color, width=0.7, yerr=err, capsize=2, ecolor="#444444")
            ax.plot([x + 0.22], [r["failed"]], marker="D", ms=4, color="black", ls="none")
            top = r["beyond"] if err is None else r["beyond_high"]
            ax.text(x, (top if np.isfinite(top) else 0) + 0.03,
                    f"{r['drift_median']:.1f} vs\n{r['tolerance_median']:.1f}", ha="center", fontsize=5.5)
            labels.append(f"{footing}\n{r['rule']}\n({r['editor']})")
            x += 1
        x += 0.5
    ticks = [i + 0.5 * (i >= 2) for i in range(len(labels))]
    ax.set_xticks(ticks, labels, fontsize=5.5)
    ax.set_ylim(0, 1.25)
    ax.set_ylabel("share of question/instruction request-forms\nwith drift > tolerance (bar, 95% CI)")
    n = int(claim2["n"].max())
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=OKABE_ITO[1], label="covariance rule"), Patch(color=OKABE_ITO[2],
                                                                                label="identity rule"),
                       Line2D([], [], marker="D", ms=4, color="black", ls="none",
                              label="share of these request-forms that fail")], fontsize=6, loc="upper right")
    ax.set_title(f"(d) Claim 2 on both footings (up to n={n} question/instruction request-forms per bar;\n"
                 "labels: median drift vs median tolerance)")


def plot_validation(records: pd.DataFrame, curve: pd.DataFrame, table: pd.DataFrame, causes: pd.DataFrame,
                    claim2: pd.DataFrame | None = None):
    """Four panels: causes per (editor, form), the δ-scaling transfer curve, held-out AUC per criterion, and the
    paper's claim 2 on its own footing and like-for-like."""
    import matplotlib.pyplot as plt

    setup()
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5), gridspec_kw={"width_ratios": [1.3, 1]})
    axes = axes.ravel()
    _causes_panel(axes[0], causes)
    _curve_panel(axes[1], curve)
    _auc_panel(axes[2], table)
    _claim2_panel(axes[3], claim2)
    n = len(records)
    fig.suptitle(f"Why forms fail: interventions on every request-form (n={n} request-forms, "
                 f"{records['subject'].nunique()} subjects, editors: {', '.join(dict.fromkeys(records['editor']))})",
                 fontsize=9)
    fig.tight_layout()
    return fig


__all__ = ["CAUSE_COLORS", "plot_validation"]
