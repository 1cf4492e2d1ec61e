"""Tolerance radius ρ of an optimised value (RoSE Fig. 2a, 8, 12, 19).

For an edit prompt, the value optimisation found ``δ`` such that adding it to the residual stream after
the last edit layer ``L`` at the subject's last token makes the model predict the target.  ``ρ`` is the
largest noise norm ``r`` such that with ``δ + ε``, ``‖ε‖ = r`` in an isotropic random direction, the
target is still predicted in at least ``success`` (90%) of ``trials`` (10) draws.

What "predicted" means is the ``criterion`` of a trial:

* ``"prob"`` (default; the paper's Validity Check: the model "still correctly predicts the target object
  with the probability" above a threshold): ``P(target_new | prompt) > threshold`` (default 0.5), where
  ``P`` is the teacher-forced probability of the *whole* target sequence, the product of its token
  probabilities ``exp(Σ log p)`` (:func:`geomprobe.scoring.token_logprobs`).  Rows are labelled
  ``criterion = "prob>0.5"``.
* ``"argmax"``: every token of ``target_new`` is the argmax under teacher forcing (for one-token targets:
  the top-1 next token) — geomprobe's older rule.  It is not ordered with ``"prob"`` at every threshold:
  ``P > 0.5`` makes every target token the argmax (each token's probability is at least ``P``), so under
  ``"prob"`` with ``threshold ≥ 0.5`` a trial is at least as hard to pass as under ``"argmax"``; below 0.5
  a top-1 target can have ``P < threshold`` and a non-top-1 one ``P > threshold``.
* ``"beats-true"``: ``P(target_new) > P(target_true)`` (sequence probabilities as above); needs the
  request's ``target_true``.

The injection happens on the *unedited* weights, so ρ measures the optimised value itself, whichever update
rule later writes it.

Two estimators see the same noise directions (drawn once per prompt from ``seed``, rescaled to each
radius), so they measure the same function ``success(r)``:

* ``method="reference"`` — the paper's procedure: ``r = step, 2·step, …`` while ``success(r) ≥ success``,
  every trial a separate full forward pass.
* ``method="fast"`` (default) — the prompt's residual at ``L`` and its prefix's keys/values are computed
  once; the trials of one radius run as one batch resumed from block ``L+1`` on the columns from the
  subject's last token on (:mod:`geomprobe.prefix`), with the LM head only at the target positions.  The search stays on the reference's grid ``k·step`` and keeps a
  bracket ``[lo, hi]`` (``lo`` succeeds, ``hi`` fails); the next radius is interpolated from a
  continuous statistic, the ``(trials − need + 1)``-th smallest target margin (``success(r) ≥ success``
  exactly when it is positive; the margin of a trial is ``log P(target) − log threshold`` for ``"prob"``,
  ``log P(new) − log P(true)`` for ``"beats-true"``, the target's logit minus the best other logit,
  minimum over target tokens, for ``"argmax"``), on a power-law model ``S(r) ≈ S(0) − c·r^1.5``, with
  bisection whenever a step shrinks the bracket by less than half.  The first radius tried is ``‖h‖`` (the
  residual's own norm) together with the unperturbed prompt.  It stops when ``hi = lo + 1``: ρ = ``lo·step``.
  Every prompt's search advances in lock step (:func:`run_searches`): the calls of up to :data:`GROUP_PROMPTS`
  prompts of similar suffix length run in one resumed forward (:class:`_Group`); each search makes exactly the
  calls it would make alone.

Success counts are integers (``need = ceil(success · trials)``), never float shares, so 9 of 10 passes a
90% criterion in both estimators.  Where ``success(r)`` is monotone on the grid both return the same
radius; they can differ by a step where the batched and the single forward disagree on a borderline
trial.

**Like-for-like** (issue 11): with ``forms`` (e.g. ``("declarative", "question", "instruction")``)
:func:`tolerance_radius` measures ρ on each form's own prompts (:func:`~geomprobe.data.forms.eval_prompts`;
declarative = the edit prompt), injecting the same ``δ`` at that prompt's subject's last token, with the same
criteria; every prompt of request ``i`` sees the same noise directions (``seed + i``), so the declarative row equals
the legacy radius and forms are compared on paired draws.  The rows gain ``prompt_idx`` and ``rho_form`` (= ``value``)
and ``h_norm`` / ``value_rel`` use that prompt's own ``‖h‖``.  Without ``forms`` the output is unchanged.

**Directional tolerance** (:func:`directional_tolerance`): isotropic noise of norm ``r`` puts only about
``r/√d`` along any one direction, so ρ says little about the directions that matter.  Along a unit direction
``u`` the tolerance is the largest ``t`` on the grid ``k·step`` such that ``δ + t'·u`` still predicts the target
for every grid ``t' ≤ t`` (one deterministic forward per grid point, found by :func:`search_grid` over batched
prefix-cached forwards, rows = grid points).  Directions:

* ``"-delta"``: ``−δ/‖δ‖`` — shrinking the value; at ``t = ‖δ‖`` the patch is gone (``delta_norm``).
* ``"drift"``: ``(v_form − δ)/‖v_form − δ‖`` with ``v_form = h^e_form − h_form`` the edited model's measured
  residual change at (L, subject) on this prompt (:mod:`geomprobe.probes.edit_drift`): the direction from the ideal
  patch ``h_form + δ`` towards the edited model's actual residual ``h_form + v_form``, reached at
  ``t = ‖v_form − δ‖`` (``miss_norm``).  ``rho_along_drift < miss_norm`` says the edited residual at that column
  lies outside the region where the target is still predicted.
* ``"form-drift"``: ``(v_form − v_decl)/‖v_form − v_decl‖`` — how the edit's effect differs from the edit prompt's
  (``form_drift_norm``; undefined, NaN, on the declarative prompt itself).
"""

