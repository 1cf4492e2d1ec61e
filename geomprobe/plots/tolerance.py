"""Tolerance-radius / activation-deviation figures (RoSE Fig. 2a/8, 2b/10, 7, 12, 17, 19).

All functions draw one tidy layout, built by :func:`geomprobe.tables.tidy_radius` /
:func:`geomprobe.tables.tidy_deviation` from the probe DataFrames (see :mod:`geomprobe.tables` for its columns)
and read back from CSV by ``geomprobe figures --replot``.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from ..tables import (COLLAPSED, DEV, FEW, SECONDS, flag, median_iqr, predicted_count, predicted_radii, quartiles,
                      radius_rows, safe_share)
from .style import EDITOR_COLORS, editor_color, setup

#: colour of an update rule = the colour of the editor that made it famous
RULE_COLORS = {"covariance": EDITOR_COLORS["memit-merge"], "identity": EDITOR_COLORS["rose"],
               "projection": EDITOR_COLORS["alphaedit"], "update": "#555555"}
RULE_LABELS = {"covariance": "covariance C (MEMIT)", "identity": "identity I (IGA)",
               "projection": "projection P (AlphaEdit)", "update": "editor's own ΔW"}
FORM_HATCH = {"declarative": "", "question": "", "instruction": "/////"}
RHO_BAND = "#BBBBBB"
DELTA_LABEL = "Δ = ‖ΔW Δk‖ (residual-norm units)"
RHO_LABEL = "ρ (residual-norm units)"


# ---- labels ----------------------------------------------------------------------------------------------
def pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.0f}%"


def safe_label(dev: pd.DataFrame, sep: str = " of ", unit: str = "") -> str:
    """``"Δ<ρ 67% of 6"``: the safe share and the number of prompts (of predicted requests) it is taken over."""
    n = int(flag(dev["predicted"]).sum()) if len(dev) else 0
    return f"Δ<ρ {pct(safe_share(dev))}{sep}{n}{unit}" if n else "Δ<ρ n/a"


def fmt(x: float, digits: int = 2) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:.{digits}f}" if abs(x) < 10 else f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}"


def criterion_note(df: pd.DataFrame) -> str:
    """``" (ρ: prob>0.5)"``: the success criterion of the noisy trials behind the radii (the ρ rows' ``criterion``
    column, e.g. ``prob>0.5``, ``argmax``, ``beats-true``); empty for tables without that column."""
    rho = radius_rows(df)
    c = ", ".join(dict.fromkeys(str(x) for x in rho["criterion"].dropna())) if "criterion" in rho else ""
    return f" (ρ: {c})" if c else ""


def few_note(df: pd.DataFrame) -> str:
    """``" (ρ of 1/8 requests only)"`` when fewer than :data:`FEW` requests' values predict their target."""
    k, n = predicted_count(df)
    return f" (ρ of {k}/{n} requests only)" if 0 < k < FEW else ""


