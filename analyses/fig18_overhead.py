"""fig18_overhead: wall time and peak memory of one edit batch, per editor (RoSE Fig. 18, App. G)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from geomprobe.pipeline import main
from geomprobe.plots.results import fmt, plot_overhead
from geomprobe.tables import TIMES, first, model_of
from geomprobe.workspace import Workspace

ID = "fig18_overhead"
PAPER = "RoSE Fig. 18"
WHAT = ("Wall time (s) and peak memory of computing one same-subject edit batch, per editor (value optimisation "
        "included, also where the workspace reused another editor's targets).")
COLUMNS = ("editor", "seconds", "peak_memory_mb", "batch_size", "device")
#: RoSE Fig. 18: Qwen2.5-7B-Instruct, batch 4, one A100 (seconds, GB).
PAPER_FIG18 = {"rose": (13.1, 22.1), "memit-merge": (15.0, 24.7), "memit": (None, 24.7), "alphaedit": (41.6, None)}


def compute(ws: Workspace) -> pd.DataFrame:
    rows = []
    for name in [e for e in ws.settings.editors if e != "unedited"]:
        upd = ws.update(name)
        rows.append({"model": ws.lm.name, "editor": name, "seconds": float(upd.seconds),
                     "peak_memory_mb": float(upd.peak_memory_mb), "batch_size": len(upd.requests),
                     "n_subjects": len({r.subject for r in upd.requests}), "n_columns": len(upd.columns),
                     "layers": " ".join(str(l) for l in upd.layers), "value_reused": bool(upd.hparams.get("value_reused")),
                     "device": str(ws.lm.device_of(upd.layers[-1])), "dtype": upd.dtype})
    return pd.DataFrame(rows)


def _get(df: pd.DataFrame, ed: str, col: str) -> float:
    v = df.loc[df["editor"] == ed, col]
    return float(v.iloc[0]) if len(v) and np.isfinite(v.iloc[0]) else float("nan")


def plot(df: pd.DataFrame):
    model = model_of(df)
    r, m = _get(df, "rose", "seconds"), _get(df, "memit-merge", "seconds")
    if np.isfinite(r) and np.isfinite(m) and m > 0:
        ratio = r / m
        if ratio >= TIMES:
            how = f"{ratio:.1f}× slower"
        elif ratio <= 1 / TIMES:
            how = f"{1 / ratio:.1f}× faster"
        else:
            how = f"{abs(1 - ratio) * 100:.0f}% {'faster' if r < m else 'slower'}"
        verdict = f"RoSE {how} than MEMIT-Merge ({r:.3g} vs {m:.3g} s)"
    else:
        fastest = df.loc[df["seconds"].astype(float).idxmin(), "editor"]
        verdict = f"fastest: {fastest}"
    title = (f"{model}, batch {int(df['batch_size'].iloc[0])}, {df['device'].iloc[0]} "
             f"{first(df, 'dtype')}: {verdict}")
    return plot_overhead(df, title=title)


def headline(df: pd.DataFrame) -> str:
    dev = f"{df['device'].iloc[0]}, batch {int(df['batch_size'].iloc[0])}"
    parts = []
    for ed in ("rose", "memit-merge", "alphaedit"):
        ps, pm = PAPER_FIG18[ed]
        parts.append(f"{ed} {fmt(_get(df, ed, 'seconds'), 2)} s / {fmt(_get(df, ed, 'peak_memory_mb'), 0)} MB "
                     f"(paper {ps if ps is not None else '–'} s / {pm if pm is not None else '–'} GB)")
    return f"per edit batch ({dev}): " + "; ".join(parts) + " — paper: 7B model, batch 4, A100"


if __name__ == "__main__":
    main(__file__)
