"""cov_spectrum: eigenvalue spectrum of the key covariance C per edit layer and where the prompt drift Δk
falls in it (RoSE App. A, the Covariance Trap)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

import geomprobe as gp
from geomprobe.pipeline import main
from geomprobe.plots.spectral import plot_cov_spectrum
from geomprobe.tables import ILL_CONDITIONED, model_of
from geomprobe.probes.deviation import form_key_pairs
from geomprobe.workspace import Workspace

ID = "cov_spectrum"
PAPER = "RoSE App. A (Eq. 9-12)"
WHAT = ("Eigenvalues of the key covariance C at each edit layer (log scale) with condition number and effective "
        "rank, and how the question / instruction key drift Δk of the MEMIT-Merge edit spreads over C's "
        "eigen-directions: its share on low-variance directions and the amplification ‖ΔW_C Δk‖ / ‖ΔW_I Δk‖.")
COLUMNS = ("kind", "layer", "metric", "rank", "form", "value")
EDITOR = "memit-merge"
FORMS = ("question", "instruction")
LOW_SHARE = 0.5  # the lowest half of the eigen-directions counts as "low variance"


def compute(ws: Workspace) -> pd.DataFrame:
    lm, cfg = ws.lm, ws.config
    covs = ws.covariance(cfg.layers)
    parts = []
    for layer, C in covs.items():
        spec = gp.probes.covariance_spectrum(C, layer=layer, low_share=LOW_SHARE)
        spec["kind"] = np.where(spec["metric"] == "eigenvalue", "eigenvalue", "summary")
        parts.append(spec)
    # the drift of the shared edit at its last layer
    upd = ws.update(EDITOR)
    L = upd.layers[-1]
    index, k_decl, k_form = form_key_pairs(lm, upd, [L], FORMS)
    dk = (k_form[:, 0] - k_decl[:, 0]).T  # (m, n)
    C = covs[L] if L in covs else ws.covariance([L])[L]
    drift = gp.probes.drift_in_spectrum(C, dk, upd.resids[L], upd.keys[L], cfg.lam, cfg.alpha,
                                        low_share=LOW_SHARE, layer=L)
    drift["form"] = [f for _, f, _ in index]
    drift["case_id"] = [upd.requests[i].case_id or upd.requests[i].subject for i, _, _ in index]
    drift["dk_norm"] = dk.norm(dim=0).numpy()
    drift["k_norm"] = k_decl[:, 0].norm(dim=1).numpy()
    long = drift.melt(id_vars=["layer", "drift", "form", "case_id"],
                      value_vars=["low_variance_share", "amplification", "deviation_covariance",
                                  "deviation_identity", "dk_norm", "k_norm"], var_name="metric")
    long["kind"] = "drift"
    parts.append(long)
    # energy of Δk per eigen-direction (descending variance), mean over the drifts of each form
    evals, evecs = torch.linalg.eigh(C.double().cpu())
    evecs = evecs.flip(1)
    energy = (evecs.T @ dk.double()).pow(2)
    energy = energy / energy.sum(0, keepdim=True).clamp_min(1e-30)
    forms = np.array([f for _, f, _ in index])
    for form in FORMS:
        cols = np.flatnonzero(forms == form)
        if len(cols):
            share = energy[:, cols].mean(1).numpy()
            parts.append(pd.DataFrame({"kind": "dk_energy", "layer": L, "metric": "dk_energy_share", "form": form,
                                       "rank": np.arange(1, len(share) + 1), "value": share}))
    df = pd.concat(parts, ignore_index=True)
    df.insert(0, "model", lm.name)
    df["editor"] = EDITOR
    df["lam"], df["alpha"], df["low_share"] = cfg.lam, cfg.alpha, LOW_SHARE
    return df[["model", "editor", "kind", "layer", "metric", "rank", "form", "case_id", "drift", "value", "share",
               "low_share", "lam", "alpha"]]


def summary(df: pd.DataFrame) -> dict:
    s = df[df["kind"] == "summary"].pivot_table(index="layer", columns="metric", values="value")
    dim = df[df["kind"] == "eigenvalue"].groupby("layer")["rank"].max()
    d = df[df["kind"] == "drift"]
    L = int(d["layer"].iloc[0]) if len(d) else int(s.index.max())
    med = d.groupby("metric")["value"].median()
    return {"layer": L, "cond": s.get("condition_number", pd.Series(dtype=float)),
            "eff": s.get("effective_rank", pd.Series(dtype=float)), "dim": dim,
            "low": float(med.get("low_variance_share", np.nan)), "amp": float(med.get("amplification", np.nan)),
            "low_share": float(df["low_share"].iloc[0]) if "low_share" in df else LOW_SHARE}


def plot(df: pd.DataFrame):
    s = summary(df)
    L = s["layer"]
    cond = s["cond"].get(L, np.nan)
    if cond == cond and cond > ILL_CONDITIONED:
        first = f"C ill-conditioned (κ = {cond:.1e} at layer {L})"
    else:
        first = f"C moderately conditioned (κ = {cond:.1e} at layer {L})"
    if s["amp"] == s["amp"]:
        verb = "amplifies" if s["amp"] > 1 else "damps"
        second = f"C {verb} Δk ×{s['amp']:.2g} vs I"
    else:
        second = "no drift measured"
    model = model_of(df)
    return plot_cov_spectrum(df, title=f"{model}: {first}; {second}")


def headline(df: pd.DataFrame) -> str:
    s = summary(df)
    L = s["layer"]
    per = ", ".join(f"L{int(l)} κ {s['cond'].get(l, np.nan):.1e} eff. rank {s['eff'].get(l, np.nan):.0f}/"
                    f"{int(s['dim'].get(l, 0))}" for l in s["cond"].index)
    return (f"{per}; Δk at L{L}: median {s['low']:.2f} of energy on the low-variance half (isotropic 0.50), "
            f"amplification ‖ΔW_C Δk‖/‖ΔW_I Δk‖ median ×{s['amp']:.2g} (paper: heavy-tailed, ill-conditioned C "
            "amplifies Δk)")


if __name__ == "__main__":
    main(__file__)
