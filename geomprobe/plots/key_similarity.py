"""Key-similarity figures (RoSE Fig. 4 / 11 heatmap, Fig. 13 / 14 layer curves)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import setup

HEATMAP_COLUMNS = ("label_a", "label_b", "value")
LAYER_COLUMNS = ("layer", "pair", "value")


def plot_key_heatmap(df: pd.DataFrame, title: str | None = None):
    """Heatmap of key cosines; ``df`` holds ``label_a, label_b, value`` for every ordered pair."""
    setup()
    labels = list(dict.fromkeys(df["label_a"]))
    M = df.pivot(index="label_a", columns="label_b", values="value").loc[labels, labels].to_numpy()
    fig, ax = plt.subplots(figsize=(3.6, 3.1))
    im = ax.imshow(M, vmin=min(0.0, float(np.nanmin(M))), vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if M[i, j] < 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="key cosine")
    ax.set_title(title or "Keys of one subject agree across forms; keys of two subjects do not")
    return fig


def plot_key_layers(df: pd.DataFrame, title: str | None = None):
    """Mean key cosine per layer for same-subject (across forms) and different-subject pairs, ±1 sd."""
    setup()
    fig, ax = plt.subplots(figsize=(3.6, 2.5))
    styles = {"same-subject": ("#009E73", "same subject, across forms"),
              "different-subject": ("#D55E00", "different subjects, same form")}
    for pair, (color, label) in styles.items():
        d = df[df["pair"] == pair].groupby("layer")["value"].agg(["mean", "std"]).reset_index()
        if d.empty:
            continue
        ax.plot(d["layer"], d["mean"], marker="o", ms=3, color=color, label=label)
        ax.fill_between(d["layer"], d["mean"] - d["std"], d["mean"] + d["std"], color=color, alpha=0.15, lw=0)
    ax.set_xlabel("layer")
    ax.set_ylabel("key cosine (mean ± sd)")
    ax.set_ylim(min(0, float(df["value"].min())) - 0.02, 1.0)
    ax.legend(frameon=False, loc="lower left")
    ax.set_title(title or "Same-subject keys stay aligned across forms at every layer")
    return fig
