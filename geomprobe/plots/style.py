"""One look for every figure: colour-blind-safe palette (Okabe–Ito), one colour per editor."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: Okabe–Ito palette
OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]

EDITOR_COLORS = {
    "memit": "#0072B2", "memit-merge": "#D55E00", "alphaedit": "#CC79A7", "rome": "#56B4E9",
    "rose": "#009E73", "rose-no-iga": "#E69F00", "rose-no-hki": "#F0E442", "unedited": "#000000",
}
FORM_COLORS = {"declarative": "#0072B2", "question": "#E69F00", "instruction": "#D55E00", "paraphrase": "#009E73"}


def editor_color(name: str) -> str:
    base = name[len("revive("):-1] if name.startswith("revive(") else name
    return EDITOR_COLORS.get(base, "#777777")


def setup() -> None:
    plt.rcParams.update({
        "figure.dpi": 150, "savefig.dpi": 200, "font.size": 8, "axes.titlesize": 8.5, "axes.labelsize": 8,
        "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False,
        "axes.spines.right": False, "savefig.bbox": "tight",
    })


def save(fig, out_stem) -> list[str]:
    """Write ``<stem>.png`` and ``<stem>.pdf``; returns the paths."""
    paths = [f"{out_stem}.png", f"{out_stem}.pdf"]
    for p in paths:
        fig.savefig(p)
    plt.close(fig)
    return paths
