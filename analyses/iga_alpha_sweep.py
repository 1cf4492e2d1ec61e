"""iga_alpha_sweep: RoSE's isotropic rule ``R Kᵀ (αI + KKᵀ)⁻¹`` at α ∈ {0.1, 1, 10, 50}: how much of R it
writes along the subject keys and what that does to efficacy and locality (the choice of the preset's α).

The RoSE paper says IGA adds no hyperparameter, but the identity system needs a ridge α: with one key the update
writes the share ``‖k‖² / (α + ‖k‖²)`` of R along it.  All α share one HKI value optimisation (same targets,
same prompts, same model state), so the rows differ only by α."""

from __future__ import annotations

import pandas as pd

from geomprobe.evaluate import evaluate
from geomprobe.pipeline import main
from geomprobe.plots.results import fmt
from geomprobe.tables import form_scores, model_of
from geomprobe.workspace import Workspace

ID = "iga_alpha_sweep"
PAPER = "RoSE §4.1 (IGA: 'no additional hyperparameter')"
WHAT = ("RoSE's isotropic update at α ∈ {0.1, 1, 10, 50}: written share of R at the last edit layer and "
        "efficacy / locality (%) on declarative, question and instruction prompts, one shared HKI optimisation.")
COLUMNS = ("alpha", "protocol", "form", "metric", "value", "n_requests")
ALPHAS = (0.1, 1.0, 10.0, 50.0)
PROTOCOL = "gen"


def compute(ws: Workspace) -> pd.DataFrame:
    reqs = ws.batch
    kw = ws.evaluation_settings(reqs)
    frames = []
    for a in ALPHAS:
        upd = ws.update("rose", alpha=a)
        L = upd.layers[-1]
        K, R, D = upd.keys[L].double(), upd.resids[L].double(), upd.deltas[L].double()
        share = ((D @ K) * R).sum(0) / (R * R).sum(0)  # ⟨ΔW k, r⟩ / ‖r‖² per column
        with upd.applied(ws.lm):
            e = evaluate(ws.lm, reqs, **kw)
        e.insert(0, "alpha", a)
        scores = form_scores(e, by=("alpha",))
        extra = pd.DataFrame([{"alpha": a, "protocol": "-", "form": "-", "metric": "write_share",
                               "value": 100 * float(share.median()), "n_requests": len(reqs)},
                              {"alpha": a, "protocol": "-", "form": "-", "metric": "key_norm_sq",
                               "value": float((K * K).sum(0).median()), "n_requests": len(reqs)}])
        frames += [scores, extra]
    df = pd.concat(frames, ignore_index=True)
    df.insert(0, "model", ws.lm.name)
    return df


def _pick(df: pd.DataFrame, metric: str, form: str, protocol: str = PROTOCOL) -> dict[float, float]:
    d = df[(df["metric"] == metric) & (df["form"] == form) & (df["protocol"] == protocol)]
    return dict(zip(d["alpha"], d["value"]))


def plot(df: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(6.8, 2.6))
    for form, style in (("declarative", "-o"), ("question", "-s"), ("instruction", "-^")):
        eff = _pick(df, "efficacy", form)
        axes[0].plot(list(eff), list(eff.values()), style, ms=3, lw=1, label=f"{form} efficacy")
    loc = _pick(df, "locality", "instruction")
    axes[0].plot(list(loc), list(loc.values()), "--", color="grey", lw=1, label="instruction locality")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("α")
    axes[0].set_ylabel(f"score (%, {PROTOCOL})")
    axes[0].legend(fontsize=6)
    share = _pick(df, "write_share", "-", "-")
    axes[1].plot(list(share), list(share.values()), "-o", ms=3, lw=1, color="C3")
    axes[1].set_xscale("log")
    axes[1].set_ylim(0, 105)
    axes[1].set_xlabel("α")
    axes[1].set_ylabel("written share of R at L (%, median)")
    kn = _pick(df, "key_norm_sq", "-", "-")
    n = int(df["n_requests"].max())
    fig.suptitle(f"{model_of(df)}: IGA ridge α (one HKI optimisation, n = {n} requests; median ‖k‖² "
                 f"{fmt(next(iter(kn.values()), float('nan')))})", fontsize=8)
    fig.tight_layout()
    return fig


def headline(df: pd.DataFrame) -> str:
    ins, dec = _pick(df, "efficacy", "instruction"), _pick(df, "efficacy", "declarative")
    loc, share = _pick(df, "locality", "instruction"), _pick(df, "write_share", "-", "-")
    n = int(df["n_requests"].max())
    parts = [f"α={a:g}: writes {fmt(share.get(a))}%, instruction/declarative efficacy {fmt(ins.get(a))}/"
             f"{fmt(dec.get(a))}, instruction locality {fmt(loc.get(a))}" for a in ALPHAS]
    return f"{PROTOCOL}, n = {n} requests: " + "; ".join(parts)


if __name__ == "__main__":
    main(__file__)
