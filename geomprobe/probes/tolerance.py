"""Tolerance radius ρ of an optimised value (RoSE Fig. 2a, 8, 12, 19).

For an edit prompt, the value optimisation found ``δ`` such that adding it to the residual stream after
the last edit layer ``L`` at the subject's last token makes the model predict the target.  ``ρ`` is the
largest noise norm ``r`` such that with ``δ + ε``, ``‖ε‖ = r`` in an isotropic random direction, the
target is still predicted in at least ``success`` (90%) of ``trials`` (10) draws.

"Predicted" means every token of ``target_new`` is the argmax under teacher forcing (for one-token
targets: the top-1 next token).  The injection happens on the *unedited* weights, so ρ measures the
optimised value itself, whichever update rule later writes it.

Two estimators see the same noise directions (drawn once per prompt from ``seed``, rescaled to each
radius), so they measure the same function ``success(r)``:

* ``method="reference"`` — the paper's procedure: ``r = step, 2·step, …`` while ``success(r) ≥ success``,
  every trial a separate full forward pass.
* ``method="fast"`` (default) — the prompt's residual at ``L`` is computed once; all trials of a radius
  run as one batch resumed from block ``L+1`` (:func:`geomprobe.hooks.resume_from`); the radius is
  bracketed by doubling and refined by bisection to ``step / 4``.

Where ``success(r)`` is monotone both return the same threshold up to the reference's step.
"""

from __future__ import annotations

import time
from typing import Sequence

import pandas as pd
import torch

from ..data.forms import render
from ..editors.update import EditUpdate
from ..errors import GeomprobeError
from ..hooks import add_to_residual, read, resume_from
from ..models.load import LM
from ..scoring import with_targets

METHODS = ("fast", "reference")