# ---- drawing helpers ---------------------------------------------------------------------------------------
def _box(ax, values, x: float, color: str, width: float = 0.34, hatch: str = "", points: bool = True) -> None:
    """Box (≥ 3 values) or median tick, plus the points, at ``x``."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return
    if len(v) >= 3:
        bp = ax.boxplot([v], positions=[x], widths=width, showfliers=False, patch_artist=True, manage_ticks=False)
        for b in bp["boxes"]:
            b.set(facecolor=color, alpha=0.45, edgecolor=color, hatch=hatch, linewidth=0.8)
        for part in ("whiskers", "caps"):
            for line in bp[part]:
                line.set(color=color, linewidth=0.8)
        for line in bp["medians"]:
            line.set(color="black", linewidth=1.2)
    else:
        ax.hlines(np.median(v), x - width / 2, x + width / 2, color="black", lw=1.2)
    if points:
        jit = np.linspace(-width / 3, width / 3, len(v)) if len(v) > 1 else np.zeros(1)
        ax.scatter(x + jit, v, s=5, color=color, edgecolor="none", alpha=0.8, zorder=3)


def _log_if_wide(ax, values, ratio: float = 30.0) -> bool:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) and v.max() / v.min() > ratio:
        ax.set_yscale("log")
        return True
    return False


def _rho_band(ax, rho: pd.DataFrame, who: str, x0: float | None = None, x1: float | None = None) -> list:
    """Shade the IQR of the predicted ρ and draw its median; return legend handles (or a 'no ρ' note)."""
    q = quartiles(predicted_radii(rho))
    k, n = int(flag(rho["predicted"]).sum()), len(rho)
    if q is None:
        ax.text(0.5, 0.97, f"ρ band missing: 0/{n} {who} values predict their target (edit failed, ρ undefined)",
                transform=ax.transAxes, ha="center", va="top", fontsize=6.5, color="#444444")
        return []
    kw = {} if x0 is None else {"xmin": x0, "xmax": x1}
    if x0 is None:
        ax.axhspan(q[0], q[2], color=RHO_BAND, alpha=0.45, lw=0, zorder=0)
        ax.axhline(q[1], color="black", ls="--", lw=0.9, zorder=1)
    else:
        ax.fill_between([x0, x1], q[0], q[2], color=RHO_BAND, alpha=0.45, lw=0, zorder=0)
        ax.hlines(q[1], **kw, color="black", ls="--", lw=0.9, zorder=1)
    return [Patch(color=RHO_BAND, alpha=0.6, label=f"ρ IQR ({who}, {k}/{n} predicted)"),
            plt.Line2D([], [], color="black", ls="--", lw=0.9, label="median ρ")]


# ---- Fig. 2a / 8 -------------------------------------------------------------------------------------------
def plot_tolerance_radius(df: pd.DataFrame, title: str | None = None, relative: bool = True):
    """ρ (or ρ/‖h‖) per editor: box + points over the requests whose value predicts the target; requests whose
    value does not (edit failed, ρ undefined) as × in a row below zero; collapsed radii (predicted, ρ below the
    search step) as hollow circles."""
    setup()
    col = "value_rel" if relative else "value"
    rho = radius_rows(df)
    editors = list(dict.fromkeys(rho["editor"]))
    fig, ax = plt.subplots(figsize=(3.6, 2.8))
    pred_vals = predicted_radii(rho, col)
    top = max(float(pred_vals.max()) if len(pred_vals) else 0.0, 0.1 if relative else 1.0)
    below = -0.12 * top
    labels = []
    for i, ed in enumerate(editors):
        d = rho[rho["editor"] == ed]
        pred = flag(d["predicted"])
        color = editor_color(ed)
        _box(ax, d.loc[pred, col], i, color, width=0.5, points=False)
        measured = d[pred & (d["status"] != COLLAPSED)][col].to_numpy(float)
        collapsed = d[pred & (d["status"] == COLLAPSED)][col].to_numpy(float)
        for vals, face in ((measured, color), (collapsed, "none")):
            if len(vals):
                jit = np.linspace(-0.15, 0.15, len(vals)) if len(vals) > 1 else np.zeros(1)
                ax.scatter(i + jit, vals, s=12, facecolor=face, edgecolor=color, lw=0.8, zorder=3)
        n_fail = int((~pred).sum())
        if n_fail:
            jit = np.linspace(-0.2, 0.2, n_fail) if n_fail > 1 else np.zeros(1)
            ax.scatter(i + jit, np.full(n_fail, below), marker="x", s=10, color="#666666", lw=0.8, zorder=3)
        labels.append(f"{ed}\n{int(pred.sum())}/{len(d)} predicted")
    ax.axhline(0, color="#888888", lw=0.5)
    ax.set_xticks(range(len(editors)), labels)
    ax.set_xlim(-0.6, len(editors) - 0.4)
    ax.set_ylim(below * 1.8, top * 1.12)
    yt = [t for t in ax.get_yticks() if 0 <= t <= top * 1.12]
    ax.set_yticks([below, *yt], ["not\npredicted", *[f"{t:g}" for t in yt]])
    ax.set_ylabel("ρ / ‖h‖ (share of the residual norm)" if relative else RHO_LABEL)
    handles = [plt.Line2D([], [], ls="", marker="o", color="#555555", ms=3.5, label="ρ measured"),
               plt.Line2D([], [], ls="", marker="o", mfc="none", color="#555555", ms=3.5,
                          label="predicted, ρ < search step (collapsed)"),
               plt.Line2D([], [], ls="", marker="x", color="#666666", ms=3.5,
                          label="target not predicted (edit failed, ρ undefined)")]
    ax.legend(handles=handles, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=6, ncol=1)
    ax.set_title((title or "Tolerance radius per editor") + criterion_note(df))
    return fig


# ---- Fig. 2b / 10 and Fig. 17 ------------------------------------------------------------------------------
def plot_deviation_vs_radius(df: pd.DataFrame, rules: Sequence[str] = ("covariance", "identity"),
                             forms: Sequence[str] = ("question", "instruction"), title: str | None = None):
    """Boxes of Δ per update rule × form on the same K, R, against the ρ band (IQR + median) of the editor whose
    optimised values they write; tick labels give the share Δ < ρ (prompts of predicted requests)."""
    setup()
    dev = df[df["metric"] == DEV]
    rho = radius_rows(df)
    rules = [r for r in rules if (dev["rule"] == r).any()]
    from ..tables import MISS

    lfl = "metric" in df and (df["metric"] == MISS).any()
    width = 1.2 + 0.85 * len(rules) * len(forms)
    if lfl:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(2 * width + 2.0, 3.3), gridspec_kw={"width_ratios": [1, 1]})
        eds = {r: next(iter(df[(df["metric"] == MISS) & (df["rule"] == r)]["editor"]), None) for r in rules}
        like_for_like_panel(ax2, df, [(eds[r], f"{RULE_LABELS.get(r, r)}\n({eds[r]})", RULE_COLORS.get(r, "#777"))
                                      for r in rules if eds[r]], forms)
    else:
        fig, ax = plt.subplots(figsize=(width, 2.8))
    ticks, labels, allv = [], [], list(predicted_radii(rho))
    for ri, rule in enumerate(rules):
        for fi, form in enumerate(forms):
            d = dev[(dev["rule"] == rule) & (dev["form"] == form)]
            x = ri * (len(forms) + 0.6) + fi
            _box(ax, d["value"], x, RULE_COLORS.get(rule, "#777777"), width=0.6, hatch=FORM_HATCH.get(form, ""))
            allv += list(d["value"].astype(float))
            ticks.append(x)
            labels.append(f"{form}\n" + safe_label(d, sep="\nof ", unit=" prompts"))
    who = str(rho["editor"].iloc[0]) if len(rho) else "edit"
    handles = _rho_band(ax, rho, who)
    handles = [Patch(facecolor=RULE_COLORS.get(r, "#777777"), alpha=0.6, label=RULE_LABELS.get(r, r))
               for r in rules] + handles
    ax.set_xticks(ticks, labels, fontsize=6)
    _log_if_wide(ax, allv)
    ymax = max([v for v in allv if np.isfinite(v)] + [1.0])
    if ax.get_yscale() == "linear":
        ax.set_ylim(0, ymax * 1.1)
    ax.set_ylabel(DELTA_LABEL + "\nor ρ, last edit layer")
    ax.legend(handles=handles, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=6)
    ax.set_title("The paper's footing: Δ on unedited keys vs isotropic ρ" if lfl else
                 (title or "Activation deviation per update rule against the tolerance radius") + criterion_note(df))
    if lfl:
        fig.suptitle((title or "Activation deviation per update rule against the tolerance radius")
                     + criterion_note(df), fontsize=8)
        fig.tight_layout()
    return fig


# ---- like-for-like panel (issue 11) ----------------------------------------------------------------------------
def like_for_like_panel(ax, df: pd.DataFrame, groups: Sequence[tuple[str, str, str]],
                        forms: Sequence[str] = ("question", "instruction")) -> bool:
    """Beside the paper's Δ vs ρ: per group ``(editor, label, colour)`` and form, the edited model's miss ‖v − δ‖
    (coloured box) next to the tolerance measured along that miss on the same prompts (grey box); tick labels give
    the share miss ≤ tolerance and how many of those request-forms fail after the edit.  False when ``df`` has no
    like-for-like rows."""
    from ..tables import MISS

    rows = df[df["metric"] == MISS] if "metric" in df else df.iloc[:0]
    if not len(rows):
        ax.set_axis_off()
        return False
    ticks, labels, allv = [], [], []
    for gi, (editor, label, color) in enumerate(groups):
        for fi, form in enumerate(forms):
            d = rows[(rows["editor"] == editor) & (rows["form"] == form)]
            x = gi * (len(forms) + 0.7) + fi
            _box(ax, d["value"], x - 0.2, color, width=0.36, hatch=FORM_HATCH.get(form, ""))
            _box(ax, d["rho"], x + 0.2, RHO_BAND, width=0.36, hatch=FORM_HATCH.get(form, ""))
            allv += list(d["value"].astype(float)) + list(d["rho"].astype(float))
            ok = d["safe"].dropna()
            fail = (d["success_after"].astype(float) < 0.5).mean() if len(d) else np.nan
            ticks.append(x)
            labels.append((f"{label}\n" if fi == 0 else "\n" * (label.count("\n") + 1))
                          + f"{form[:5]}.\n≤tol. {pct(ok.mean()) if len(ok) else 'n/a'}/{len(ok)}\nfails {pct(fail)}")
    ax.set_xticks(ticks, labels, fontsize=5.5)
    _log_if_wide(ax, allv)
    if ax.get_yscale() == "linear":
        ax.set_ylim(0, max([v for v in allv if np.isfinite(v)] + [1.0]) * 1.1)
    ax.set_ylabel("edited model's miss ‖v − δ‖ (colour) and the\ntolerance along it (grey), residual-norm units")
    ax.set_title("Like-for-like: what the edited model delivers at (L, subject)\nagainst the tolerance in that "
                 "direction, on the same prompts")
    return True


# ---- Fig. 7 ------------------------------------------------------------------------------------------------
def plot_restoration(df: pd.DataFrame, forms: Sequence[str] = ("question", "instruction"), title: str | None = None):
    """Per editor: the ρ zone (IQR, median dashed) behind boxes of the editor's own Δ per form; tick labels
    give the safe-condition rate Δ < ρ and the share of requests whose value predicts the target."""
    setup()
    dev = df[df["metric"] == DEV]
    rho = radius_rows(df)
    editors = list(dict.fromkeys(df["editor"]))
    from ..tables import MISS

    lfl_eds = list(dict.fromkeys(df[df["metric"] == MISS]["editor"]))
    if lfl_eds:
        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7.4, 6.6), gridspec_kw={"height_ratios": [1, 1]})
        like_for_like_panel(ax2, df, [(e, e, editor_color(e)) for e in lfl_eds], forms)
    else:
        fig, ax = plt.subplots(figsize=(6.8, 2.9))
    labels, allv, no_rho = [], list(predicted_radii(rho)), []
    w = 0.8 / len(forms)
    for i, ed in enumerate(editors):
        r = rho[rho["editor"] == ed]
        q = quartiles(predicted_radii(r))
        if q is not None:
            ax.fill_between([i - 0.45, i + 0.45], q[0], q[2], color=RHO_BAND, alpha=0.5, lw=0, zorder=0)
            ax.hlines(q[1], i - 0.45, i + 0.45, color="black", ls="--", lw=0.9, zorder=1)
        else:
            no_rho.append(ed)
        d = dev[dev["editor"] == ed]
        for fi, form in enumerate(forms):
            x = i - 0.4 + w * (fi + 0.5)
            v = d[d["form"] == form]["value"]
            _box(ax, v, x, editor_color(ed), width=w * 0.8, hatch=FORM_HATCH.get(form, ""))
            allv += list(v.astype(float))
        k, n = int(flag(r["predicted"]).sum()), len(r)
        labels.append(f"{ed}\n{safe_label(d)}\n{k}/{n} predicted")
    ax.set_xticks(range(len(editors)), labels, fontsize=6.5)
    ax.set_xlim(-0.6, len(editors) - 0.4)
    _log_if_wide(ax, allv)
    ymax = max([v for v in allv if np.isfinite(v)] + [1.0])
    if ax.get_yscale() == "linear":
        ax.set_ylim(0, ymax * 1.1)
    ax.set_ylabel(DELTA_LABEL + "\nor ρ, last edit layer")
    handles = [Patch(color=RHO_BAND, alpha=0.6, label="ρ zone (IQR of predicted requests)"),
               plt.Line2D([], [], color="black", ls="--", lw=0.9, label="median ρ")]
    handles += [Patch(facecolor="white", edgecolor="#555555", hatch=FORM_HATCH.get(f, ""), label=f"Δ, {f} form")
                for f in forms]
    if no_rho:
        handles.append(Patch(color="none", label="no ρ zone (no target predicted): " + ", ".join(no_rho)))
    ax.legend(handles=handles, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.3), fontsize=6,
              ncol=min(len(handles), 5))
    ax.set_title((title or "Activation deviation of each editor against its tolerance radius") + criterion_note(df))
    if lfl_eds:
        fig.tight_layout()
    return fig


# ---- Fig. 12 -----------------------------------------------------------------------------------------------
def plot_layer_sensitivity(df: pd.DataFrame, rules: Sequence[str] = ("covariance", "identity"),
                           forms: Sequence[str] = ("question", "instruction"), title: str | None = None):
    """ρ (median + IQR of predicted requests) and Δ per rule (median + IQR) against the last edit layer, one
    panel per form; x tick labels give the requests predicted at that layer."""
    setup()
    layers = sorted(int(x) for x in df["sweep_layer"].dropna().unique())
    rho = radius_rows(df)
    rho_p = rho[flag(rho["predicted"])]
    dev = df[df["metric"] == DEV]
    fig, axes = plt.subplots(1, len(forms), figsize=(6.8, 2.7), sharey=True, squeeze=False)
    axes = axes[0]
    allv = list(rho_p["value"].astype(float)) + list(dev["value"].astype(float))
    rs = median_iqr(rho_p, "sweep_layer").reindex(layers)
    counts = [f"{L}\n{int(flag(rho[rho['sweep_layer'] == L]['predicted']).sum())}/"
              f"{int((rho['sweep_layer'] == L).sum())}" for L in layers]
    preset = df["preset_layer"].dropna() if "preset_layer" in df else pd.Series(dtype=float)
    for ax, form in zip(axes, forms):
        ax.plot(layers, rs["med"], color="black", ls="--", marker="s", ms=3, lw=1, label="ρ (median, IQR)")
        ax.fill_between(layers, rs["q25"], rs["q75"], color=RHO_BAND, alpha=0.5, lw=0)
        missing = [L for L in layers if not np.isfinite(rs.loc[L, "med"])]
        if missing:
            ax.scatter(missing, [0.03] * len(missing), marker="x", color="#666666", s=14,
                       transform=ax.get_xaxis_transform(), label="ρ undefined (no target predicted)", zorder=4)
        span = (max(layers) - min(layers)) or 1
        for ri, rule in enumerate(rules):
            d = dev[(dev["rule"] == rule) & (dev["form"] == form)]
            if d.empty:
                continue
            s = median_iqr(d, "sweep_layer").reindex(layers)
            c = RULE_COLORS.get(rule, "#777777")
            x = np.asarray(layers, float) + (ri - (len(rules) - 1) / 2) * 0.025 * span
            ax.errorbar(x, s["med"], yerr=[s["med"] - s["q25"], s["q75"] - s["med"]], color=c, marker="o", ms=3,
                        lw=1.2, elinewidth=0.8, capsize=2, label=f"Δ, {RULE_LABELS.get(rule, rule)} (median, IQR)")
        if len(preset):
            ax.axvline(float(preset.iloc[0]), color="#999999", ls=":", lw=0.8)
        ax.set_xticks(layers, counts, fontsize=6.5)
        ax.set_xlabel("last edit layer L  (requests predicted below)")
        ax.set_title(f"{form} form", fontsize=7.5)
    _log_if_wide(axes[0], allv)
    if axes[0].get_yscale() == "linear":
        axes[0].set_ylim(bottom=0)
    axes[0].set_ylabel(DELTA_LABEL + "\nor ρ")
    handles, labs = axes[0].get_legend_handles_labels()
    if len(preset):
        handles.append(plt.Line2D([], [], color="#999999", ls=":", lw=0.8))
        labs.append(f"preset last edit layer ({int(preset.iloc[0])})")
    fig.legend(handles, labs, frameon=False, loc="lower center", ncol=min(len(labs), 3), fontsize=6,
               bbox_to_anchor=(0.5, -0.12))
    pad = 0.08 * ((max(layers) - min(layers)) or 4)
    axes[0].set_xlim(min(layers) - pad, max(layers) + pad)
    fig.suptitle((title or "Tolerance radius and activation deviation across edit layers") + criterion_note(df),
                 fontsize=8.5)
    fig.tight_layout()
    return fig


# ---- Fig. 19 -----------------------------------------------------------------------------------------------
def plot_hki_sensitivity(df: pd.DataFrame, editor: str = "rose", baseline: str = "memit-merge",
                         title: str | None = None):
    """Left: ρ (median + IQR of predicted requests, and each request) vs M; right: edit time vs M; the
    baseline editor's values as dashed lines."""
    setup()
    d = df[df["editor"] == editor]
    ms = sorted(int(m) for m in d["hki_templates"].dropna().unique())
    rho = radius_rows(d)
    rho_p = rho[flag(rho["predicted"])]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(6.8, 2.6))
    c = editor_color(editor)
    s = median_iqr(rho_p, "hki_templates").reindex(ms)
    a1.plot(ms, s["med"], color=c, marker="o", ms=3.5, lw=1.2, label=f"{editor} ρ (median, IQR)")
    a1.fill_between(ms, s["q25"], s["q75"], color=c, alpha=0.2, lw=0)
    if len(rho_p):
        a1.scatter(rho_p["hki_templates"].astype(float), rho_p["value"].astype(float), s=6, color=c, alpha=0.5,
                   edgecolor="none")
    missing = [m for m in ms if not np.isfinite(s.loc[m, "med"])]
    if missing:
        a1.scatter(missing, [0.03] * len(missing), marker="x", color="#666666", s=14,
                   transform=a1.get_xaxis_transform(), label="ρ undefined (no target predicted)", zorder=4)
    base = df[df["editor"] == baseline]
    bq = quartiles(predicted_radii(radius_rows(base)))
    if bq is not None:
        a1.axhline(bq[1], color=editor_color(baseline), ls="--", lw=1, label=f"{baseline} median ρ")
    elif len(radius_rows(base)):
        a1.plot([], [], ls="", label=f"{baseline}: no target predicted")
    counts = [f"{m}\n{int(flag(rho[rho['hki_templates'] == m]['predicted']).sum())}/"
              f"{int((rho['hki_templates'] == m).sum())}" for m in ms]
    a1.set_xticks(ms, counts, fontsize=6.5)
    pad = 0.1 * ((max(ms) - min(ms)) or 4) if ms else 1
    for a in (a1, a2):
        if ms:
            a.set_xlim(min(ms) - pad, max(ms) + pad)
    if not len(rho_p):
        a1.text(0.5, 0.5, "no optimised value predicts its target\nat any M: ρ undefined", transform=a1.transAxes,
                ha="center", va="center", fontsize=7, color="#444444")
    a1.set_xlabel("HKI templates M  (requests predicted below)")
    a1.set_ylabel(RHO_LABEL)
    a1.set_ylim(bottom=0, top=max([1.0] + list(rho_p["value"].astype(float) * 1.35)
                                  + ([bq[2] * 1.35] if bq else [])))
    a1.legend(frameon=False, fontsize=6, loc="upper left")
    t = d[d["metric"] == SECONDS].groupby("hki_templates")["value"].mean().reindex(ms)
    a2.plot(ms, t, color=c, marker="o", ms=3.5, lw=1.2, label=f"{editor} (value optimisation + closed form)")
    bt = base[base["metric"] == SECONDS]["value"]
    if len(bt):
        a2.axhline(float(bt.mean()), color=editor_color(baseline), ls="--", lw=1, label=f"{baseline} edit")
    a2.set_xticks(ms)
    a2.set_xlabel("HKI templates M")
    a2.set_ylabel("edit time (s)")
    a2.set_ylim(bottom=0, top=max([1e-3] + list(t.fillna(0) * 1.3) + ([float(bt.mean()) * 1.3] if len(bt) else [])))
    a2.legend(frameon=False, fontsize=6, loc="upper left")
    fig.suptitle((title or "HKI sensitivity: tolerance radius and edit time vs templates") + criterion_note(d),
                 fontsize=8.5)
    fig.tight_layout()
    return fig


__all__ = ["criterion_note", "few_note", "fmt", "pct", "plot_deviation_vs_radius", "plot_hki_sensitivity",
           "plot_layer_sensitivity", "plot_restoration", "plot_tolerance_radius", "safe_label"]
