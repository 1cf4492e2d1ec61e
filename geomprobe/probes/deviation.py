"""Activation deviation Δ = ‖ΔW_l (k_form − k_decl)‖ (RoSE Fig. 2b, 7, 10, 12, 17).

The prompt change from the declarative edit prompt to a question or an instruction moves the key by
``Δk``; the update turns that into an output deviation ``ΔW Δk``.  Besides the update's own ΔW, the same
keys and residuals (``update.keys[l]``, ``update.resids[l]``) are pushed through counterfactual update
rules so rules can be compared on identical inputs:

* ``covariance``: ``R Kᵀ (λC + KKᵀ)⁻¹`` (MEMIT), * ``identity``: ``R Kᵀ (αI + KKᵀ)⁻¹`` (IGA),
* ``projection``: AlphaEdit's null-space update,

solved by the editors' own registry (:func:`geomprobe.editors.rules.solve`).

Keys are read on the *unedited* model.  For multi-layer editors the closed form at layers after the first
saw keys of the partially edited model; upstream edits shift those keys slightly.
"""

from __future__ import annotations

from typing import Literal, Sequence, get_args

import pandas as pd
import torch

from ..data.forms import eval_prompts, render
from ..editors import rules as update_rules
from ..editors.config import EditorConfig
from ..editors.update import EditUpdate
from ..errors import GeomprobeError
from ..key_reads import keys
from ..models.load import LM
from ..stats import key_covariance

#: Counterfactual update rules (those of the registry that need no current weight).
Counterfactual = Literal["covariance", "identity", "projection"]
#: ``"update"`` (the update's own ΔW) and the counterfactual rules.
DeviationRule = Literal["update", "covariance", "identity", "projection"]
RULES: tuple[DeviationRule, ...] = get_args(DeviationRule)
assert all(not update_rules.get_rule(r).needs_weight for r in get_args(Counterfactual))


def counterfactual_delta(rule: Counterfactual, R: torch.Tensor, K: torch.Tensor, cfg: EditorConfig,
                         C: torch.Tensor | None = None) -> torch.Tensor:
    """ΔW (d, m) under ``rule`` for residuals ``R`` (d, n) and keys ``K`` (m, n), as the editors solve it
    (no earlier keys: AlphaEdit's ``K_prev`` is empty)."""
    if rule not in get_args(Counterfactual):
        raise GeomprobeError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}")
    if C is None and update_rules.get_rule(rule).needs_covariance:
        raise GeomprobeError(f"rule {rule!r} needs the key covariance C; pass covariances={{layer: C}}")
    return update_rules.solve(rule, R, K, cfg, C)


def form_key_pairs(lm: LM, update: EditUpdate, layers: Sequence[int], forms: Sequence[str]):
    """Declarative and form keys per request: rows of (request index, form, prompt index) and tensors
    ``k_decl`` (n, n_layers, m), ``k_form`` (n, n_layers, m)."""
    decl, other, index = [], [], []
    for i, r in enumerate(update.requests):
        d = render(r.prompt, r.subject, "declarative")
        for form in forms:
            for j, p in enumerate(eval_prompts(r, form, lm.tokenizer)):
                decl.append(d)
                other.append(p)
                index.append((i, form, j))
    if not index:
        raise GeomprobeError(f"no {'/'.join(forms)} prompts for these requests; add queries or relation templates")
    return index, keys(lm, decl, None, layers), keys(lm, other, None, layers)


def activation_deviation(lm: LM, update: EditUpdate, layers: Sequence[int] | None = None,
                         forms: Sequence[str] = ("question", "instruction"),
                         rules: Sequence[DeviationRule] = ("update",),
                         covariances: dict[int, torch.Tensor] | None = None,
                         config: EditorConfig | None = None) -> pd.DataFrame:
    """Δ per request, form prompt, layer and update rule.

    Args:
        lm: the unedited model the update was computed on.
        update: the edit.
        layers: layers to measure (default: the last edit layer); must be edited layers of ``update``.
        forms: the prompt forms compared with the declarative edit prompt.
        rules: ``"update"`` (the update's own ΔW) and/or counterfactual rules on the same K and R.
        covariances: ``{layer: C}`` for the covariance / projection rules (default: from :mod:`geomprobe.stats`).
        config: λ, α and projection settings for counterfactual rules (default: from the update's hparams).

    Returns:
        tidy DataFrame: ``editor, case_id, subject, relation, form, prompt_idx, layer, rule, metric
        ("activation_deviation"), value, dk_norm, k_norm``.
    """
    update.check_model(lm)
    layers = list(layers) if layers is not None else [update.layers[-1]]
    missing = [l for l in layers if l not in update.deltas]
    if missing:
        raise GeomprobeError(f"layers {missing} were not edited by this update (edited: {list(update.layers)})")
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        raise GeomprobeError(f"unknown rule {unknown[0]!r}; use one of {', '.join(RULES)}")
    if config is None:
        config = update.editor_config()
    need_c = [l for l in layers if any(r != "update" and update_rules.get_rule(r).needs_covariance for r in rules)]
    if need_c and covariances is None:
        stats = key_covariance(lm, need_c, corpus=config.corpus, n_tokens=config.n_tokens, max_len=config.max_len)
        covariances = {l: stats[l].C for l in need_c}
    index, k_decl, k_form = form_key_pairs(lm, update, layers, forms)
    rows = []
    for li, layer in enumerate(layers):
        dk = (k_form[:, li] - k_decl[:, li]).T  # (m, n)
        for rule in rules:
            if rule == "update":
                dW = update.deltas[layer].float().cpu()
            else:
                C = covariances.get(layer) if covariances else None
                dW = counterfactual_delta(rule, update.resids[layer], update.keys[layer], config,
                                          None if C is None else C.float().cpu()).cpu()
            dev = (dW @ dk).norm(dim=0)
            for n, (i, form, j) in enumerate(index):
                r = update.requests[i]
                rows.append({"editor": update.editor, "case_id": r.case_id, "subject": r.subject,
                             "relation": r.relation, "form": form, "prompt_idx": j, "layer": layer, "rule": rule,
                             "metric": "activation_deviation", "value": float(dev[n]),
                             "dk_norm": float(dk[:, n].norm()), "k_norm": float(k_decl[n, li].norm())})
    return pd.DataFrame(rows)
