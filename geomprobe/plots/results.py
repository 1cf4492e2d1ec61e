"""Evaluation-family figures: main-results bars and table, ablation, declarative results, edit overhead,
near-duplicate subjects, sequential edits (RoSE Tab. 1, Fig. 6, 15, 16, 18, 20).

Every plot function takes ready tables (per-form scores from :func:`geomprobe.tables.form_scores`, breach shares
from :func:`geomprobe.tables.breach_table`) and returns a matplotlib Figure; :func:`results_markdown` renders a
per-form score table as Markdown.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..tables import FORM_ORDER, METRICS
from .style import editor_color, setup

PROTOCOL_LABEL = {"prob": "MEMIT-style P(new) > P(true)", "token_acc": "EasyEdit-style token accuracy",
                  "gen": "greedy generation, exact match"}
#: Protocol order of the main-results tables; the headline is ``HEADLINE_PROTOCOL``.
PROTOCOL_ORDER: tuple[str, ...] = ("prob", "token_acc", "gen")
#: The main table's headline protocol: generating the target, as the paper counts success.
HEADLINE_PROTOCOL = "gen"


# --------------------------------------------------------------------------- text


def fmt(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def has_intervals(df: pd.DataFrame) -> bool:
    """Whether a score table carries bootstrap intervals (``low``/``high`` with a finite value somewhere)."""
    return {"low", "high"} <= set(df.columns) and bool(np.isfinite(pd.to_numeric(df["low"], errors="coerce")).any())


def fmt_cell(value: float, low: float = np.nan, high: float = np.nan, digits: int = 1, signed: bool = False) -> str:
    """``"43.8 [25.0, 62.5]"`` (``"43.8"`` without a finite interval, ``"n/a"`` without a value)."""
    if value is None or not np.isfinite(value):
        return "n/a"
    f = (lambda x: f"{x:+.{digits}f}") if signed else (lambda x: f"{x:.{digits}f}")
    if low is not None and high is not None and np.isfinite(low) and np.isfinite(high):
        return f"{f(value)} [{f(low)}, {f(high)}]"
    return f(value)


def results_markdown(df: pd.DataFrame, title: str = "Main results",
                     paper: pd.DataFrame | None = None, notes: Sequence[str] = (),
                     headline: str = HEADLINE_PROTOCOL) -> str:
    """Markdown tables from a :func:`form_scores` table: one per (protocol, form), editors as rows.

    Protocols in the order :data:`PROTOCOL_ORDER` (``prob``, ``token_acc``, ``gen``); the line under the title
    names the headline protocol (``headline``, by default ``gen``: generating the target, as the paper counts
    success) and says so when the table lacks it.  With interval columns (``low``, ``high``) each cell reads
    ``estimate [low, high]`` (95% bootstrap interval resampling subjects) and the ``n`` / ``subjects`` columns
    give what it rests on; with :data:`~geomprobe.tables.DIFF_COLUMNS` a last column gives the paired
    efficacy difference to the ``versus`` editor.  An older table without them shows the bare estimates.
    """
    from ..evaluate import to_markdown

    lines = [f"# {title}", ""]
    present = set(df["protocol"])
    others = ", ".join(f"`{p}` ({PROTOCOL_LABEL.get(p, p)})" for p in PROTOCOL_ORDER if p != headline and p in present)
    if headline in present:
        lines += [f"**Headline protocol: `{headline}`** ({PROTOCOL_LABEL.get(headline, headline)}, the paper's "
                  f"criterion)" + (f"; {others} beside it." if others else "."), ""]
    else:
        lines += [f"**Headline protocol `{headline}` is missing from this table** (re-run the evaluation to add it); "
                  f"shown: {others or 'nothing'}.", ""]
    intervals = has_intervals(df)
    diffs = "diff" in df.columns and bool(np.isfinite(pd.to_numeric(df["diff"], errors="coerce")).any())
    versus = str(df["versus"].dropna().iloc[0]) if diffs and "versus" in df and df["versus"].notna().any() else None
    if intervals:
        lines += ["Cells: score in percent [95% bootstrap interval, resampling subjects: requests of one subject are "
                  "not independent]; `n` = requests, `subjects` = distinct subjects among them (per efficacy)."
                  + (f"  `Δ efficacy vs {versus}`: the paired difference on the same requests (percentage points, "
                     "subjects resampled once for both editors)." if versus else ""), ""]
    elif "low" in df.columns:
        lines += ["No intervals: every score rests on a single subject (nothing to resample); `n` = requests.", ""]
    else:
        lines += ["No intervals: this CSV predates them (re-run the analysis to add the subject-bootstrap 95% "
                  "intervals); `n` = requests.", ""]
    lines += [*notes, ""] if notes else []
    protocols = [p for p in PROTOCOL_ORDER if p in present]
    protocols += sorted(set(df["protocol"]) - set(protocols))
    editors = list(dict.fromkeys(df["editor"]))
    for proto in protocols:
        for form in [f for f in FORM_ORDER if f in set(df["form"])]:
            d = df[(df["protocol"] == proto) & (df["form"] == form)]
            if d.empty:
                continue
            eds = [e for e in editors if e in set(d["editor"])]
            recs = []
            for e in eds:
                rec: dict = {"editor": e}
                for m in METRICS:
                    r = d[(d["editor"] == e) & (d["metric"] == m)]
                    if r.empty:
                        rec[m] = "–"
                        continue
                    r = r.iloc[0]
                    # without intervals the bare number stays numeric (right-aligned, as before them)
                    rec[m] = (fmt_cell(float(r["value"]), float(r.get("low", np.nan)), float(r.get("high", np.nan)))
                              if intervals else float(r["value"]))
                eff = d[(d["editor"] == e) & (d["metric"] == "efficacy")]
                rec["n"] = int(eff["n_requests"].iloc[0]) if len(eff) else 0
                if "n_subjects" in d.columns:
                    ns = pd.to_numeric(eff["n_subjects"], errors="coerce") if len(eff) else pd.Series([], dtype=float)
                    rec["subjects"] = int(ns.iloc[0]) if len(ns) and np.isfinite(ns.iloc[0]) else "–"
                if versus and intervals:
                    rec[f"Δ efficacy vs {versus}"] = ("–" if e == versus or eff.empty else
                                                      fmt_cell(float(eff["diff"].iloc[0]),
                                                               float(eff["diff_low"].iloc[0]),
                                                               float(eff["diff_high"].iloc[0]), signed=True))
                recs.append(rec)
            lines += [f"## {form} queries — `{proto}` ({PROTOCOL_LABEL.get(proto, proto)})", "",
                      to_markdown(pd.DataFrame(recs)), ""]
    if paper is not None and not paper.empty:
        lines += ["## Paper reference (RoSE Tab. 1, Qwen2.5-7B-Instruct, instruction queries)", "",
                  to_markdown(paper), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def _bar_labels(ax, bars, values, fontsize: float = 5.5, tops=None) -> None:
    """Value labels above bars (``n/a`` for missing values) so zero-height bars stay readable; ``tops`` (e.g. the
    upper interval bounds) lifts each label above its error bar."""
    for k, (b, v) in enumerate(zip(bars, values)):
        txt = "n/a" if not np.isfinite(v) else f"{v:.0f}"
        y = 0.0 if not np.isfinite(v) else v
        if tops is not None and np.isfinite(tops[k]):
            y = max(y, float(tops[k]))
        ax.text(b.get_x() + b.get_width() / 2, y + 1.0, txt, ha="center", va="bottom", fontsize=fontsize,
                rotation=90 if len(bars) > 10 else 0, color="#333333")


def plot_metric_bars(df: pd.DataFrame, metrics: Sequence[str] = METRICS, editors: Sequence[str] | None = None,
                     title: str | None = None, ylabel: str = "score (%)", figsize=(6.8, 2.7),
                     labels: bool = True, legend_cols: int | None = None):
    """Grouped bars: one group per metric, one bar per editor (editor colours), values in percent.

    ``df`` holds ``editor, metric, value`` for one form and protocol (extra rows are ignored).  With ``low`` /
    ``high`` columns (:func:`geomprobe.tables.form_scores`) each bar gets its 95% subject-bootstrap interval as
    an error bar and a footnote says so, with the number of requests and subjects; without them, bare bars.
    """
    setup()
    editors = list(editors) if editors is not None else list(dict.fromkeys(df["editor"]))
    metrics = [m for m in metrics if m in set(df["metric"])]
    fig, ax = plt.subplots(figsize=figsize)
    n = max(len(editors), 1)
    width = 0.84 / n
    x = np.arange(len(metrics))
    intervals = has_intervals(df)

    def col(ed: str, c: str) -> np.ndarray:
        got = [df.loc[(df["editor"] == ed) & (df["metric"] == m), c] for m in metrics]
        return np.array([float(v.iloc[0]) if len(v) else np.nan for v in got], dtype=float)

    for i, ed in enumerate(editors):
        vals = col(ed, "value")
        pos = x - 0.42 + width * (i + 0.5)
        bars = ax.bar(pos, np.nan_to_num(vals), width * 0.92, color=editor_color(ed), label=ed,
                      edgecolor="#333333" if ed == "unedited" else "none", linewidth=0.4,
                      hatch="//" if ed == "unedited" else None)
        if ed == "unedited":
            for b in bars:
                b.set_facecolor("white")
        tops = None
        if intervals:
            lo, hi = col(ed, "low"), col(ed, "high")
            ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(vals)
            if ok.any():
                ax.errorbar(pos[ok], vals[ok], yerr=[np.clip(vals[ok] - lo[ok], 0, None),
                                                     np.clip(hi[ok] - vals[ok], 0, None)],
                            fmt="none", ecolor="#222222", elinewidth=0.6, capsize=1.2, capthick=0.6)
            tops = hi
        if labels:
            _bar_labels(ax, bars, vals, tops=tops)
    ax.set_xticks(x, metrics)
    ax.set_ylim(0, 115 if labels else 105)
    ax.set_yticks([0, 25, 50, 75, 100])
    ax.set_ylabel(ylabel)
    ax.axhline(0, color="#333333", lw=0.6)
    note = None
    if intervals:
        d = df[df["metric"].isin(metrics) & df["editor"].isin(editors)]
        note = f"whiskers: 95% bootstrap interval resampling subjects ({counts(d)})"
    leg = ax.legend(frameon=False, ncol=legend_cols or min(n, 4), loc="upper center", bbox_to_anchor=(0.5, -0.1),
                    fontsize=6.5, handlelength=1.2, columnspacing=1.0, title=note, title_fontsize=5.5)
    if note:
        leg.get_title().set_color("#555555")
    if title:
        ax.set_title(wrap(title, figsize[0]))
    return fig


def counts(d: pd.DataFrame) -> str:
    """``"n = 16 requests, 4 subjects"`` (ranges when rows differ) from ``n_requests`` / ``n_subjects``."""
    def span(c: str) -> str:
        v = pd.to_numeric(d[c], errors="coerce").dropna().astype(int) if c in d else pd.Series([], dtype=int)
        v = v[v > 0]
        if v.empty:
            return "?"
        return str(v.min()) if v.min() == v.max() else f"{v.min()}–{v.max()}"

    return f"n = {span('n_requests')} requests, {span('n_subjects')} subjects"


def wrap(title: str, width_in: float) -> str:
    """Wrap each line of a title to the figure width (about 15 characters per inch at the title size)."""
    n = max(int(width_in * 15), 20)
    return "\n".join(textwrap.fill(line, n) for line in title.split("\n"))


def plot_overhead(df: pd.DataFrame, title: str | None = None):
    """Two bar panels per editor: wall time per edit batch (s) and peak memory (GB or MB)."""
    setup()
    d = df.drop_duplicates("editor")
    editors = list(d["editor"])
    secs = d["seconds"].astype(float).to_numpy()
    mem = d["peak_memory_mb"].astype(float).to_numpy()
    gb = np.nanmax(np.abs(mem)) >= 1024 if np.isfinite(mem).any() else False
    mem_plot, unit = (mem / 1024.0, "GB") if gb else (mem, "MB")
    colors = [editor_color(e) for e in editors]
    fig, axes = plt.subplots(1, 2, figsize=(6.8, 2.6))
    device = str(d["device"].iloc[0]) if "device" in d else ""
    mem_what = "CUDA allocator peak" if device.startswith("cuda") else "peak RSS growth"
    for ax, vals, lab in ((axes[0], secs, "wall time per edit batch (s)"),
                          (axes[1], mem_plot, f"{mem_what} ({unit})")):
        y = np.arange(len(editors))
        ax.barh(y, np.nan_to_num(vals), color=colors, height=0.7)
        ax.set_yticks(y, editors)
        ax.invert_yaxis()
        ax.set_xlabel(lab)
        top = np.nanmax(vals) if np.isfinite(vals).any() and np.nanmax(vals) > 0 else 1.0
        ax.set_xlim(0, top * 1.28)
        for yi, v in zip(y, vals):
            ax.text((v if np.isfinite(v) else 0) + top * 0.02, yi, "n/a" if not np.isfinite(v) else f"{v:.3g}",
                    va="center", fontsize=6)
    axes[1].set_yticklabels([])
    note = not device.startswith("cuda")
    if note:
        fig.text(0.99, 0.01, "CPU: growth of the process's peak RSS (a high-water mark; depends on run order)",
                 ha="right", va="bottom", fontsize=5.5, color="#555555")
    if title:
        fig.suptitle(title, fontsize=8.5)
    fig.tight_layout(rect=(0, 0.05 if note else 0, 1, 1))
    return fig


def plot_similar_subjects(df: pd.DataFrame, breach: pd.DataFrame, title: str | None = None,
                          layer: int | None = None):
    """Left: key cosines of near-duplicate subject pairs vs different-subject pairs (per form).
    Right: locality breach on the near-duplicate subject's prompts vs on unrelated prompts, per editor.

    ``df`` rows: ``kind`` ``key_cosine`` (``pair_kind`` near-duplicate / different-subject, ``form``, ``value``).
    ``breach``: ``editor, probe, value`` (percent of prompts breached, :func:`geomprobe.tables.breach_table`).
    """
    setup()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(6.8, 2.7), gridspec_kw={"width_ratios": [1, 1.5]})
    kc = df[df["kind"] == "key_cosine"]
    forms = [f for f in ("declarative", "question", "instruction") if f in set(kc["form"])]
    styles = {"near-duplicate": ("#D55E00", "near-duplicate pair"), "different-subject": ("#0072B2", "different subjects")}
    rng = np.random.default_rng(0)
    for k, (pair, (color, lab)) in enumerate(styles.items()):
        for i, form in enumerate(forms):
            v = kc[(kc["pair_kind"] == pair) & (kc["form"] == form)]["value"].astype(float).dropna().to_numpy()
            if not len(v):
                continue
            xpos = i + (k - 0.5) * 0.36
            ax0.scatter(xpos + rng.uniform(-0.07, 0.07, len(v)), v, s=9, color=color, alpha=0.7, lw=0,
                        label=lab if i == 0 else None)
            ax0.plot([xpos - 0.13, xpos + 0.13], [v.mean()] * 2, color=color, lw=1.6)
    ax0.set_xticks(range(len(forms)), forms)
    ax0.set_xlim(-0.6, len(forms) - 0.4)
    lo = float(np.nanmin(kc["value"])) if len(kc) else 0.0
    ax0.set_ylim(min(0.0, lo - 0.05), 1.02)
    ax0.set_ylabel(f"key cosine (layer {layer})" if layer is not None else "key cosine (edit layer)")
    ax0.legend(frameon=False, loc="lower left", fontsize=6)
    ax0.set_title("keys (bar = mean)", fontsize=7.5)

    editors = list(dict.fromkeys(breach["editor"]))
    probes = [("near-duplicate", "prompt of the near-duplicate subject", None),
              ("unrelated", "unrelated-subject prompt", "////")]
    width = 0.38
    for j, (probe, lab, hatch) in enumerate(probes):
        share = breach[breach["probe"] == probe].set_index("editor")["value"]
        vals = [float(share.get(ed, np.nan)) for ed in editors]
        pos = np.arange(len(editors)) + (j - 0.5) * width
        bars = ax1.bar(pos, np.nan_to_num(vals), width * 0.9, color=[editor_color(e) for e in editors],
                       hatch=hatch, edgecolor="white" if hatch else "none", lw=0, alpha=1.0 if j == 0 else 0.55)
        _bar_labels(ax1, bars, np.array(vals, dtype=float), fontsize=6)
    from matplotlib.patches import Patch

    ax1.legend(handles=[Patch(facecolor="#888888", label=probes[0][1]),
                        Patch(facecolor="#888888", alpha=0.55, hatch="////", edgecolor="white", label=probes[1][1])],
               frameon=False, loc="upper left", fontsize=6)
    ax1.set_xticks(range(len(editors)), editors)
    ax1.set_ylim(0, 118)
    ax1.set_yticks([0, 25, 50, 75, 100])
    ax1.set_ylabel("locality breach (% of prompts)")
    ax1.set_title("after editing the '-a' subjects", fontsize=7.5)
    if title:
        fig.suptitle(title, fontsize=8.5)
    fig.tight_layout()
    return fig


def plot_sequential(df: pd.DataFrame, metrics: Sequence[str] = METRICS, form: str = "instruction",
                    protocol: str = "prob", title: str | None = None):
    """One panel per metric: the score on ``form`` queries against the number of sequential edits, one line
    per editor.  ``df`` rows: ``editor, n_edits, protocol, form, metric, value``."""
    setup()
    d = df[(df["form"] == form) & (df["protocol"] == protocol)]
    metrics = [m for m in metrics if m in set(d["metric"])] or list(metrics[:1])
    fig, axes = plt.subplots(1, len(metrics), figsize=(1.75 * len(metrics) + 0.3, 2.5), sharey=True, squeeze=False)
    axes = axes[0]
    editors = list(dict.fromkeys(df["editor"]))
    ns = sorted({int(n) for n in d["n_edits"].dropna()}) if len(d) else []
    markers = ["o", "s", "^", "D", "v", "P"]
    for ax, m in zip(axes, metrics):
        for k, ed in enumerate(editors):
            e = d[(d["editor"] == ed) & (d["metric"] == m)].sort_values("n_edits")
            if e.empty:
                continue
            # a small horizontal offset per editor keeps coinciding lines apart
            jitter = 1.0 + 0.03 * (k - (len(editors) - 1) / 2)
            ax.plot(e["n_edits"].astype(float) * jitter, e["value"].astype(float), marker=markers[k % len(markers)],
                    ms=3.5, lw=1.2, color=editor_color(ed), label=ed)
        ax.set_xscale("log", base=2)
        if ns:
            ax.set_xticks(ns, [str(n) for n in ns])
            ax.minorticks_off()
        ax.set_ylim(-4, 104)
        ax.set_title(m, fontsize=7.5)
        ax.set_xlabel("sequential edits")
    axes[0].set_ylabel(f"{form} score (%, {protocol})")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, frameon=False, loc="lower center", ncol=len(labels), fontsize=6.5,
                   bbox_to_anchor=(0.5, -0.02))
    if title:
        fig.suptitle(title, fontsize=8.5)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


__all__ = ["PROTOCOL_LABEL", "counts", "fmt", "fmt_cell", "has_intervals", "plot_metric_bars", "plot_overhead", "plot_sequential", "plot_similar_subjects",
           "results_markdown", "wrap", "HEADLINE_PROTOCOL", "PROTOCOL_ORDER"]


def plot_known_facts(scores: pd.DataFrame, by_relation: pd.DataFrame, title: str | None = None):
    """Left: true-fact recall per form (bars: gen exact match, token accuracy) with 95% intervals.
    Right: declarative recall per relation (share of its requests, n beside each bar).

    Args:
        scores: ``form, protocol, value, low, high, n, n_subjects`` (fractions).
        by_relation: ``relation, mean, size``.
    """
    from .style import FORM_COLORS

    setup()
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 2.8), gridspec_kw={"width_ratios": [1, 1.3]})
    ax = axes[0]
    forms = list(dict.fromkeys(scores["form"]))
    width = 0.38
    for j, (protocol, hatch) in enumerate((("starts_with", ""), ("token_acc", "//"))):
        d = scores[scores["protocol"] == protocol].set_index("form").reindex(forms)
        x = np.arange(len(forms)) + (j - 0.5) * width
        v = d["value"].to_numpy(float) * 100
        err = np.vstack([v - d["low"].to_numpy(float) * 100, d["high"].to_numpy(float) * 100 - v])
        bars = ax.bar(x, v, width, color=[FORM_COLORS.get(f, "#777777") for f in forms], hatch=hatch,
                      edgecolor="white", yerr=np.nan_to_num(err), capsize=2,
                      label="continuation starts with the answer" if protocol == "starts_with"
                      else "answer tokens that are the argmax")
        _bar_labels(ax, bars, v, tops=v + np.nan_to_num(err[1]))
    ax.set_xticks(np.arange(len(forms)), forms)
    ax.set_ylim(0, 115)
    ax.set_ylabel("true-fact recall (%)")
    n = scores["n"].max() if len(scores) else 0
    k = scores["n_subjects"].max() if len(scores) else 0
    ax.set_title(f"per form, 95% CI by subject (n={n} requests, {k} subjects)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=6, frameon=False)
    ax = axes[1]
    d = by_relation.sort_values("mean")
    y = np.arange(len(d))
    ax.barh(y, d["mean"].to_numpy(float) * 100, color=FORM_COLORS["declarative"], height=0.7)
    ax.set_yticks(y, [f"{r} (n={s})" for r, s in zip(d["relation"], d["size"])])
    ax.set_xlim(0, 105)
    ax.set_xlabel("declarative: continuation starts with the true answer (%)")
    ax.set_title("per relation")
    if title:
        fig.suptitle(wrap(title, 7.2), fontsize=8.5)
    fig.tight_layout()
    return fig
