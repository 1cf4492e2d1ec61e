"""Figures of the ``diagnose`` / ``compare`` reports (input: tidy DataFrames of measurement records)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .style import FORM_COLORS, editor_color, setup

_DRIFT_FORMS = ("question", "instruction")


def _finite(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").replace([np.inf, -np.inf], np.nan).dropna()


def _maybe_log(ax, values) -> None:
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0])
    if len(v) >= 2 and v.max() / v.min() > 50:
        ax.set_yscale("log")


def request_names(df: pd.DataFrame) -> dict[str, str]:
    """``{case_id: what a person reads}``: the ``label`` column (``subject · relation``) where there is one,
    else ``subject · relation`` from those columns, else the case id."""
    out: dict[str, str] = {}
    for _, row in df.drop_duplicates("case_id").iterrows():
        label = row.get("label")
        if not isinstance(label, str) or not label:
            subj, rel = row.get("subject"), row.get("relation")
            label = f"{subj} · {rel}" if isinstance(subj, str) and isinstance(rel, str) else str(row["case_id"])
        out[row["case_id"]] = label
    return out


def plot_diagnose(df: pd.DataFrame):
    """Δ of the update per request and form (bars), the covariance / isotropic Δ on the same K, R (markers)
    and the request's ρ (black dash): a bar above its dash drifts past the tolerance radius.

    Columns: ``case_id, form, delta, delta_covariance, delta_identity, rho, success_after, editor`` and, when
    present, ``label`` (``subject · relation``), which names the requests on the x axis.
    """
    import matplotlib.pyplot as plt

    setup()
    d = df[df["form"].isin(_DRIFT_FORMS)].reset_index(drop=True)
    cases = list(dict.fromkeys(d["case_id"]))
    fig, ax = plt.subplots(figsize=(max(3.4, 0.9 * len(cases) + 1.6), 2.8))
    if d.empty:
        ax.text(0.5, 0.5, "no question / instruction prompts to measure", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    width = 0.36
    vals = []
    for ci, case in enumerate(cases):
        rows = d[d["case_id"] == case]
        for fi, form in enumerate(_DRIFT_FORMS):
            row = rows[rows["form"] == form]
            if row.empty:
                continue
            row = row.iloc[0]
            x = ci + (fi - 0.5) * width
            delta = float(row["delta"]) if pd.notna(row["delta"]) else np.nan
            ok = bool(row["success_after"] >= 0.5) if pd.notna(row["success_after"]) else False
            ax.bar(x, delta, width * 0.9, color=FORM_COLORS[form], edgecolor="black" if not ok else FORM_COLORS[form],
                   hatch=None if ok else "//", linewidth=0.6, label=f"Δ {form}" if ci == 0 else None)
            for col, mk, lab in (("delta_covariance", "x", "Δ covariance rule"), ("delta_identity", "o",
                                                                                 "Δ isotropic rule")):
                if col in row and pd.notna(row[col]):
                    ax.plot(x, float(row[col]), mk, color="black", ms=3.5, mfc="none" if mk == "o" else None,
                            label=lab if ci == 0 and fi == 0 else None)
                    vals.append(float(row[col]))
            vals.append(delta)
        rho = float(rows["rho"].iloc[0]) if pd.notna(rows["rho"].iloc[0]) else np.nan
        ax.hlines(rho, ci - width * 1.05, ci + width * 1.05, colors="black", linewidth=1.6,
                  label="ρ (tolerance radius)" if ci == 0 else None)
        vals.append(rho)
    rho0 = {c for c in cases if (pd.to_numeric(d[d["case_id"] == c]["rho"], errors="coerce") == 0).any()}
    ax.set_xticks(range(len(cases)))
    names = request_names(d)
    ax.set_xticklabels([f"{names[c]}\n(ρ = 0)" if c in rho0 else names[c] for c in cases],
                       rotation=20 if len(cases) > 3 else 0, ha="right" if len(cases) > 3 else "center")
    ax.set_ylabel("Δ, ρ (residual-norm units)")
    _maybe_log(ax, vals)
    over = int((pd.to_numeric(d["delta"], errors="coerce") > pd.to_numeric(d["rho"], errors="coerce")).sum())
    fails = int((pd.to_numeric(d["success_after"], errors="coerce") < 0.5).sum())
    editor = str(d["editor"].iloc[0]) if "editor" in d else ""
    ax.set_title(f"{editor}: Δ > ρ on {over} of {len(d)} question/instruction forms; {fails} fail (hatched)")
    ax.legend(frameon=False, fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_compare_deviation(df: pd.DataFrame):
    """Δ of each editor's update on the question / instruction forms (box) against its ρ band (shaded:
    interquartile range of ρ over requests, line: median ρ).

    Columns: ``editor, form, delta, rho``.
    """
    import matplotlib.pyplot as plt

    setup()
    editors = list(dict.fromkeys(df["editor"]))
    fig, ax = plt.subplots(figsize=(max(3.4, 0.95 * len(editors) + 1.2), 2.7))
    rates, vals = [], []
    for i, ed in enumerate(editors):
        rows = df[(df["editor"] == ed) & df["form"].isin(_DRIFT_FORMS)]
        deltas = _finite(rows["delta"])
        rho = _finite(df[df["editor"] == ed].drop_duplicates("case_id")["rho"])
        color = editor_color(ed)
        if len(rho) and float(np.median(rho)) <= 0:
            ax.annotate("median ρ = 0", (i, 0), xytext=(0, 2), textcoords="offset points",
                        xycoords=("data", "axes fraction"), ha="center", fontsize=6, color=color)
        elif len(rho):
            q1, q2, q3 = np.percentile(rho, [25, 50, 75])
            lo, hi = (q1, q3) if q3 > q1 else (q2 * 0.97, q2 * 1.03 + 1e-9)
            ax.fill_between([i - 0.42, i + 0.42], lo, hi, color=color, alpha=0.18, linewidth=0,
                            label="ρ band (IQR over requests)" if i == 0 else None)
            ax.hlines(q2, i - 0.42, i + 0.42, colors=color, linewidth=1.4, linestyles="--",
                      label="median ρ" if i == 0 else None)
            vals.extend(rho.tolist())
        if len(deltas):
            bp = ax.boxplot([deltas.to_numpy()], positions=[i], widths=0.45, patch_artist=True, showfliers=True,
                            flierprops={"markersize": 2.5})
            for patch in bp["boxes"]:
                patch.set_facecolor(color)
                patch.set_alpha(0.85)
            for part in ("medians",):
                for line in bp[part]:
                    line.set_color("black")
            vals.extend(deltas.tolist())
        both = rows[["delta", "rho"]].apply(pd.to_numeric, errors="coerce").dropna()
        rates.append((ed, float((both["delta"] < both["rho"]).mean()) if len(both) else np.nan))
    ax.set_xticks(range(len(editors)))
    ax.set_xticklabels(editors)
    ax.set_xlim(-0.6, len(editors) - 0.4)
    ax.set_ylabel("Δ on question/instruction\n(residual-norm units)")
    _maybe_log(ax, vals)
    known = [(e, r) for e, r in rates if np.isfinite(r)]
    if known:
        best = max(known, key=lambda t: t[1])
        worst = min(known, key=lambda t: t[1])
        title = (f"Δ < ρ on {best[1]:.0%} of form prompts for "
                 f"{'every editor' if len(known) > 1 else best[0]}" if best[1] == worst[1] else
                 f"Δ < ρ: {best[0]} {best[1]:.0%} vs {worst[0]} {worst[1]:.0%} of forms")
    else:
        title = "no Δ / ρ measured"
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_compare_metrics(df: pd.DataFrame):
    """Share of prompts on which the target wins (``prob`` protocol) per form, after each editor (bars), and
    before any edit (black tick).

    Columns: ``editor, form, before, after``.
    """
    import matplotlib.pyplot as plt

    setup()
    editors = list(dict.fromkeys(df["editor"]))
    forms = [f for f in ("declarative", "question", "instruction") if f in set(df["form"])]
    fig, ax = plt.subplots(figsize=(max(3.4, 1.1 * len(forms) * max(1, len(editors)) * 0.45 + 1.5), 2.7))
    n = max(1, len(editors))
    width = 0.8 / n
    for ei, ed in enumerate(editors):
        for fi, form in enumerate(forms):
            row = df[(df["editor"] == ed) & (df["form"] == form)]
            if row.empty:
                continue
            x = fi + (ei - (n - 1) / 2) * width
            after = float(row["after"].iloc[0]) if pd.notna(row["after"].iloc[0]) else 0.0
            ax.bar(x, 100 * after, width * 0.92, color=editor_color(ed), label=ed if fi == 0 else None)
            if pd.notna(row["before"].iloc[0]):
                ax.hlines(100 * float(row["before"].iloc[0]), x - width * 0.46, x + width * 0.46, colors="black",
                          linewidth=1.2, label="before the edit" if fi == 0 and ei == 0 else None)
    ax.set_xticks(range(len(forms)))
    ax.set_xticklabels(forms)
    ax.set_ylim(0, 105)
    ax.set_ylabel("target wins, after the edit (%)\n(prob protocol)")
    inst = df[df["form"] == "instruction"].dropna(subset=["after"])
    if len(inst):
        best = inst["after"].max()
        tops = inst[inst["after"] >= best - 1e-9]["editor"].tolist()
        title = f"instruction form: best {', '.join(tops)} ({100 * best:.0f}%)"
        decl = df[df["form"] == "declarative"].dropna(subset=["after"])
        if len(decl):
            title += f"; declarative mean {100 * decl['after'].mean():.0f}%"
    else:
        title = "target wins per form"
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


__all__ = ["plot_compare_deviation", "plot_compare_metrics", "plot_diagnose", "request_names"]