from __future__ import annotations

import math
import numbers
import time
from typing import Callable, Sequence

import pandas as pd
import torch

from .. import prefix
from ..data.forms import render
from ..editors.update import EditUpdate
from ..errors import GeomprobeError
from ..hooks import add_to_residual, head_only_at
from ..models.load import LM
from ..scoring import token_logprobs, with_targets
from .edit_drift import FORMS, form_prompts, request_deltas, residual_changes

METHODS = ("fast", "reference")
CRITERIA = ("prob", "argmax", "beats-true")


def _directions(d: int, trials: int, seed: int, device: torch.device) -> torch.Tensor:
    """(trials, d) unit vectors, isotropic, from a seeded generator (CPU, then moved)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(trials, d, generator=g, dtype=torch.float64)
    return (u / u.norm(dim=1, keepdim=True)).float().to(device)


def _need(trials: int, success: float) -> int:
    """Successes required among ``trials`` draws (integer, so 9 of 10 meets 0.9)."""
    return math.ceil(success * trials - 1e-9)


def label(criterion: str, threshold: float) -> str:
    """The ``criterion`` column of a radius row: ``"prob>0.5"``, ``"argmax"`` or ``"beats-true"``."""
    return f"prob>{threshold:g}" if criterion == "prob" else criterion


def check_criterion(update: EditUpdate, idx: Sequence[int], criterion: str, threshold: float,
                    allow_auto: bool = True) -> None:
    """Validate ``criterion`` (one of :data:`CRITERIA`, or ``"auto"``) and ``threshold`` for requests ``idx``."""
    allowed = CRITERIA + (("auto",) if allow_auto else ())
    if criterion not in allowed:
        raise GeomprobeError(f"unknown criterion {criterion!r}; use {', '.join(repr(c) for c in allowed)}")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0 < threshold < 1:
        raise GeomprobeError(f"threshold must be a probability in (0, 1), got {threshold!r}")
    if criterion == "beats-true":
        for i in idx:
            if update.requests[i].target_true is None:
                raise GeomprobeError(f"criterion 'beats-true' needs target_true, but request "
                                     f"{update.requests[i].case_id!r} has none; give it target_true or use "
                                     "criterion='prob'")


def request_criterion(request, criterion: str) -> str:
    """The rule used for one request: ``"auto"`` is ``"beats-true"`` when it has a ``target_true``, else ``"prob"``."""
    if criterion == "auto":
        return "beats-true" if request.target_true is not None else "prob"
    return criterion


class _Prompt:
    """One edit prompt with its target, ready for repeated noisy forwards.

    ``criterion`` decides a trial (see the module docstring); ``"beats-true"`` scores ``rival`` (the
    request's ``target_true``) as a second prompt under the same noise.
    """

    def __init__(self, lm: LM, prompt, target: str, delta: torch.Tensor, layer: int, criterion: str = "prob",
                 threshold: float = 0.5, rival: str | None = None):
        self.lm, self.layer = lm, layer
        self.criterion, self.log_threshold = criterion, math.log(threshold)
        self.rival = None if rival is None else _Prompt(lm, prompt, rival, delta, layer, "argmax")
        self.tb = with_targets(lm.tokenizer, [prompt], [target]).to(lm.input_device)
        self.pos = self.tb.batch.subject_last
        self.delta = delta
        mask = self.tb.labels[0] != -100
        self.at = mask.nonzero()[:, 0]  # (t,) positions whose logits predict the target tokens
        self.want = self.tb.labels[0][mask]  # (t,)
        self._hidden = None

    def logprob(self, logits: torch.Tensor) -> torch.Tensor:
        """log P(target) (n,): the sum of the teacher-forced token log-probs, from logits (n, t, vocab)."""
        return token_logprobs(logits, self.want.to(logits.device).expand(len(logits), -1)).sum(-1)

    def score(self, logits: torch.Tensor, rival: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Hits and margins (n,) on CPU from head logits (n, t, vocab) at the target positions.

        ``"prob"``: a hit when ``P(target) > threshold``; the margin ``log P(target) − log threshold``.
        ``"beats-true"``: a hit when ``P(target) > P(true)``, ``rival`` holding ``log P(true)`` (n,); the
        margin ``log P(target) − log P(true)``.  In both the hit is exactly ``margin > 0``.
        ``"argmax"``: a hit when every target token is the argmax; the margin: min over target tokens of the
        target's logit minus the best other logit (> 0 for a hit, up to exact ties).
        """
        logits = logits.float()
        if self.criterion != "argmax":
            margin = self.logprob(logits) - (self.log_threshold if rival is None else rival.to(logits.device))
            return (margin > 0).cpu(), margin.cpu()
        want = self.want.to(logits.device).expand(len(logits), -1)[..., None]  # (n, t, 1)
        hit = (logits.argmax(-1) == want[..., 0]).all(-1)
        margin = logits.gather(-1, want)[..., 0] - logits.scatter(-1, want, float("-inf")).amax(-1)
        return hit.cpu(), margin.amin(-1).cpu()

    # fast path: the residual after block L and the prefix's keys/values computed once (geomprobe.prefix);
    # each batch of trials re-runs blocks L+1.. on the columns from the subject's last token on
    def suffix(self) -> "prefix.Suffix":
        if self._hidden is None:
            self._hidden = prefix.prepare(self.lm, self.tb.batch, self.layer, self.pos)
        return self._hidden

    def free(self) -> None:
        """Drop the prefix-cached suffix (and the rival's); :meth:`suffix` prepares it again when asked."""
        self._hidden = None
        if self.rival is not None:
            self.rival._hidden = None

    def batched(self, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hits and margins (n,) for noise vectors (n, d): one resumed, batched forward (two with a rival)."""
        rival = None if self.rival is None else self.rival.logprob(self.rival.batched_logits(noise))
        return self.score(self.batched_logits(noise), rival)

    def batched_logits(self, noise: torch.Tensor) -> torch.Tensor:
        """Head logits (n, t, vocab) at the target positions for noise vectors (n, d)."""
        n = len(noise)
        sfx = self.suffix()
        rows = torch.zeros(n, dtype=torch.long)
        head = (self.at - sfx.start).expand(n, -1)
        with torch.no_grad():
            return prefix.run(self.lm, sfx, rows=rows, add=self.delta.to(noise.device) + noise, head=head)

    def single_logits(self, e: torch.Tensor) -> torch.Tensor:
        """Head logits (1, t, vocab) at the target positions for one noise vector (d,): a full forward."""
        with (torch.no_grad(), add_to_residual(self.lm, self.layer, self.pos, (self.delta + e)[None]),
              head_only_at(self.lm, self.at)):
            return self.lm.forward(self.tb.batch)

    def single(self, noise: torch.Tensor) -> int:
        """Hits among noise vectors (n, d), one full forward per vector (the paper's procedure)."""
        hits = 0
        for e in noise:
            rival = None if self.rival is None else self.rival.logprob(self.rival.single_logits(e))
            hits += int(self.score(self.single_logits(e), rival)[0][0])
        return hits


#: prompt rows (a prompt and its rival count two) whose prefix states one padded forward prepares (:func:`prime`);
#: 1 prepares each alone (the bench's baseline)
PRIME_ROWS = 16


def prime(prompts: Sequence[_Prompt], start: int = 0) -> None:
    """Make sure ``prompts[start]`` has its prefix-cached suffix: when it lacks one, prepare it and the prompts after
    it (with their rivals), :data:`PRIME_ROWS` rows per padded forward (:func:`geomprobe.prefix.prepare_many`; the
    same states as one :func:`~geomprobe.prefix.prepare` each, up to float rounding)."""
    if prompts[start]._hidden is not None:
        return
    rows = max(1, int(PRIME_ROWS))
    todo = [q for p in prompts[start:start + rows] for q in (p, p.rival) if q is not None and q._hidden is None]
    for k in range(0, len(todo), rows):
        part = todo[k:k + rows]
        made = prefix.prepare_many(part[0].lm, [q.tb.batch for q in part], part[0].layer, [q.pos for q in part])
        for q, sfx in zip(part, made):
            q._hidden = sfx


#: prompts whose perturbed forwards share one prefix-cached batch (:class:`_Group`, :func:`run_searches`); 1 runs every
#: prompt's searches alone (the bench's baseline)
GROUP_PROMPTS = 16
#: perturbed rows per resumed forward of a group at most (bounds the logits kept: rows x target tokens x vocab)
GROUP_ROWS = 128


class _Group:
    """Prompts whose perturbations run in one resumed forward: their rows left-padded into one prefix-cached
    :class:`~geomprobe.prefix.Suffix` (:func:`~geomprobe.prefix.prepare_group`), their rivals' in another.  Equal to
    each prompt's own :meth:`_Prompt.batched` up to float rounding; where a model's cache cannot be cut (a sliding
    window shorter than the rows) every prompt runs alone."""

    def __init__(self, prompts: list[_Prompt]):
        self.prompts = prompts
        self.main = self._prepare(prompts)
        with_rival = [m for m, p in enumerate(prompts) if p.rival is not None]
        self.rival_row = {m: r for r, m in enumerate(with_rival)}
        self.rival = self._prepare([prompts[m].rival for m in with_rival]) if with_rival else None
        if self.main is None or (with_rival and self.rival is None):
            self.main = self.rival = None

    @staticmethod
    def _prepare(prompts: list[_Prompt]):
        """``(suffix, head columns (rows, t_max), target tokens per row (rows,))`` of the prompts' rows, or None
        (run them alone)."""
        made = prefix.prepare_group(prompts[0].lm, [p.tb.batch for p in prompts], prompts[0].layer,
                                    [p.pos for p in prompts])
        if made is None:
            return None
        sfx, pads = made
        t_max = max(len(p.at) for p in prompts)
        head = torch.stack([torch.cat([p.at.cpu(), p.at.cpu()[-1:].expand(t_max - len(p.at))]) + o - sfx.start
                            for p, o in zip(prompts, pads)])
        return sfx, head, torch.tensor([len(p.at) for p in prompts])

    def h_norm(self, m: int) -> float | None:
        """‖h‖ at L at prompt ``m``'s injection column, from the group's states (None when it runs alone)."""
        if self.main is None:
            return None
        sfx = self.main[0]
        return float(sfx.hidden[m, int(sfx.inject[m])].float().norm())

    def run(self, items: list[tuple[int, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Hits and margins per item ``(prompt m of the group, noise (n, d))``, as :meth:`_Prompt.batched` gives."""
        if self.main is None:
            return [self.prompts[m].batched(noise) for m, noise in items]
        out, part, rows = [], [], 0
        for item in items:
            if part and rows + len(item[1]) > GROUP_ROWS:
                out += self._run(part)
                part, rows = [], 0
            part.append(item)
            rows += len(item[1])
        return out + (self._run(part) if part else [])

    def _run(self, items: list[tuple[int, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        lm = self.prompts[0].lm
        adds = torch.cat([self.prompts[m].delta.to(noise.device) + noise for m, noise in items])
        rows = torch.cat([torch.full((len(noise),), m, dtype=torch.long) for m, noise in items])
        with torch.no_grad():
            logits = self._logits(self.main, rows, adds)  # (Σ rows · their target tokens, vocab), row by row
            rival = None
            if self.rival is not None:
                keep = [k for k, m in enumerate(rows.tolist()) if m in self.rival_row]  # rows with a rival
                if keep:
                    r_rows = torch.tensor([self.rival_row[int(rows[k])] for k in keep], dtype=torch.long)
                    rival = self._logits(self.rival, r_rows, adds[keep])
        out, a, b = [], 0, 0
        for m, noise in items:
            p, n = self.prompts[m], len(noise)
            lp = None
            if p.rival is not None:
                t = len(p.rival.at)
                lp = p.rival.logprob(rival[b:b + n * t].view(n, t, -1))
                b += n * t
            t = len(p.at)
            out.append(p.score(logits[a:a + n * t].view(n, t, -1), lp))
            a += n * t
        return out

    def _logits(self, prepared, rows: torch.Tensor, adds: torch.Tensor) -> torch.Tensor:
        """Head logits (Σ target tokens of ``rows``, vocab) at each row's own target positions only (no head on
        the columns that pad a shorter target to the group's longest)."""
        sfx, head, n_at = prepared
        keep = torch.arange(head.shape[1])[None] < n_at[rows][:, None]
        return prefix.run(self.prompts[0].lm, sfx, rows=rows.to(sfx.hidden.device), add=adds, head=head[rows],
                          head_keep=keep)


def group_prompts(prompts: Sequence[_Prompt], size: int | None = None) -> list[tuple[_Group, int]]:
    """Per prompt: its :class:`_Group` and its index there; groups of ``size`` (default :data:`GROUP_PROMPTS`)
    prompts of similar suffix length (columns from the subject's last token on, so few columns are re-run in
    vain)."""
    size = max(1, int(GROUP_PROMPTS if size is None else size))
    order = sorted(range(len(prompts)), key=lambda n: prompts[n].tb.batch.input_ids.shape[1] - int(prompts[n].pos[0]))
    where: list = [None] * len(prompts)
    for s in range(0, len(order), size):
        chunk = order[s:s + size]
        g = _Group([prompts[n] for n in chunk])
        for m, n in enumerate(chunk):
            where[n] = (g, m)
    return where


class Search:
    """One grid search (:func:`grid_search`) on prompt ``n``: ``noise(ks)`` gives the perturbations (rows, d) of a
    call, ``read(ks, hits, margins)`` its ``(ok, S)`` per index; ``result`` is ``(k, calls)`` once it ends."""

    def __init__(self, n: int, gen, noise: Callable, read: Callable):
        self.n, self.gen, self.noise, self.read = n, gen, noise, read
        self.ks = next(gen)
        self.result: tuple[int, int] | None = None


def run_searches(searches: Sequence[Search], where: Sequence[tuple[_Group, int]], bar=None) -> None:
    """Advance every search in lock step: each round, the calls of the unfinished searches of one group run in one
    batched forward (:meth:`_Group.run`).  Each search sees exactly the calls it would make alone."""
    live = list(searches)
    while live:
        by_group: dict[int, tuple[_Group, list]] = {}
        for s in live:
            g, m = where[s.n]
            by_group.setdefault(id(g), (g, []))[1].append((s, m))
        for g, members in by_group.values():
            results = g.run([(m, s.noise(s.ks)) for s, m in members])
            for (s, _), (hits, margins) in zip(members, results):
                try:
                    s.ks = s.gen.send(s.read(s.ks, hits, margins))
                except StopIteration as done:
                    s.result = done.value
                    if bar is not None:
                        bar.update()
        live = [s for s in live if s.result is None]


def _radius_reference(p: _Prompt, u: torch.Tensor, step: float, need: int, k_max: int) -> tuple[int, int]:
    """(k, evaluations): the last grid radius of an unbroken run of successes; k = -1 if unpredicted."""
    if p.single(0 * u[:1]) < 1:
        return -1, 1
    k = 0
    while k < k_max and p.single((k + 1) * step * u) >= need:
        k += 1
    return k, 1 + min(k + 1, k_max)


def search_grid(evaluate: Callable[[list[int]], list[tuple[bool, float]]], k_max: int, first: int,
                width: int = 1, power: float = 1.5) -> tuple[int, int]:
    """Largest ``k`` in ``0..k_max`` with ``ok(0..k)``, by a safeguarded interpolating bracket search.

    Args:
        evaluate: grid indices -> ``(ok, S)`` each, in one batched call; ``S`` is a continuous score,
            positive where ``ok`` (up to ties), used only to choose where to look.
        k_max: last grid index.
        first: the first index tried (with 0, in the first call).
        width: consecutive indices per call (with 2, a pair ``c, c+1`` that straddles the edge ends the search
            a call sooner; 1, the default, makes more calls but runs half the trials: the searches of a group
            share their calls (:func:`run_searches`), so trials, not calls, cost — on SmolLM2, 10 subjects, the
            fast estimator took 3.2 s with 1 against 4.1 s with 2, same radii).
        power: exponent of the model ``S(k) ≈ S(0) − c·k^power`` used to interpolate.

    Returns:
        ``(k, calls)``, ``k = -1`` when ``ok(0)`` fails.  Exact when ``ok`` is monotone; otherwise a ``k``
        with ``ok(k)`` and ``not ok(k+1)`` among the indices it tried.
    """
    gen = grid_search(k_max, first, width, power)
    ks = next(gen)
    while True:
        try:
            ks = gen.send(evaluate(ks))
        except StopIteration as done:
            return done.value


def grid_search(k_max: int, first: int, width: int = 1, power: float = 1.5):
    """:func:`search_grid` as a generator: yields the grid indices of each call, receives their ``(ok, S)`` list,
    returns ``(k, calls)`` (so many searches can share batched forwards: :func:`run_searches`)."""
    lo, s_lo, hi, s_hi, s0 = -1, 0.0, k_max + 1, None, 0.0  # ok(lo); hi fails (k_max + 1: not seen yet)
    ks, calls = [0] + ([min(max(first, 1), k_max)] if k_max else []), 0
    while True:
        width_before = hi - lo
        calls += 1
        results = yield ks
        for k, (ok, s) in zip(ks, results):
            s0 = s if k == 0 else s0
            if ok:
                lo, s_lo = k, s
            else:
                hi, s_hi = k, s
                break
        if lo == k_max or hi - lo <= 1:
            return lo, calls
        if s_hi is None:  # no failure seen yet: extrapolate the model past lo
            drop = s0 - s_lo
            x = 2 * lo if drop <= 0 or s_lo <= 0 else lo * (s0 / drop) ** (1 / power)
            c = int(min(k_max, max(lo + 1, x)))
        else:
            slow = hi - lo > width_before / 2 and width_before <= k_max
            if not slow and s_lo > 0 > s_hi:
                f = s_lo / (s_lo - s_hi)
                x = (lo ** power + (hi ** power - lo ** power) * f) ** (1 / power)
            else:
                x = (lo + hi) / 2
            c = min(max(int(x), lo + 1), hi - 1)
        ks = [k for k in range(c, c + width) if k < hi and k <= k_max]


def _radius_search(n: int, u: torch.Tensor, step: float, need: int, k_max: int, first: int) -> Search:
    """The fast estimator's search for prompt ``n``: each call runs its radii's trials as one batch (a radius of 0
    once: every draw is the same); ``S`` is the margin order statistic that decides success."""
    order = len(u) - need

    def sizes(ks: list[int]) -> list[int]:
        return [1 if k == 0 else len(u) for k in ks]

    def noise(ks: list[int]) -> torch.Tensor:
        return torch.cat([k * step * u[:m] for k, m in zip(ks, sizes(ks))])

    def read(ks: list[int], hits: torch.Tensor, margins: torch.Tensor) -> list[tuple[bool, float]]:
        out = []
        for k, h, m in zip(ks, hits.split(sizes(ks)), margins.split(sizes(ks))):
            out.append((bool(h[0]), float(m[0])) if k == 0 else
                       (int(h.sum()) >= need, float(m.sort().values[order])))
        return out

    return Search(n, grid_search(k_max, first), noise, read)


def tolerance_radius(lm: LM, update: EditUpdate, trials: int = 10, success: float = 0.9, method: str = "fast",
                     step: float | None = None, max_radius: float | None = None, seed: int = 0,
                     requests: Sequence[int] | None = None, criterion: str = "prob",
                     threshold: float = 0.5, forms: Sequence[str] | None = None) -> pd.DataFrame:
    """ρ for every request of ``update`` on its declarative edit prompt (or on each form's prompts).

    By default a noisy trial succeeds by the paper's probability criterion: ``P(target_new | prompt)`` — the
    teacher-forced probability of the whole target sequence — exceeds ``threshold``.  ``criterion="argmax"``
    is geomprobe's older rule (every target token the argmax); ``"prob"`` with ``threshold ≥ 0.5`` is at
    least as strict as it (see the module docstring).

    Args:
        lm: the *unedited* model the update was computed on.
        update: an :class:`EditUpdate` (its ``value`` holds δ per column).
        trials: noise draws per radius.
        success: share of draws that must still predict the target.
        method: ``"fast"`` or ``"reference"`` (see the module docstring).
        step: radius step, the grid of both estimators (ρ is a multiple of it); default 2% of the
            mean ‖h‖ at layer L.
        max_radius: search limit; default 4·mean ‖h‖.
        seed: seed of the noise directions (one stream per request).
        requests: indices of the requests to measure (default all).
        criterion: what a successful trial is: ``"prob"`` (default, the paper's) — ``P(target_new) >
            threshold``; ``"argmax"`` — every target token is the argmax (the older rule);
            ``"beats-true"`` — ``P(target_new) > P(target_true)`` (needs ``target_true`` on every request).
        threshold: the probability the whole target sequence must exceed under ``"prob"``, in (0, 1);
            ignored by the other criteria.
        forms: None (default): the declarative edit prompt only, the legacy rows.  A tuple of forms (e.g.
            ``("declarative", "question", "instruction")``): ρ on every prompt of each form, like for like (the
            module docstring); the rows gain ``prompt_idx`` and ``rho_form``.

    Returns:
        tidy DataFrame, one row per request: ``editor, case_id, subject, relation, form, layer, metric,
        value, value_rel (ρ/‖h‖), delta_norm, h_norm, predicted, method, trials, success, step, seed,
        evaluations, seconds, criterion, threshold``; ``evaluations`` counts radii for the reference (each
        ``trials`` forwards) and batched forwards for the fast estimator (``"beats-true"`` doubles the forwards).
        ``criterion`` labels the rule (``"prob>0.5"``, ``"argmax"``, ``"beats-true"``); ``threshold`` is the
        probability threshold under ``"prob"``, NaN otherwise.
        ``value`` is 0 when the unperturbed value does not predict the target at all (``predicted`` False).
        With ``forms``: one row per (request, form, prompt), plus ``prompt_idx`` and ``rho_form`` (= ``value``);
        ``h_norm`` is the prompt's own ‖h‖ at L and ``value_rel`` = ρ/that.
    """
    if method not in METHODS:
        raise GeomprobeError(f"unknown method {method!r}; use 'fast' or 'reference'")
    check_criterion(update, [], criterion, threshold, allow_auto=False)
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
    k_max, need = int(max_radius / step + 1e-9), _need(trials, success)
    col_of = {i: c for c, members in enumerate(value.members) for i in members}
    idx = range(len(update.requests)) if requests is None else requests
    check_criterion(update, idx, criterion, threshold, allow_auto=False)
    if forms is None:  # the legacy rows: the declarative edit prompt, no prompt index
        items = [(i, "declarative", None, render(update.requests[i].prompt, update.requests[i].subject,
                                                 "declarative")) for i in idx]
    else:
        items = [(fp.i, fp.form, fp.j, fp.prompt) for fp in form_prompts(update, forms, lm.tokenizer, idx)]
    rows = []
    made = [_Prompt(lm, prompt, update.requests[i].target_new, value.delta[:, col_of[i]].to(lm.device_of(layer)),
                    layer, criterion, threshold, update.requests[i].target_true if criterion == "beats-true" else None)
            for i, _, _, prompt in items]
    dirs = [_directions(lm.d_model, trials, seed + i, lm.device_of(layer)) for i, *_ in items]
    found: list[tuple[int, int]] = []
    seconds: list[float] = []
    where = None
    if method == "fast":  # every prompt's search at once, a group's calls in one resumed forward
        from ..progress import progress
        t0 = time.perf_counter()
        where = group_prompts(made)
        searches = [_radius_search(n, dirs[n], step, need, k_max, first=round(float(h_norm[col_of[i]]) / step))
                    for n, (i, *_) in enumerate(items)]
        bar = progress(len(searches), f"tolerance radius ({update.editor})", "prompt")
        run_searches(searches, where, bar)
        bar.close()
        found = [s.result for s in searches]
        seconds = [(time.perf_counter() - t0) / max(len(items), 1)] * len(items)  # shared batches: the mean
    else:
        from ..progress import track
        for n in track(range(len(items)), f"tolerance radius ({update.editor})", unit="prompt"):
            t0 = time.perf_counter()
            found.append(_radius_reference(made[n], dirs[n], step, need, k_max))
            seconds.append(time.perf_counter() - t0)
            made[n].free()
    for n, (i, form, j, prompt) in enumerate(items):
        r, c, p = update.requests[i], col_of[i], made[n]
        k, evals = found[n]
        predicted, rho = k >= 0, max(k, 0) * step
        hn = float(h_norm[c]) if j is None else _h_norm_of(p, where[n] if where else None)
        row = {
            "editor": update.editor, "case_id": r.case_id, "subject": r.subject, "relation": r.relation,
            "form": form, "layer": layer, "metric": "tolerance_radius", "value": rho,
            "value_rel": rho / hn, "delta_norm": float(value.delta[:, c].norm()),
            "h_norm": hn, "predicted": bool(predicted), "method": method, "trials": trials,
            "success": success, "step": step, "seed": seed, "evaluations": evals,
            "seconds": seconds[n], "criterion": label(criterion, threshold),
            "threshold": float(threshold) if criterion == "prob" else float("nan"),
        }
        if j is not None:
            row.update({"prompt_idx": j, "rho_form": rho})
        p.free()
        rows.append(row)
    return pd.DataFrame(rows)


def _h_norm_of(p: _Prompt, at: tuple[_Group, int] | None) -> float:
    """‖h‖ at L at the prompt's subject's last token: from its group's states, else :func:`_own_h_norm`."""
    hn = None if at is None else at[0].h_norm(at[1])
    return _own_h_norm(p) if hn is None else hn


def _own_h_norm(p: _Prompt) -> float:
    """‖h‖ at L at the prompt's subject's last token (from its prefix-cached suffix; freed afterwards)."""
    sfx = p.suffix()
    hn = float(sfx.hidden[0, int(sfx.inject[0])].float().norm())
    p.free()
    return hn


def _direction_search(n: int, u: torch.Tensor, step: float, k_max: int, first: int) -> Search:
    """The search along unit direction ``u`` (d,) for prompt ``n``: one deterministic row per grid index."""
    def noise(ks: list[int]) -> torch.Tensor:
        return torch.stack([k * step * u for k in ks])

    def read(ks: list[int], hits: torch.Tensor, margins: torch.Tensor) -> list[tuple[bool, float]]:
        return [(bool(h), float(m)) for h, m in zip(hits, margins)]

    return Search(n, grid_search(k_max, first), noise, read)


DIRECTIONS = ("-delta", "drift", "form-drift")
_DIRECTION_COLUMNS = {"-delta": ("rho_along_delta", "delta_norm"), "drift": ("rho_along_drift", "miss_norm"),
                      "form-drift": ("rho_along_form_drift", "form_drift_norm")}


def directional_tolerance(lm: LM, update: EditUpdate, directions: Sequence[str] = ("-delta", "drift"),
                          forms: Sequence[str] = FORMS, step: float | None = None, max_radius: float | None = None,
                          requests: Sequence[int] | None = None, criterion: str = "prob", threshold: float = 0.5,
                          batch_size: int = 16, per_form: int | None = None) -> pd.DataFrame:
    """The tolerance of δ along given directions, per request and form prompt (see the module docstring).

    For each direction ``u`` (unit): the largest ``t = k·step`` such that ``δ + t'·u`` added at (L, subject's last
    token) of the *unedited* model predicts the target for every grid ``t' = 0, step, …, t``; 0 with
    ``predicted`` False when ``δ`` itself does not; capped at ``max_radius``; NaN when the direction is undefined
    (a zero vector, e.g. ``"form-drift"`` on the declarative prompt).

    Args:
        lm: the *unedited* model the update was computed on (bit-identical afterwards, no hooks left).
        update: the edit (δ from its value result, or ``z − h`` for an imported update).
        directions: any of ``"-delta"``, ``"drift"``, ``"form-drift"``.
        forms: prompt forms (declarative = the edit prompt; the others from ``eval_prompts``).
        step: grid step (default 2% of the mean ‖h‖ at L of the edit prompts, ``update.h``).
        max_radius: search limit (default 4·mean ‖h‖).
        requests: indices of the requests to measure (default all).
        criterion: ``"prob"`` (default), ``"argmax"``, ``"beats-true"`` or ``"auto"`` (``"beats-true"`` where
            the request has a ``target_true``).
        threshold: the probability threshold of ``"prob"``.
        batch_size: prompts per forward when reading the edited model's drift.
        per_form: measure only the first that many prompts of each form (None: all).

    Returns:
        tidy DataFrame, one row per (request, form, prompt): ``editor, case_id, subject, relation, form,
        prompt_idx, layer, metric ("directional_tolerance"), criterion, threshold, step, max_radius, h_norm,
        predicted, evaluations, seconds`` and per direction its radius and the distance to its landmark:
        ``rho_along_delta`` / ``delta_norm`` (``‖δ‖``), ``rho_along_drift`` / ``miss_norm`` (``‖v_form − δ‖``),
        ``rho_along_form_drift`` / ``form_drift_norm`` (``‖v_form − v_decl‖``).
    """
    update.check_model(lm)
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad or not directions:
        raise GeomprobeError(f"unknown direction {bad[0] if bad else None!r}; use {', '.join(DIRECTIONS)}")
    idx = list(range(len(update.requests)) if requests is None else requests)
    check_criterion(update, idx, criterion, threshold)
    L, deltas = request_deltas(update)
    h_mean = float(update.h.float().norm(dim=0).mean())
    step = float(step if step is not None else 0.02 * h_mean)
    max_radius = float(max_radius if max_radius is not None else 4 * h_mean)
    if not (step > 0 and math.isfinite(step)):
        raise GeomprobeError(f"step must be a positive finite number, got {step}")
    k_max = int(max_radius / step + 1e-9)
    prompts = form_prompts(update, forms, lm.tokenizer, idx, per_form)
    v = v_decl = None
    if any(d != "-delta" for d in directions):
        reads = residual_changes(lm, update, prompts, [L], batch_size)
        change = (reads["he"] - reads["h"])[:, 0]  # (n_all, d)
        v = change[:len(prompts)]
        v_decl = torch.stack([change[reads["decl"][fp.i]] for fp in prompts])
    dev = lm.device_of(L)
    made = []
    for fp in prompts:
        r = update.requests[fp.i]
        crit = request_criterion(r, criterion)
        made.append(_Prompt(lm, fp.prompt, r.target_new, deltas[fp.i].to(dev), L, crit, threshold,
                            r.target_true if crit == "beats-true" else None))
    rows, searches, search_of = [], [], {}  # search_of[(n, direction)]: index into searches
    for n, fp in enumerate(prompts):
        r, delta, p = update.requests[fp.i], deltas[fp.i], made[n]
        vectors = {"-delta": -delta}
        if v is not None:
            vectors.update({"drift": v[n] - delta, "form-drift": v[n] - v_decl[n]})
        row = {"editor": update.editor, "case_id": r.case_id, "subject": r.subject, "relation": r.relation,
               "form": fp.form, "prompt_idx": fp.j, "layer": L, "metric": "directional_tolerance",
               "criterion": label(p.criterion, threshold),
               "threshold": float(threshold) if p.criterion == "prob" else math.nan, "step": step,
               "max_radius": max_radius}
        for name in directions:
            vec = vectors[name]
            norm = float(vec.norm())
            rho_col, dist_col = _DIRECTION_COLUMNS[name]
            row[dist_col] = norm
            if not norm > 0:
                row[rho_col] = math.nan
                continue
            search_of[(n, name)] = len(searches)
            searches.append(_direction_search(n, (vec / norm).to(dev), step, k_max,
                                              first=min(k_max, max(1, round(norm / step)))))
        rows.append(row)
    from ..progress import progress
    t0 = time.perf_counter()
    where = group_prompts(made)
    bar = progress(len(searches), f"directional tolerance ({update.editor})", "search")
    run_searches(searches, where, bar)
    bar.close()
    seconds = (time.perf_counter() - t0) / max(len(prompts), 1)  # shared batches: the mean per prompt
    for n, row in enumerate(rows):
        p, evals, predicted = made[n], 0, None
        for name in directions:
            if (n, name) in search_of:
                k, calls = searches[search_of[(n, name)]].result
                evals += calls
                predicted = k >= 0
                row[_DIRECTION_COLUMNS[name][0]] = max(k, 0) * step
        if predicted is None:  # every direction undefined: still say whether δ itself predicts the target
            predicted = bool(p.batched(torch.zeros(1, lm.d_model, device=dev))[0][0])
            evals += 1
        row.update({"h_norm": _h_norm_of(p, where[n]), "predicted": bool(predicted), "evaluations": evals,
                    "seconds": seconds})
        p.free()
    return pd.DataFrame(rows)