def _directions(d: int, trials: int, seed: int, device: torch.device) -> torch.Tensor:
    """(trials, d) unit vectors, isotropic, from a seeded generator (CPU, then moved)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(trials, d, generator=g, dtype=torch.float64)
    return (u / u.norm(dim=1, keepdim=True)).float().to(device)


class _Prompt:
    """One edit prompt with its target, ready for repeated noisy forwards."""

    def __init__(self, lm: LM, prompt, target: str, delta: torch.Tensor, layer: int):
        self.lm, self.layer = lm, layer
        self.tb = with_targets(lm.tokenizer, [prompt], [target]).to(lm.input_device)
        self.pos = self.tb.batch.subject_last
        self.delta = delta
        self.mask = self.tb.labels[0] != -100
        self.want = self.tb.labels[0][self.mask]
        self._hidden = None

    def hit(self, logits: torch.Tensor) -> torch.Tensor:
        """(batch,) whether every target token is the argmax."""
        pred = logits[:, self.mask.to(logits.device)].argmax(-1)
        return (pred == self.want.to(pred.device)).all(-1)

    def expand(self, n: int):
        b = self.tb.batch
        from ..positions import Batch

        return Batch(*(t.expand(n, *t.shape[1:]) if t.dim() > 1 else t.expand(n) for t in
                       (b.input_ids, b.attention_mask, b.position_ids, b.subject_last, b.last)),
                     b.offsets.expand(n, *b.offsets.shape[1:]))

    # fast path: cache the residual after block L once, resume from L+1
    def hidden(self) -> torch.Tensor:
        if self._hidden is None:
            with torch.no_grad(), read(self.lm, [self.layer], ("resid",)) as r:
                self.lm.forward(self.tb.batch)
            self._hidden = r["resid"][self.layer]
        return self._hidden

    def success_fast(self, noise: torch.Tensor) -> float:
        """Share of successes for noise vectors (trials, d), one resumed batched forward."""
        n = len(noise)
        h = self.hidden().expand(n, -1, -1).clone()
        rows = torch.arange(n, device=h.device)
        pos = self.pos.to(h.device).expand(n)
        h[rows, pos] += (self.delta.to(h.device) + noise.to(h.device)).to(h.dtype)
        with torch.no_grad(), resume_from(self.lm, self.layer + 1, h):
            logits = self.lm.forward(self.expand(n))
        return float(self.hit(logits).float().mean())

    def success_reference(self, noise: torch.Tensor) -> float:
        """Share of successes, one full forward per trial (the paper's procedure)."""
        hits = 0
        for e in noise:
            with torch.no_grad(), add_to_residual(self.lm, self.layer, self.pos, (self.delta + e)[None]):
                hits += int(self.hit(self.lm.forward(self.tb.batch))[0])
        return hits / len(noise)


def _radius_reference(p: _Prompt, u: torch.Tensor, step: float, success: float, max_radius: float) -> tuple[float, int]:
    r, evals = 0.0, 0
    while r + step <= max_radius:
        evals += 1
        if p.success_reference((r + step) * u) < success:
            break
        r += step
    return r, evals


def _radius_fast(p: _Prompt, u: torch.Tensor, step: float, success: float, max_radius: float) -> tuple[float, int]:
    ok = lambda r: p.success_fast(r * u) >= success  # noqa: E731
    evals = 1
    if not ok(step):  # fails already at the first step: the radius is below it
        lo, hi = 0.0, step
    else:
        lo, hi = step, min(2 * step, max_radius)
        while True:
            evals += 1
            if not ok(hi):
                break
            if hi >= max_radius:  # still succeeds at the search limit: report the limit
                return max_radius, evals
            lo, hi = hi, min(2 * hi, max_radius)
    while hi - lo > step / 4:
        mid = (lo + hi) / 2
        evals += 1
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo, evals


def tolerance_radius(lm: LM, update: EditUpdate, trials: int = 10, success: float = 0.9, method: str = "fast",
                     step: float | None = None, max_radius: float | None = None, seed: int = 0,
                     requests: Sequence[int] | None = None) -> pd.DataFrame:
    """ρ for every request of ``update`` on its declarative edit prompt.

    Args:
        lm: the *unedited* model the update was computed on.
        update: an :class:`EditUpdate` (its ``value`` holds δ per column).
        trials: noise draws per radius.
        success: share of draws that must still predict the target.
        method: ``"fast"`` or ``"reference"`` (see the module docstring).
        step: radius step (the reference's increment; the fast estimator's resolution is step/4);
            default 2% of the mean ‖h‖ at layer L.
        max_radius: search limit; default 4·mean ‖h‖.
        seed: seed of the noise directions (one stream per request).
        requests: indices of the requests to measure (default all).

    Returns:
        tidy DataFrame, one row per request: ``editor, case_id, subject, relation, form, layer, metric,
        value, value_rel (ρ/‖h‖), delta_norm, h_norm, method, trials, success, step, seed, evaluations, seconds``.
        ``value`` is 0 when the unperturbed value does not predict the target at all (``predicted`` False).
    """
    if method not in METHODS:
        raise GeomprobeError(f"unknown method {method!r}; use 'fast' or 'reference'")
    if trials < 1 or not 0 < success <= 1:
        raise GeomprobeError(f"trials must be >= 1 and success in (0, 1]; got {trials}, {success}")
    update.check_model(lm)
    value = update.value
    if value is None:
        raise GeomprobeError("this update holds no value optimisation result; compute it with a geomprobe editor")
    layer = value.layer
    h_norm = value.h.norm(dim=0)
    step = float(step if step is not None else 0.02 * h_norm.mean())
    max_radius = float(max_radius if max_radius is not None else 4 * h_norm.mean())
    if step <= 0 or not torch.isfinite(torch.tensor(step)):
        raise GeomprobeError(f"step must be a positive finite number, got {step}")
    col_of = {i: c for c, members in enumerate(value.members) for i in members}
    idx = range(len(update.requests)) if requests is None else requests
    rows = []
    for i in idx:
        r = update.requests[i]
        c = col_of[i]
        delta = value.delta[:, c].to(lm.device_of(layer))
        p = _Prompt(lm, render(r.prompt, r.subject, "declarative"), r.target_new, delta, layer)
        u = _directions(lm.d_model, trials, seed + i, lm.device_of(layer))
        t0 = time.perf_counter()
        predicted = p.success_fast(0 * u[:1]) >= 1.0
        if not predicted:
            rho, evals = 0.0, 1
        elif method == "fast":
            rho, evals = _radius_fast(p, u, step, success, max_radius)
        else:
            rho, evals = _radius_reference(p, u, step, success, max_radius)
        rows.append({
            "editor": update.editor, "case_id": r.case_id, "subject": r.subject, "relation": r.relation,
            "form": "declarative", "layer": layer, "metric": "tolerance_radius", "value": rho,
            "value_rel": rho / float(h_norm[c]), "delta_norm": float(value.delta[:, c].norm()),
            "h_norm": float(h_norm[c]), "predicted": bool(predicted), "method": method, "trials": trials,
            "success": success, "step": step, "seed": seed, "evaluations": evals,
            "seconds": time.perf_counter() - t0,
        })
    return pd.DataFrame(rows)
