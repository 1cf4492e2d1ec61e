"""Geometry / spectral figures: key orthogonality across layers (RoSE Fig. 13/14), gradient conflict (RoSE
Fig. 3/9), covariance spectrum (RoSE App. A), whitened key similarity (REP Fig. 3), singular-subspace drift and
spectral energy (REVIVE).  Every function takes the tidy DataFrame of its analysis and returns a Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .key_similarity import plot_key_layers
from .style import FORM_COLORS, OKABE_ITO, editor_color, setup

#: whitened-similarity variants, in display order
VARIANTS = ("paraphrase", "long-context", "other-subject")
METRIC_COLORS = {"cosine": "#56B4E9", "whitened_similarity": "#D55E00"}


def _wrap(title: str | None, width: int) -> str | None:
    """Break a long computed title at word boundaries so it fits a paper-column figure."""
    import textwrap

    return None if title is None else "\n".join(textwrap.wrap(title, width))


def _finite(x) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    return a[np.isfinite(a)]


# ---- RoSE Fig. 13 / 14 ------------------------------------------------------------------------------
def plot_key_orthogonality(df: pd.DataFrame, edit_layer: int | None = None, title: str | None = None):
    """Key cosine per layer (same subject across forms vs different subjects), the edit layer marked and the
    paper's values (0.88-0.92 and ≈ 0.04, 7-8B models) drawn as reference bands."""
    fig = plot_key_layers(df, title=_wrap(title, 62))
    ax = fig.axes[0]
    ax.axhspan(0.88, 0.92, color="#009E73", alpha=0.10, lw=0)
    ax.axhline(0.04, color="#D55E00", lw=0.8, ls=":", alpha=0.8)
    x1 = float(df["layer"].max())
    ax.text(x1, 0.90, "paper ", fontsize=6, color="#009E73", ha="right", va="center")
    ax.text(x1, 0.06, "paper ", fontsize=6, color="#D55E00", ha="right", va="bottom")
    if edit_layer is not None:
        ax.axvline(edit_layer, color="0.4", lw=0.8, ls="--")
        ax.text(edit_layer, 0.99, " edit layer", fontsize=6, color="0.3", ha="left", va="top")
    layers = sorted(df["layer"].unique())
    if len(layers) <= 16:
        ax.set_xticks(layers)
    ax.set_xlabel("layer (rewrite-module input)")
    ax.set_ylabel("key cosine (mean ± sd over pairs)")
    ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=6.5)
    return fig


# ---- RoSE Fig. 3 / 9 --------------------------------------------------------------------------------
def plot_gradient_conflict(matrix: pd.DataFrame, counts: pd.DataFrame, per_step: pd.DataFrame,
                           editor: str | None = None, title: str | None = None):
    """Heatmap of the first step's conflict score (relation × relation ``matrix``, mean over subjects, with the
    subject ``counts``; :func:`geomprobe.tables.conflict_matrix`) and the mean ± sd along optimisation
    (``per_step``: ``step, mean, std``; :func:`geomprobe.tables.conflict_by_step`)."""
    setup()
    M, N = matrix, counts
    steps = sorted(per_step["step"].unique())
    n = len(M)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(6.4, 2.9), gridspec_kw={"width_ratios": [1.35, 1]})
    vals = np.array(M.to_numpy(dtype=float), copy=True)
    for i in range(n):
        vals[i, i] = np.nan
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("#eeeeee")
    im = ax.imshow(np.ma.masked_invalid(vals), vmin=0, vmax=1, cmap=cmap)
    labels = [str(r).replace("_", " ") for r in M.index]
    ax.set_xticks(range(n), labels, rotation=40, ha="right")
    ax.set_yticks(range(n), labels)
    for i in range(n):
        for j in range(n):
            if i == j or not np.isfinite(vals[i, j]):
                continue
            ax.text(j, i, f"{vals[i, j]:.2f}\nn={int(N.iloc[i, j])}", ha="center", va="center",
                    fontsize=5.5 if n > 4 else 6.5, color="white" if vals[i, j] < 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="conflict 1 − |cos(gᵢ, gⱼ)|")
    ax.set_title(f"step {int(steps[0])}: mean over subjects", fontsize=7.5)

    per = per_step
    c = editor_color(str(editor)) if editor is not None else OKABE_ITO[1]
    ax2.axhspan(0.85, 0.90, color="0.6", alpha=0.2, lw=0, label="paper (0.85-0.90)")
    ax2.errorbar(per["step"], per["mean"], yerr=per["std"].fillna(0), color=c, marker="o", ms=3, capsize=2, lw=1.2,
                 label=f"{editor if editor is not None else 'joint'} (mean ± sd)")
    ax2.set_ylim(0, 1.05)
    ax2.set_xlabel("value-optimisation step")
    ax2.set_ylabel("gradient-conflict score")
    if len(steps) > 1:
        ax2.set_xticks(steps)
    else:
        ax2.set_xlim(steps[0] - 1, steps[0] + 1)
    ax2.legend(frameon=False, loc="lower right", fontsize=6)
    ax2.set_title("along optimisation", fontsize=7.5)
    fig.suptitle(title or "Relation gradients of one subject are near-orthogonal", fontsize=8.5)
    fig.tight_layout()
    return fig


