"""Does the optimised value transfer to other prompt forms?  Patching tests on (L, subject's last token) (issue 11).

For each request and each form prompt (declarative = the edit prompt; question / instruction from
:func:`~geomprobe.data.forms.eval_prompts`), with ``h_form`` the *unedited* residual after the last edit layer
``L`` at the subject's last token and ``δ`` the request's optimised value
(:func:`~geomprobe.probes.edit_drift.request_deltas`):

* ``patched``: the **unedited** model with its residual at (L, subject) set to ``h_form + δ`` (i.e. ``δ`` added
  there) — is the read side able to use the exact value on this prompt?
* the **δ-scaling curve**: the same with ``s·δ`` for ``s`` in ``scales`` (default 0, 0.5, 1, 1.5, 2, 3);
  ``crossing_scale`` is the smallest scale that succeeds (NaN if none).
* ``edited``: the **edited** model (update applied) as it is;
* ``edited_patched``: the edited model with its residual at (L, subject) *overridden* by the unedited
  ``h_form + δ`` (every other column and every earlier layer keeps the edited model's state) — does delivering
  ``δ`` exactly rescue the edited model?

Success is the ``criterion`` of :mod:`geomprobe.probes.tolerance`: ``"prob"`` — ``P(target_new) > threshold``
(the teacher-forced probability of the whole target sequence); ``"beats-true"`` — ``P(target_new) >
P(target_true)``; ``"argmax"`` — every target token the argmax; ``"auto"`` — ``"beats-true"`` for requests with
a ``target_true``, ``"prob"`` otherwise.  The ``criterion`` column records the rule each row used.  The target
is ``target_new`` on every form (the value was optimised for it).

Every perturbed forward is prefix-cached (:mod:`geomprobe.prefix`): per prompt, the residual after block ``L``
and the prefix's keys/values are computed once, and one batched forward re-runs blocks ``L+1..`` on the
columns from the subject's last token on, one row per perturbation (unperturbed, ``δ``, each scale).  The
edited model gets its own prefix (its edited layers ``≤ L`` change the prefix's states) and one 2-row forward
(as is, patched).  Weights are restored bit-exactly and no hook is left behind.
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
import torch

from .. import prefix
from ..editors.update import EditUpdate
from ..errors import GeomprobeError
from ..models.load import LM
from .edit_drift import FORMS, FormPrompt, form_prompts, request_deltas
from .tolerance import _Prompt, check_criterion, label, prime, request_criterion

__all__ = ["SCALES", "delta_scaling", "patch_transfer", "transfer_tests"]

SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def make_prompt(lm: LM, update: EditUpdate, fp: FormPrompt, delta: torch.Tensor, layer: int, criterion: str,
                threshold: float) -> tuple[_Prompt, str]:
    """A :class:`~geomprobe.probes.tolerance._Prompt` for one form prompt (``delta`` on the layer's device)."""
    r = update.requests[fp.i]
    crit = request_criterion(r, criterion)
    return _Prompt(lm, fp.prompt, r.target_new, delta, layer, crit, threshold,
                   r.target_true if crit == "beats-true" else None), crit


def _logits(p: _Prompt, sfx: prefix.Suffix, n: int, add: torch.Tensor | None = None,
            replace: torch.Tensor | None = None) -> torch.Tensor:
    """Head logits (n, t, vocab) at ``p``'s target positions: ``n`` rows of ``sfx``'s single prompt."""
    rows = torch.zeros(n, dtype=torch.long)
    head = (p.at - sfx.start).expand(n, -1)
    with torch.no_grad():
        return prefix.run(p.lm, sfx, rows=rows, add=add, head=head, replace=replace)


def _judge(p: _Prompt, logits: torch.Tensor, rival_logits: torch.Tensor | None):
    """(hit, margin, log P(target_new), log P(target_true) or None), each (n,) on CPU."""
    rival = None if rival_logits is None else p.rival.logprob(rival_logits)
    hit, margin = p.score(logits, rival)
    return hit, margin, p.logprob(logits.float()).cpu(), None if rival is None else rival.cpu()


def _patched_column(sfx: prefix.Suffix, delta: torch.Tensor) -> torch.Tensor:
    """``h + δ`` at ``sfx``'s injection column, in the model dtype, exactly as :func:`prefix.run` adds ``δ``."""
    h = sfx.hidden[0, int(sfx.inject[0])]
    return h + delta.to(h.device).to(h.dtype)


def _replaced(sfx: prefix.Suffix, column: torch.Tensor) -> torch.Tensor:
    """(2, W, d): the edited suffix as is, and with its injection column replaced by ``column``."""
    patched = sfx.hidden[0].clone()
    patched[int(sfx.inject[0])] = column.to(patched.device, patched.dtype)
    return torch.stack([sfx.hidden[0], patched])


def _measure(lm: LM, update: EditUpdate, forms: Sequence[str], scales: Sequence[float], criterion: str,
             threshold: float, requests: Sequence[int] | None, edited: bool, per_form: int | None = None
             ) -> tuple[list[dict], list[dict]]:
    update.check_model(lm)
    idx = list(range(len(update.requests)) if requests is None else requests)
    check_criterion(update, idx, criterion, threshold)
    scales = [float(s) for s in scales]
    if not scales:
        raise GeomprobeError("no scales given; pass at least one scale of δ")
    L, deltas = request_deltas(update)
    prompts = form_prompts(update, forms, lm.tokenizer, idx, per_form)
    dev = lm.device_of(L)
    base, curve, columns = [], [], []
    from ..progress import track
    made = [make_prompt(lm, update, fp, torch.zeros(lm.d_model, device=dev), L, criterion, threshold)
            for fp in prompts]
    ps = [p for p, _ in made]
    for n, fp in enumerate(track(prompts, f"patch transfer ({update.editor})", unit="prompt")):
        prime(ps, n)
        r, delta = update.requests[fp.i], deltas[fp.i].to(dev)
        p, crit = made[n]
        adds = torch.stack([0 * delta, delta] + [s * delta for s in scales])  # unperturbed, patched, the curve
        sfx = p.suffix()
        rsfx = None if p.rival is None else p.rival.suffix()
        hit, margin, lp, lt = _judge(p, _logits(p, sfx, len(adds), adds),
                                     None if rsfx is None else _logits(p.rival, rsfx, len(adds), adds))
        cols = (_patched_column(sfx, delta), None if rsfx is None else _patched_column(rsfx, delta))
        columns.append(cols if edited else None)
        p.free()  # only the patched column is kept
        ok = [bool(x) for x in hit[2:]]
        crossing = next((s for s, o in sorted(zip(scales, ok)) if o), math.nan)
        meta = {"editor": update.editor, "case_id": r.case_id, "subject": r.subject, "relation": r.relation,
                "form": fp.form, "prompt_idx": fp.j, "layer": L, "criterion": label(crit, threshold),
                "threshold": float(threshold) if crit == "prob" else math.nan}
        base.append({**meta, "delta_norm": float(delta.norm()), "h_norm": float(sfx.hidden[0, int(sfx.inject[0])]
                                                                                .float().norm()),
                     "p_unedited": math.exp(float(lp[0])), "unedited_success": bool(hit[0]),
                     "p_patched": math.exp(float(lp[1])), "patched_success": bool(hit[1]),
                     "patched_margin": float(margin[1]),
                     "p_true_patched": math.nan if lt is None else math.exp(float(lt[1])),
                     "crossing_scale": crossing})
        for k, s in enumerate(scales):
            curve.append({**meta, "scale": s, "p_target": math.exp(float(lp[2 + k])), "success": ok[k],
                          "margin": float(margin[2 + k]),
                          "p_true": math.nan if lt is None else math.exp(float(lt[2 + k]))})
    if edited:
        with update.applied(lm):  # every prompt's prefix was freed above: prepared again, under the edit
            for n, (row, (col, rcol)) in enumerate(zip(track(base, f"edited model ({update.editor})",
                                                             unit="prompt"), columns)):
                prime(ps, n)
                p = ps[n]
                sfx = p.suffix()
                rival = None
                if p.rival is not None:
                    rsfx = p.rival.suffix()
                    rival = _logits(p.rival, rsfx, 2, replace=_replaced(rsfx, rcol))
                hit, margin, lp, lt = _judge(p, _logits(p, sfx, 2, replace=_replaced(sfx, col)), rival)
                row.update({"p_edited": math.exp(float(lp[0])), "edited_success": bool(hit[0]),
                            "p_edited_patched": math.exp(float(lp[1])), "edited_patched_success": bool(hit[1]),
                            "edited_patched_margin": float(margin[1])})
                p.free()
    return base, curve


def patch_transfer(lm: LM, update: EditUpdate, forms: Sequence[str] = FORMS, scales: Sequence[float] = SCALES,
                   criterion: str = "prob", threshold: float = 0.5, requests: Sequence[int] | None = None,
                   edited: bool = True) -> pd.DataFrame:
    """Patching tests per request and form prompt (see the module docstring).

    Args:
        lm: the *unedited* model the update was computed on (bit-identical afterwards, no hooks left).
        update: the edit (δ from its value result, or ``z − h`` for an imported update).
        forms: prompt forms.
        scales: the δ-scaling grid behind ``crossing_scale``.
        criterion: ``"prob"`` (default), ``"beats-true"``, ``"argmax"`` or ``"auto"`` (see the module docstring).
        threshold: the probability threshold of ``"prob"``.
        requests: indices of the requests to test (default all).
        edited: also run the edited model (``edited_*`` columns); False skips it.

    Returns:
        tidy DataFrame, one row per (request, form, prompt): ``editor, case_id, subject, relation, form,
        prompt_idx, layer, criterion, threshold, delta_norm, h_norm, p_unedited, unedited_success, p_patched,
        patched_success, patched_margin, p_true_patched, crossing_scale`` and, with ``edited``, ``p_edited,
        edited_success, p_edited_patched, edited_patched_success, edited_patched_margin``.  ``p_*`` are
        ``P(target_new)``, ``p_true_patched`` ``P(target_true)`` under ``"beats-true"`` (NaN otherwise); a margin is
        positive exactly on success (``log P − log threshold``, ``log P(new) − log P(true)``, or the argmax gap).
    """
    return pd.DataFrame(_measure(lm, update, forms, scales, criterion, threshold, requests, edited)[0])


def transfer_tests(lm: LM, update: EditUpdate, forms: Sequence[str] = FORMS, scales: Sequence[float] = SCALES,
                   criterion: str = "prob", threshold: float = 0.5, requests: Sequence[int] | None = None,
                   edited: bool = True, per_form: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(patch_transfer rows, delta_scaling rows)`` from one pass (the curve is a by-product of the patches);
    ``per_form`` tests only the first that many prompts of each form (None: all)."""
    base, curve = _measure(lm, update, forms, scales, criterion, threshold, requests, edited, per_form)
    return pd.DataFrame(base), pd.DataFrame(curve)


def delta_scaling(lm: LM, update: EditUpdate, scales: Sequence[float] = SCALES, forms: Sequence[str] = FORMS,
                  criterion: str = "prob", threshold: float = 0.5,
                  requests: Sequence[int] | None = None) -> pd.DataFrame:
    """The δ-scaling curve: ``s·δ`` patched into the unedited model at (L, subject), per form prompt and scale.

    Returns:
        tidy DataFrame, one row per (request, form, prompt, scale): ``editor, case_id, subject, relation, form,
        prompt_idx, layer, criterion, threshold, scale, p_target, success, margin, p_true``.  The curve's row at
        scale 1 is :func:`patch_transfer`'s ``patched`` state.
    """
    return pd.DataFrame(_measure(lm, update, forms, scales, criterion, threshold, requests, edited=False)[1])
