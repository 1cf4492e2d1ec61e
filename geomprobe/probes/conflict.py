"""Gradient-conflict score between the relations of one subject: ``1 − |cos(g_i, g_j)|`` (RoSE Fig. 3, 9).

``g_r = ∇_δ NLL_r`` is the gradient of relation r's loss with respect to the subject's shared δ at the
last edit layer.  Value optimisation records these gradients (``ValueResult.relation_grads``) at step 0
and every few steps, so the score is available at the start of optimisation and along it.
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import pandas as pd
import torch

from ..data.requests import EditRequest
from ..editors.update import EditUpdate
from ..editors.value import ValueConfig, optimize_values
from ..errors import GeomprobeError
from ..models.load import LM


def conflict_score(g_i: torch.Tensor, g_j: torch.Tensor) -> float:
    """``1 − |cos(g_i, g_j)|``: 0 for (anti)parallel gradients, 1 for orthogonal ones."""
    g_i, g_j = g_i.double().flatten(), g_j.double().flatten()
    if g_i.shape != g_j.shape:
        raise GeomprobeError(f"gradients of different sizes {tuple(g_i.shape)} and {tuple(g_j.shape)}")
    if not (torch.isfinite(g_i).all() and torch.isfinite(g_j).all()):
        raise GeomprobeError("gradient holds NaN/Inf; the loss diverged — use float32 or a smaller lr")
    ni, nj = g_i.norm(), g_j.norm()
    if ni == 0 or nj == 0:
        raise GeomprobeError("a relation gradient is exactly zero (target already certain?); the conflict is undefined")
    return float(1.0 - (g_i @ g_j).abs() / (ni * nj))


def conflict_table(relation_grads: dict[int, dict[tuple[str, str], torch.Tensor]], editor: str = "") -> pd.DataFrame:
    """Tidy pairwise scores from recorded gradients ``{step: {(subject, relation): g}}``.

    Columns: ``editor, subject, relation_a, relation_b, step, metric ("gradient_conflict"), value, cosine``.
    """
    rows = []
    for step, grads in sorted(relation_grads.items()):
        by_subject: dict[str, list[tuple[str, torch.Tensor]]] = {}
        for (subject, relation), g in grads.items():
            by_subject.setdefault(subject, []).append((relation, g))
        for subject, items in by_subject.items():
            for (ra, ga), (rb, gb) in combinations(items, 2):
                score = conflict_score(ga, gb)
                cos = float((ga.double() @ gb.double()) / (ga.double().norm() * gb.double().norm()))
                rows.append({"editor": editor, "subject": subject, "relation_a": ra, "relation_b": rb, "step": step,
                             "metric": "gradient_conflict", "value": score, "cosine": cos})
    return pd.DataFrame(rows, columns=["editor", "subject", "relation_a", "relation_b", "step", "metric", "value",
                                       "cosine"])


def gradient_conflict(lm: LM | None = None, requests: Sequence[EditRequest] | None = None, layer: int | None = None,
                      update: EditUpdate | None = None, config: ValueConfig | None = None) -> pd.DataFrame:
    """Pairwise gradient conflicts between the relations of each subject.

    Either from an ``update`` of a merged editor (its recorded gradients, steps along optimisation), or
    computed afresh at the start of joint optimisation for ``requests`` at ``layer`` (one step, no update).
    """
    if update is not None:
        if update.value is None:
            raise GeomprobeError("this update holds no recorded gradients; compute it with a geomprobe editor")
        return conflict_table(update.value.relation_grads, update.editor)
    if lm is None or not requests or layer is None:
        raise GeomprobeError("pass update=..., or lm, requests and layer")
    cfg = config or ValueConfig()
    res = optimize_values(lm, list(requests), layer, "joint", ValueConfig(**{**cfg.__dict__, "steps": 1}))
    return conflict_table({0: res.relation_grads[0]}, "joint@start")