# ---- RoSE App. A ------------------------------------------------------------------------------------
def plot_cov_spectrum(df: pd.DataFrame, title: str | None = None):
    """(a) eigenvalues of C per edit layer (log scale; κ and effective rank in the legend); (b) cumulative share
    of ‖Δk‖² over C's eigen-directions (descending variance) per form against the cumulative variance share;
    the amplification ‖ΔW_C Δk‖/‖ΔW_I Δk‖ in the legend."""
    setup()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(6.8, 2.7))
    ev = df[df["kind"] == "eigenvalue"]
    summ = df[df["kind"] == "summary"].pivot_table(index="layer", columns="metric", values="value")
    layers = sorted(ev["layer"].unique())
    cmap = plt.get_cmap("viridis")
    for i, layer in enumerate(layers):
        d = ev[ev["layer"] == layer].sort_values("rank")
        v = d["value"].to_numpy(dtype=float)
        pos = v > 0
        kappa = summ.loc[layer, "condition_number"] if "condition_number" in summ else np.nan
        eff = summ.loc[layer, "effective_rank"] if "effective_rank" in summ else np.nan
        col = cmap(0.1 + 0.75 * i / max(1, len(layers) - 1))
        ax.plot(d["rank"].to_numpy()[pos], v[pos], color=col, lw=1.1,
                label=f"layer {int(layer)}: κ {kappa:.1e}, eff. rank {eff:.0f}")
    ax.set_yscale("log")
    ax.set_xlabel("eigen-direction (descending variance)")
    ax.set_ylabel("eigenvalue of C (key units²)")
    ax.legend(frameon=False, fontsize=6, loc="lower left")
    ax.set_title("spectrum of the key covariance", fontsize=7.5)

    en = df[df["kind"] == "dk_energy"]
    drift = df[df["kind"] == "drift"]
    if not en.empty:
        L = int(en["layer"].iloc[0])
        d = ev[ev["layer"] == L].sort_values("rank")
        m = len(d)
        x = d["rank"].to_numpy(dtype=float) / max(m, 1)
        var = d["value"].to_numpy(dtype=float)
        ax2.plot(x, np.cumsum(var) / max(var.sum(), 1e-30), color="0.3", lw=1.1, label="variance of C")
        for form, g in en.groupby("form", sort=False):
            g = g.sort_values("rank")
            amp = drift[(drift["form"] == form) & (drift["metric"] == "amplification")]["value"]
            amp_txt = f", C/I ×{amp.median():.3g}" if len(amp) else ""
            ax2.plot(g["rank"].to_numpy(dtype=float) / max(len(g), 1), np.cumsum(g["value"].to_numpy(dtype=float)),
                     color=FORM_COLORS.get(form, OKABE_ITO[0]), lw=1.3, label=f"Δk {form}{amp_txt}")
        low = float(df["low_share"].iloc[0]) if "low_share" in df else 0.5
        ax2.axvline(1 - low, color="0.5", lw=0.7, ls=":")
        ax2.text(1 - low, 0.03, " low-variance\n directions →", fontsize=6, color="0.35", va="bottom")
        ax2.plot([0, 1], [0, 1], color="0.7", lw=0.7, ls="--", label="isotropic drift")
        ax2.set_xlim(0, 1)
        ax2.set_ylim(0, 1.02)
        ax2.set_title(f"where Δk falls (layer {L})", fontsize=7.5)
        ax2.legend(frameon=False, fontsize=6, loc="center right")
    else:
        ax2.text(0.5, 0.5, "no key drift measured", ha="center", va="center", transform=ax2.transAxes)
    ax2.set_xlabel("fraction of eigen-directions (descending variance)")
    ax2.set_ylabel("cumulative share")
    fig.suptitle(title or "The key covariance is ill-conditioned", fontsize=8.5)
    fig.tight_layout()
    return fig


