"""fig04_key_similarity: key cosines of two subjects × three forms at the last edit layer (RoSE Fig. 4, 11)."""

from __future__ import annotations

import pandas as pd

from geomprobe.pipeline import main
from geomprobe.plots import plot_key_heatmap
from geomprobe.probes.key_heatmap import key_heatmap
from geomprobe.tables import SEPARATED, model_of, versus
from geomprobe.workspace import Workspace

ID = "fig04_key_similarity"
PAPER = "RoSE Fig. 4, 11"
WHAT = "Key cosines of two subjects in declarative / question / instruction form at the last edit layer."
COLUMNS = ("layer", "label_a", "label_b", "subject_a", "subject_b", "value")


def compute(ws: Workspace) -> pd.DataFrame:
    df = key_heatmap(ws.lm, ws.batch, ws.edit_layer)
    df.insert(0, "model", ws.lm.name)
    return df


def _means(df: pd.DataFrame) -> tuple[float, float]:
    off = df[df["label_a"] != df["label_b"]]
    same = off[off["subject_a"] == off["subject_b"]]["value"].mean()
    diff = off[off["subject_a"] != off["subject_b"]]["value"].mean()
    return float(same), float(diff)


def plot(df: pd.DataFrame):
    same, diff = _means(df)
    separated = versus(same, diff, SEPARATED, margin=True) > 0
    verdict = "keys agree across forms, not subjects" if separated else "forms and subjects not separated"
    model = model_of(df)
    return plot_key_heatmap(df, title=f"{model} layer {int(df['layer'].iloc[0])}: {verdict}")


def headline(df: pd.DataFrame) -> str:
    same, diff = _means(df)
    return f"same subject across forms {same:.2f}, different subjects {diff:.2f} (paper 0.88-0.92 vs ~0.04)"


if __name__ == "__main__":
    main(__file__)