# ---- REP Fig. 3 ------------------------------------------------------------------------------------
def plot_whitened_similarity(df: pd.DataFrame, title: str | None = None):
    """Distributions (box + points) of plain cosine and whitened similarity to the original edit key, per key
    variant (paraphrase, long-context, other subject)."""
    setup()
    fig, ax = plt.subplots(figsize=(4.2, 2.7))
    variants = [v for v in VARIANTS if v in set(df["variant"])] + \
        [v for v in dict.fromkeys(df["variant"]) if v not in VARIANTS]
    metrics = [m for m in ("cosine", "whitened_similarity") if m in set(df["metric"])]
    width = 0.36
    rng = np.random.default_rng(0)
    for j, metric in enumerate(metrics):
        off = (j - (len(metrics) - 1) / 2) * width
        data = [_finite(df[(df["variant"] == v) & (df["metric"] == metric)]["value"]) for v in variants]
        pos = [i + off for i in range(len(variants))]
        keep = [k for k, d in enumerate(data) if len(d)]
        if keep:
            bp = ax.boxplot([data[k] for k in keep], positions=[pos[k] for k in keep], widths=width * 0.8,
                            patch_artist=True, showfliers=False, medianprops={"color": "black", "lw": 1})
            for b in bp["boxes"]:
                b.set_facecolor(METRIC_COLORS[metric])
                b.set_alpha(0.55)
        for k in keep:
            ax.scatter(pos[k] + rng.uniform(-width * 0.25, width * 0.25, len(data[k])), data[k], s=5,
                       color=METRIC_COLORS[metric], edgecolor="none", alpha=0.9, zorder=3)
        ax.plot([], [], "s", color=METRIC_COLORS[metric], alpha=0.7,
                label={"cosine": "cosine", "whitened_similarity": "whitened (C⁻¹ metric)"}[metric])
    ax.set_xticks(range(len(variants)), [v.replace("-", "-\n", 1) if len(v) > 12 else v for v in variants])
    ax.set_xlim(-0.6, len(variants) - 0.4)
    lo = float(np.nanmin(df["value"])) if len(_finite(df["value"])) else 0.0
    ax.set_ylim(min(0.0, lo) - 0.05, 1.05)
    ax.axhline(0, color="0.7", lw=0.6)
    ax.set_ylabel("similarity to the edit key")
    layer = df["layer"].dropna()
    ax.set_xlabel(f"key compared with the edit prompt's key (layer {int(layer.iloc[0])})" if len(layer)
                  else "key compared with the edit prompt's key")
    ax.legend(frameon=False, fontsize=6.5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(_wrap(title, 70) or "Whitened similarity of perturbed keys")
    return fig


# ---- REVIVE: subspace drift ------------------------------------------------------------------------
def _editor_style(name: str) -> dict:
    revive = name.startswith("revive(")
    return {"color": editor_color(name), "ls": "--" if revive else "-", "marker": "s" if revive else "o",
            "ms": 3, "lw": 1.2, "mfc": "white" if revive else editor_color(name)}


def plot_spectral_drift(df: pd.DataFrame, title: str | None = None):
    """Four panels vs number of sequential edits: LS_k, mean SS_i over the top directions, ‖W_t‖/‖W₀‖ and
    held-out perplexity; solid = editor, dashed/open = the editor wrapped in REVIVE."""
    setup()
    fig, axes = plt.subplots(1, 4, figsize=(7.2, 2.6))
    k = int(df["k"].dropna().iloc[0]) if "k" in df and df["k"].notna().any() else None
    nd = df[df["metric"] == "SS"]["index"].nunique()
    panels = [("LS_k", f"LS_k (top-{k} subspace)" if k else "LS_k"),
              ("SS", f"SS_i (mean of top {nd} directions)"),
              ("norm_ratio", "‖Wₜ‖ / ‖W₀‖ (Frobenius)"),
              ("perplexity", "held-out perplexity")]
    editors = list(dict.fromkeys(df["editor"]))
    for ax, (metric, label) in zip(axes, panels):
        for e in editors:
            d = df[(df["editor"] == e) & (df["metric"] == metric)].groupby("step")["value"].mean()
            if d.empty:
                continue
            ax.plot(d.index, d.to_numpy(), label=e, **_editor_style(e))
        ax.set_xlabel("sequential edits")
        ax.set_ylabel(label)
        steps = sorted(df["step"].unique())
        if len(steps) <= 8:
            ax.set_xticks(steps)
        if metric in ("LS_k", "SS"):
            vals = _finite(df[df["metric"] == metric]["value"])
            ax.set_ylim(min(0.0, vals.min() if len(vals) else 0.0) - 0.02, 1.02)
        if metric in ("norm_ratio", "perplexity"):
            vals = _finite(df[df["metric"] == metric]["value"])
            if len(vals) and vals.min() > 0 and (metric == "perplexity" or vals.max() / vals.min() > 20):
                ax.set_yscale("log")
            elif metric == "norm_ratio":
                ax.ticklabel_format(axis="y", useOffset=False)
        if metric == "norm_ratio":
            ax.axhline(1, color="0.7", lw=0.6)
    h, lab = axes[0].get_legend_handles_labels()
    fig.legend(h, lab, loc="lower center", ncol=min(len(lab), 6), frameon=False, fontsize=6.5,
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title or "Dominant singular directions erode with sequential edits", fontsize=8.5)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


# ---- REVIVE: spectral energy -----------------------------------------------------------------------
def plot_spectral_energy(df: pd.DataFrame, ret: pd.DataFrame, title: str | None = None):
    """(a) retained share of ability (``ret``: :func:`geomprobe.tables.retained`) and spectral-energy share vs
    top-p% singular components kept (REVIVE's 62.6% at 5% marked); (b) the raw perplexity and true-fact numbers."""
    setup()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(6.8, 2.7))
    names = {"perplexity": "ability (perplexity)", "true_token_acc": "true-fact token acc",
             "true_prob": "P(true answer)"}
    colors = {"perplexity": "#0072B2", "true_token_acc": "#009E73", "true_prob": "#CC79A7"}
    pos = sorted(p for p in df["percent"].unique() if p > 0)
    for metric, g in ret.groupby("metric", sort=False):
        g = g[g["percent"] > 0].sort_values("percent")
        if not np.isfinite(g["retained"]).any():
            continue
        ax.plot(g["percent"], g["retained"], marker="o", ms=3, lw=1.2, color=colors.get(metric), label=names[metric])
    en = df[(df["metric"] == "energy_share") & (df["percent"] > 0)].groupby("percent")["value"].mean()
    if len(en):
        ax.plot(en.index, en.to_numpy(), color="0.35", ls="--", lw=1.1, marker="^", ms=3, label="spectral energy")
    ax.scatter([5], [0.626], marker="*", s=60, color="#E69F00", zorder=4, label="REVIVE paper (5%, 62.6%)")
    ax.axhline(1, color="0.7", lw=0.6)
    ax.axhline(0, color="0.7", lw=0.6)
    ax.set_xscale("log")
    ax.set_xticks(pos, [f"{p:g}" for p in pos])
    ax.set_xlabel("top singular components kept (% of rank)")
    ax.set_ylabel("share kept (0: layers zeroed, 1: full)")
    vals = _finite(ret["retained"]) if len(ret) else np.array([])
    top = max(1.1, vals.max() + 0.05 if len(vals) else 1)
    ax.set_ylim(min(-0.05, vals.min() - 0.05 if len(vals) else 0), top + 0.55)  # headroom for the legend
    ax.set_yticks([t for t in (0, 0.25, 0.5, 0.75, 1.0) if t <= top])
    ax.legend(frameon=False, fontsize=6, loc="upper left", ncol=2)
    ax.set_title("share of ability and of energy kept", fontsize=7.5)

    ppl = df[df["metric"] == "perplexity"].groupby("percent")["value"].mean()
    if len(ppl):
        ax2.plot(ppl[ppl.index > 0].index, ppl[ppl.index > 0].to_numpy(), marker="o", ms=3, color="#0072B2",
                 label="held-out perplexity")
        if 0 in ppl.index:
            ax2.axhline(ppl[0], color="#0072B2", ls=":", lw=0.8, label="edit layers zeroed")
        ax2.set_yscale("log")
    ax2.set_xscale("log")
    ax2.set_xticks(pos, [f"{p:g}" for p in pos])
    ax2.set_xlabel("top singular components kept (% of rank)")
    ax2.set_ylabel("perplexity (held-out facts)")
    acc = df[df["metric"] == "true_token_acc"].groupby("percent")["value"].mean()
    h, lab = ax2.get_legend_handles_labels()
    if len(acc):
        ax3 = ax2.twinx()
        ax3.spines["right"].set_visible(True)
        ax3.plot(acc[acc.index > 0].index, acc[acc.index > 0].to_numpy(), marker="s", ms=3, color="#009E73",
                 label="true-fact token acc")
        ax3.set_ylim(-0.02, 1.02)
        ax3.set_ylabel("true-fact token accuracy")
        h2, l2 = ax3.get_legend_handles_labels()
        h, lab = h + h2, lab + l2
    ax2.legend(h, lab, frameon=False, fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3)
    ax2.set_title("raw numbers", fontsize=7.5)
    fig.suptitle(_wrap(title, 95) or "General ability concentrates in the top singular components", fontsize=8.5)
    fig.tight_layout()
    return fig
