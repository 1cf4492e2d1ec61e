"""Value optimisation, shared by every editor: find ``z = h + δ`` at the last edit layer.

``δ`` is added to the residual stream after block ``L`` at the subject's last token of each prompt and
optimised with Adam on MEMIT's ``compute_z`` objective

    mean over prompts NLL(target | prompt)  +  kl · KL(P_new ‖ P_old)  +  wd · ‖δ‖ / ‖h‖²

with the KL taken at the subject's last token of ``"{subject} is a"`` (δ added there too) and ``‖δ‖``
clamped to ``clamp · ‖h‖`` after each step.  The prompts are the edit prompt bare and under the model's
own context prefixes (:mod:`geomprobe.editors.contexts`); ``h`` is the *bare* prompt's residual
(MEMIT's ``target_init``).  ``ValueConfig.norm = "mlp"`` measures wd and clamp against the MLP output
instead (ROME's ``compute_v``).  As in the reference the last of ``steps`` iterations only measures the
loss.  Three modes decide how prompts and requests share a ``δ`` and how the gradient that reaches it is
built:

* ``per-request`` (MEMIT): one ``δ`` per request, gradient of its own loss.
* ``joint`` (MEMIT-Merge): one ``δ`` per subject, gradient of the summed losses of its relations.
* ``hki`` (RoSE): one ``δ`` per subject; each relation's gradient is the *robust centroid* (geometric
  median, Weiszfeld) of its per-leaf gradients over M leaves (the edit prompt, with its context prefixes,
  and the first M − 1 templates of the relation's training pool: declarative, question and instruction
  forms), and the root step uses the *sum* of the relation centroids, as the joint objective does (so KL
  and weight decay weigh the same against the data terms in ``hki`` and ``joint``).  Instruction and
  question leaves share the evaluation's system frame unless ``hki_frame = "held-out"``; only the wording
  (training pool vs held-out ``eval_questions``) is held out by default.

Scale: Adam's step is per coordinate, so a fixed learning rate means different things for models whose
residual norms differ 100× (toy norms are 100–900).  ``δ`` is therefore parametrised as
``δ = u · rms(h) / ref_rms`` and Adam (invariant to the gradient's scale) runs on ``u``: each coordinate of
``δ`` moves by ``lr · rms(h) / ref_rms`` at most, exactly MEMIT's ``lr`` on a model whose residual RMS is
``ref_rms`` (GPT-J's scale by default, see :class:`~geomprobe.editors.config.ValueConfig`), and the same
step relative to ``‖h‖`` on every other model.  ``ref_rms = 0`` optimises ``δ`` directly.

The residual after block L does not depend on δ, so it is computed once and every optimisation step
resumes the forward from block L+1 (:func:`geomprobe.hooks.resume_from`); nor do the columns before the
subject's last token, so their keys/values are cached once and each step runs blocks L+1.. on the columns
from the subject's last token on only (:mod:`geomprobe.prefix`, ``ValueConfig.prefix_cache``).  Either way the
final column (the last target token, scored nowhere) is not run and the LM head runs only at each row's own target
tokens.

One backward per step yields every per-prompt gradient: each row of the batch gets its own copy of its
``δ`` as a leaf, and rows do not interact, so ``rows.grad[i]`` is exactly the gradient of prompt ``i``'s loss.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch

from .. import prefix
from ..data.forms import Rendered, render, train_prompts
from ..data.requests import EditRequest
from ..errors import GeomprobeError, NumericalError
from ..hooks import add_to_residual, read, resume_from
from ..models.load import LM
from ..positions import Batch, tokenize
from ..scoring import TargetBatch, token_logprobs, with_targets
from .config import MODES, Mode, ValueConfig
from .contexts import MEMIT_LENGTHS, ROME_LENGTHS, context_templates
from .memory import PeakMemory

__all__ = ["MODES", "Mode", "ValueConfig", "ValueResult", "edit_prompts", "geometric_median",
           "group_names", "optimize_values"]


@dataclass(frozen=True)
class ValueResult:
    """Optimised targets at layer ``layer``; one column per group (request or subject).

    Attributes:
        layer: the last edit layer L.
        groups: group keys, ``case_id`` (per-request) or subject (joint/hki).
        members: for each group, indices into the request list.
        h: (d, n_groups) residual at L at the subject's last token of the bare edit prompt (mean over the
            group's requests), float32 CPU.
        delta: (d, n_groups) optimised δ, float32 CPU.
        losses: per step, the mean NLL over groups.
        relation_grads: per recorded step, {(subject, relation): (d,) gradient of that relation's loss w.r.t. δ}.
        steps_run: optimisation steps actually run.
        seconds: wall time.
        mode: the optimisation mode that produced it.
        peak_memory_mb: peak memory during the optimisation (see :class:`~geomprobe.editors.memory.PeakMemory`).
    """

    layer: int
    groups: tuple[str, ...]
    members: tuple[tuple[int, ...], ...]
    h: torch.Tensor
    delta: torch.Tensor
    losses: tuple[float, ...]
    relation_grads: dict[int, dict[tuple[str, str], torch.Tensor]] = field(repr=False)
    steps_run: int
    seconds: float
    mode: Mode = "per-request"
    peak_memory_mb: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.groups)
        if len(self.members) != n:
            raise GeomprobeError(f"ValueResult has {n} groups but {len(self.members)} member lists; one per group")
        for name in ("h", "delta"):
            t = getattr(self, name)
            if t.dim() != 2 or t.shape[1] != n:
                raise GeomprobeError(f"ValueResult.{name} is {tuple(t.shape)}, not (d, {n}): one column per group")
        if self.h.shape != self.delta.shape:
            raise GeomprobeError(f"ValueResult.h {tuple(self.h.shape)} and delta {tuple(self.delta.shape)} differ; "
                                 "both are (d, n_groups)")

    @property
    def z(self) -> torch.Tensor:
        return self.h + self.delta


@dataclass(frozen=True)
class _Rows:
    """Prompt rows of one optimisation problem."""

    tb: TargetBatch
    group: torch.Tensor      # (rows,) group index of each row
    leaf: list[tuple[int, str, int]]  # (group, relation, template id) of each row
    bare: torch.Tensor       # (rows,) True for a request's bare edit prompt (h and ‖v‖ are read there)


CONTEXT_LENGTHS = {"memit": MEMIT_LENGTHS, "rome": ROME_LENGTHS, "none": ()}


def contexts_of(lm: LM, cfg: ValueConfig) -> tuple[str, ...]:
    """The context templates ``cfg.contexts`` names, ``"{}"`` (the bare prompt) first."""
    return context_templates(lm, CONTEXT_LENGTHS[cfg.contexts])


def edit_prompts(lm: LM, request: EditRequest, cfg: ValueConfig) -> list[Rendered]:
    """The request's declarative edit prompt, bare first, then under each context prefix of ``cfg.contexts``."""
    return [render(ctx.replace("{}", request.prompt), request.subject, "declarative") for ctx in contexts_of(lm, cfg)]


def _build_rows(lm: LM, requests: Sequence[EditRequest], groups: list[list[int]], mode: Mode,
                cfg: ValueConfig) -> _Rows:
    prompts: list[Rendered] = []
    targets: list[str] = []
    group_of: list[int] = []
    leaf: list[tuple[int, str, int]] = []
    bare: list[bool] = []
    for g, members in enumerate(groups):
        for i in members:
            r = requests[i]
            # leaf 0: the edit prompt, bare and under its context prefixes (flat mean, MEMIT's compute_z)
            leaves = [edit_prompts(lm, r, cfg)]
            if mode == "hki":  # leaves 1..M-1: the relation's training templates (declarative, question, instruction)
                frame = {} if cfg.hki_frame == "eval" else {"frame": cfg.hki_frame}
                leaves += [[p] for p in train_prompts(r.relation, r.subject, lm.tokenizer,
                                                      m=cfg.hki_templates - 1, template=r.prompt, **frame)]
            for t, variants in enumerate(leaves):
                for j, p in enumerate(variants):
                    prompts.append(p)
                    targets.append(r.target_new)
                    group_of.append(g)
                    leaf.append((g, r.relation, t))
                    bare.append(t == 0 and j == 0)
    # left padding: every row's target tokens sit at the end, so the LM head runs on the last few positions only
    tb = with_targets(lm.tokenizer, prompts, targets, padding_side="left")
    return _Rows(tb, torch.tensor(group_of), leaf, torch.tensor(bare))


def _chunks(attention_mask: torch.Tensor, size: int, keep: int) -> list[tuple[torch.Tensor, int]]:
    """Micro-batches of rows of similar length (:func:`geomprobe.prefix.length_chunks`): ``(row indices, width)``
    with width = the longest row's length (at least ``keep``).  Rows are left-padded, so a chunk needs only its
    last ``width`` columns; chunking by length keeps the padding (HKI's rows range from 5 to ~70 tokens) out of
    the compute."""
    lengths = attention_mask.sum(1).cpu()
    return [(idx, max(int(lengths[idx].max()), keep)) for idx in prefix.length_chunks(lengths, size)]


def _without_last_column(tb: TargetBatch) -> TargetBatch:
    """Left-padded rows without their final column (every row's last target token): it is scored nowhere
    (its label is ``-100``) and, attention being causal, changes no other column, so dropping it is exact."""
    b = tb.batch
    return TargetBatch(Batch(b.input_ids[:, :-1], b.attention_mask[:, :-1], b.position_ids[:, :-1], b.subject_last,
                             b.last - 1, b.offsets[:, :-1]), tb.labels[:, :-1], tb.n_target)


def _read_after(lm: LM, batch: Batch, layer: int, kinds: tuple[str, ...], size: int) -> dict[str, torch.Tensor]:
    """``kinds`` at block ``layer`` of a left-padded batch, each (rows, seq, d) in the model's dtype, read in
    micro-batches of rows of similar length (:func:`_chunks`) so that padding is not computed; the padding
    columns a chunk does not cover are zero (they are masked wherever they are used)."""
    out: dict[str, torch.Tensor] = {}
    seq = batch.input_ids.shape[1]
    for idx, width in _chunks(batch.attention_mask, size, 1):
        with torch.no_grad(), read(lm, [layer], kinds, stop=True) as r:
            lm.forward(_take(batch, idx, width))
        for kind in kinds:
            x = r[kind][layer]
            if kind not in out:
                out[kind] = torch.zeros(len(batch), seq, x.shape[-1], dtype=x.dtype, device=x.device)
            out[kind][idx.to(x.device), seq - width:] = x
    return out


def _take(batch: Batch, idx: torch.Tensor, width: int) -> Batch:
    """Rows ``idx`` of a left-padded batch, trimmed to its last ``width`` columns."""
    off = batch.input_ids.shape[1] - width
    i = idx.to(batch.input_ids.device)
    return Batch(batch.input_ids[i, off:], batch.attention_mask[i, off:], batch.position_ids[i, off:],
                 batch.subject_last[i] - off, batch.last[i] - off, batch.offsets[idx.to(batch.offsets.device), off:])


def _nll_and_grad(logits_of, row_delta: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row NLL (rows,) and its gradient w.r.t. each row's δ (rows, d); ``logits_of(δ rows)`` runs the
    perturbed forward and returns the logits (kept, vocab) of the scored entries of ``labels`` (rows, k), row by
    row (the entries that are not ``-100``)."""
    row_delta = row_delta.clone().requires_grad_(True)
    logits = logits_of(row_delta)
    lab = labels.to(logits.device)
    mask = lab != -100
    lp = token_logprobs(logits, lab[mask])  # (kept,)
    per_row = torch.zeros(len(lab), device=lp.device).index_add(0, mask.nonzero()[:, 0], lp)
    nll = -(per_row / mask.sum(-1).clamp(min=1))
    (grad,) = torch.autograd.grad(nll.sum(), row_delta)
    return nll.detach().to(row_delta.device), grad.float()


def _full_logits(lm: LM, layer: int, hidden: torch.Tensor, subj: torch.Tensor, batch: Batch,
                 scored: torch.Tensor):
    """The forward without prefix caching: blocks L+1.. on every column, the head only at the scored entries
    ``scored`` (rows, k) bool of the last k columns; returns (kept, vocab) logits, row by row."""
    seq, k = hidden.shape[1], scored.shape[1]
    cols = torch.arange(seq - k, seq).expand(len(hidden), -1)

    def logits_of(row_delta: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(hidden), device=hidden.device)
        bump = torch.zeros(hidden.shape, device=hidden.device, dtype=row_delta.dtype).index_put(
            (rows, subj), row_delta.to(hidden.device))
        with resume_from(lm, layer + 1, hidden + bump.to(hidden.dtype)), prefix.head_at(lm, cols, scored):
            return lm.forward(batch)[0]
    return logits_of


def _chunk_runners(lm: LM, layer: int, tb: TargetBatch, hidden: torch.Tensor, labels: torch.Tensor, keep: int,
                   cfg: ValueConfig, device: torch.device) -> list[tuple[torch.Tensor, Any, torch.Tensor]]:
    """Micro-batches of rows, each ``(row indices on device, logits_of(δ rows), labels (rows, k))``.

    With ``cfg.prefix_cache`` rows are grouped by suffix length (columns from the subject's last token on) and
    each chunk caches its prefix (:mod:`geomprobe.prefix`); otherwise by total length, and each step re-runs
    blocks L+1.. on every column.  Rows are left-padded and independent, so either chunking is exact.
    """
    batch = tb.batch
    lengths = batch.attention_mask.sum(1).cpu()
    if cfg.prefix_cache:
        groups = prefix.suffix_chunks(batch, batch.subject_last, cfg.micro_batch)
    else:
        groups = [idx for idx, _ in _chunks(batch.attention_mask, cfg.micro_batch, keep)]
    out = []
    for idx in groups:
        width = max(int(lengths[idx].max()), keep)
        part, off = _take(batch, idx, width), hidden.shape[1] - width
        part_hidden = hidden[idx.to(hidden.device), off:]
        if cfg.prefix_cache:
            sfx = prefix.prepare(lm, part, layer, part.subject_last, hidden=part_hidden)
            k = min(keep, sfx.width)  # every scored column lies at or after the subject's last token
            part_labels = labels[idx.to(device)][:, labels.shape[1] - k:]
            head = torch.arange(sfx.width - k, sfx.width).expand(len(idx), -1)
            scored = (part_labels != -100).cpu()  # the head runs only where a row has a target token
            run = (lambda s, hd, sc: lambda d: prefix.run(lm, s, add=d, head=hd, head_keep=sc))(sfx, head, scored)
        else:
            part_labels = labels[idx.to(device)][:, labels.shape[1] - keep:]
            run = _full_logits(lm, layer, part_hidden, part.subject_last.to(hidden.device), part,
                               (part_labels != -100).cpu())
        out.append((idx.to(device), run, part_labels))
    return out


def _kl_runner(lm: LM, layer: int, kl_batch: Batch, cached: bool):
    """``logp(δ)``: log-probabilities (groups, vocab) at the subject's last token of the KL prompts, with ``δ``
    (groups, d) added after block ``layer`` there (None: unedited).  Cached: blocks L+1.. on the columns from the
    subject's last token and the head at that column only (:mod:`geomprobe.prefix`); else the full forward."""
    pos = kl_batch.subject_last
    if cached:
        sfx = prefix.prepare(lm, kl_batch, layer, pos)
        head = (pos - sfx.start)[:, None]

        def logp(delta):
            return torch.log_softmax(prefix.run(lm, sfx, add=delta, head=head)[:, 0].float(), -1)
        return logp

    def logp(delta):
        with (add_to_residual(lm, layer, pos, delta) if delta is not None else nullcontext()):
            logits = lm.forward(kl_batch)
        return torch.log_softmax(logits[torch.arange(len(pos), device=logits.device), pos.to(logits.device)]
                                 .float(), -1)
    return logp


def geometric_median(points: torch.Tensor, iters: int = 10, eps: float = 1e-8) -> torch.Tensor:
    """Geometric median of ``points`` (n, d) by Weiszfeld iterations, started at the mean: (d,)."""
    y = points.mean(0)
    if len(points) <= 2:
        return y
    for _ in range(iters):
        w = 1.0 / (points - y).norm(dim=1).clamp_min(eps)
        y = (w[:, None] * points).sum(0) / w.sum()
    return y


def optimize_values(lm: LM, requests: Sequence[EditRequest], layer: int, mode: Mode = "per-request",
                    cfg: ValueConfig = ValueConfig(), seed: int = 0, log=None) -> ValueResult:
    """Optimise the target residual ``z`` at ``layer`` for each group of requests.

    Args:
        layer: the last edit layer L (δ enters the residual stream after block L).
        mode: ``per-request``, ``joint`` or ``hki`` (see the module docstring).
    """
    if mode not in MODES:
        raise GeomprobeError(f"unknown value optimisation mode {mode!r}; use one of {', '.join(MODES)}")
    if not requests:
        raise GeomprobeError("no requests to edit; pass at least one EditRequest")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    names, groups = group_names(requests, mode)
    with PeakMemory(lm.device_of(layer)) as mem:
        result = _optimize(lm, requests, layer, mode, cfg, names, groups, log, t0)
    return replace(result, peak_memory_mb=mem.peak_mb)


def group_names(requests: Sequence[EditRequest], mode: Mode) -> tuple[list[str], list[list[int]]]:
    """Column names and member indices: one per request (``per-request``) or per subject (``joint``/``hki``)."""
    if mode == "per-request":
        return ([r.case_id or f"{r.subject}/{r.relation}/{i}" for i, r in enumerate(requests)],
                [[i] for i in range(len(requests))])
    order: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        order.setdefault(r.subject, []).append(i)
    return list(order), list(order.values())


def _optimize(lm, requests, layer, mode, cfg, names, groups, log, t0) -> "ValueResult":
    if mode == "hki":  # every relation gets a pool: registered, built-in, a rule's, else the model's own rewrite
        from ..data.derive import prepare_pools

        prepare_pools(requests, lm=lm, strict=True)
    rows = _build_rows(lm, requests, groups, mode, cfg)
    device = lm.device_of(layer)
    tb = _without_last_column(rows.tb).to(lm.input_device)
    n_groups = len(groups)
    group = rows.group.to(device)

    # The residual after block L does not depend on δ: keep it, and resume every step from block L+1.
    # (stopping after block L: the rest of the network, and logits of every row and position, are not needed)
    kinds = ("resid", "value") if cfg.norm == "mlp" else ("resid",)
    r = _read_after(lm, tb.batch, layer, kinds, cfg.micro_batch)
    hidden = r["resid"]  # (rows, seq, d), model dtype
    rows_all = torch.arange(len(hidden), device=hidden.device)
    subj = tb.batch.subject_last.to(hidden.device)
    bare = rows.bare.to(hidden.device)
    bare_group = group.to(hidden.device)[bare]

    def per_group(x: torch.Tensor) -> torch.Tensor:  # (bare rows, d) -> (groups, d): mean over the group's requests
        out = torch.zeros(n_groups, x.shape[1], device=x.device).index_add_(0, bare_group.to(x.device), x)
        return out / torch.bincount(bare_group, minlength=n_groups).to(x.device)[:, None].float()

    # h: the bare edit prompt's residual after block L at the subject's last token (MEMIT's target_init)
    h = per_group(hidden[rows_all, subj][bare].float())  # (groups, d)
    h_norm = h.norm(dim=1).clamp_min(1e-6)
    if cfg.norm == "mlp":  # ROME: wd and clamp against the MLP output v at the same position
        v_rows = r["value"]
        n_norm = per_group(v_rows[rows_all.to(v_rows.device), subj.to(v_rows.device)][bare.to(v_rows.device)]
                           .float()).norm(dim=1).clamp_min(1e-6).to(h_norm.device)
    else:
        n_norm = h_norm
    # δ = u · scale: Adam's per-coordinate step on δ is lr · rms(h) / ref_rms (ref_rms = 0: on δ itself)
    scale = h_norm / math.sqrt(lm.d_model) / cfg.ref_rms if cfg.ref_rms > 0 else torch.ones_like(h_norm)

    # KL anchor: "{subject} is a" before the edit, at the subject's last token (MEMIT's kl_prompts)
    kl_prompts = [render("{} is a", requests[g[0]].subject, "declarative") for g in groups]
    kl_batch = tokenize(lm.tokenizer, kl_prompts, padding_side="left")
    kl_batch_dev = kl_batch.to(lm.input_device)
    kl_logp = _kl_runner(lm, layer, kl_batch_dev, cfg.prefix_cache)
    with torch.no_grad():
        ref_logp = kl_logp(None)

    u = torch.zeros(n_groups, lm.d_model, device=device, requires_grad=True)
    scale, h_norm, n_norm = scale.to(device), h_norm.to(device), n_norm.to(device)
    opt = torch.optim.Adam([u], lr=cfg.lr)
    keep = int(tb.n_target.max())  # label positions are the last n_target positions (the final one is dropped)
    labels = tb.labels[:, -keep:].to(device)
    chunks = _chunk_runners(lm, layer, tb, hidden, labels, keep, cfg, device)  # built once
    leaves: dict[tuple[int, str, int], list[int]] = {}
    for i, key in enumerate(rows.leaf):
        leaves.setdefault(key, []).append(i)
    leaf_index = {key: torch.tensor(idx, device=device) for key, idx in leaves.items()}
    losses: list[float] = []
    recorded: dict[int, dict[tuple[str, str], torch.Tensor]] = {}
    steps_run = 0
    from ..progress import progress as _progress
    bar = _progress(cfg.steps, f"value optimisation L{layer} ({mode}, {n_groups} targets)", "step")
    for step in range(cfg.steps):
        steps_run = step + 1
        delta = u * scale[:, None]  # (groups, d)
        row_delta = delta.detach()[group]
        nll_rows = torch.empty(len(row_delta), device=device)
        row_grads = torch.empty(len(row_delta), lm.d_model, device=device)
        for idx, logits_of, part_labels in chunks:  # rows are independent: chunking is exact
            nll, grad = _nll_and_grad(logits_of, row_delta[idx], part_labels)
            nll_rows[idx] = nll.to(device)
            row_grads[idx] = grad.to(device)
        if not torch.isfinite(nll_rows).all():
            raise NumericalError("the edit loss became non-finite; lower lr or use float32 for this model")
        nll_rows = nll_rows.detach().to(device)

        # per (group, relation, leaf) mean gradients; per relation their mean (joint) or robust centroid (hki);
        # per group the sum over relations: the gradient of the summed relation losses w.r.t. δ
        by_rel: dict[tuple[int, str], list[torch.Tensor]] = {}
        rel_loss: dict[tuple[int, str], list[torch.Tensor]] = {}
        for (g, rel, t), ix in leaf_index.items():
            by_rel.setdefault((g, rel), []).append(row_grads[ix].mean(0))
            rel_loss.setdefault((g, rel), []).append(nll_rows[ix].mean())
        grad_delta = torch.zeros(n_groups, lm.d_model, device=device)
        group_loss = torch.zeros(n_groups, device=device)
        n_rel = torch.zeros(n_groups, device=device)
        rel_grads: dict[tuple[int, str], torch.Tensor] = {}
        for (g, rel), grads in by_rel.items():
            stack = torch.stack(grads)
            rel_grads[(g, rel)] = geometric_median(stack, cfg.weiszfeld_iters) if mode == "hki" else stack.mean(0)
            grad_delta[g] += rel_grads[(g, rel)]
            group_loss[g] += torch.stack(rel_loss[(g, rel)]).mean()
            n_rel[g] += 1
        losses.append(float((group_loss / n_rel).mean()))
        bar.update()
        bar.set(nll=f"{losses[-1]:.3f}")
        if step % cfg.record_every == 0 or step == cfg.steps - 1:
            recorded[step] = {(requests[groups[g][0]].subject, rel): v.detach().cpu()
                              for (g, rel), v in rel_grads.items()}
        if all(float(l) < cfg.early_stop for l in nll_rows) or step == cfg.steps - 1:
            break  # MEMIT: the last iteration only measures the loss

        # regularisers on delta itself (per group): KL(new ‖ old) on "{subject} is a" and weight decay
        opt.zero_grad()
        delta = u * scale[:, None]
        reg = torch.zeros((), device=device)
        if cfg.kl > 0:
            new_logp = kl_logp(delta)
            # kl_div(input=old, target=new) = Σ P_new (log P_new − log P_old) = KL(P_new ‖ P_old)
            kl_term = torch.nn.functional.kl_div(ref_logp.to(new_logp.device), new_logp, log_target=True,
                                                 reduction="batchmean")
            reg = reg + cfg.kl * kl_term.to(device) * n_groups
        reg = reg + cfg.wd * (delta.norm(dim=1) / n_norm ** 2).sum()
        # chain rule: d loss / d u = (grad_delta + d reg / d delta) * scale
        (reg + (delta * grad_delta).sum()).backward()
        opt.step()
        with torch.no_grad():  # clamp ‖δ‖ ≤ clamp·‖n‖  <=>  ‖u‖ ≤ clamp·‖n‖ / scale
            max_u = (cfg.clamp * n_norm / scale)[:, None]
            norms = u.norm(dim=1, keepdim=True)
            u.mul_(torch.where(norms > max_u, max_u / norms, torch.ones_like(norms)))
        if log is not None:
            log(f"step {step}: nll {losses[-1]:.3f}")
    bar.close()
    delta = (u * scale[:, None]).detach()
    if not torch.isfinite(delta).all():
        raise NumericalError("value optimisation produced non-finite targets; lower lr or use float32")
    return ValueResult(
        layer=layer, groups=tuple(names), members=tuple(tuple(g) for g in groups),
        h=h.detach().float().cpu().T.contiguous(), delta=delta.float().cpu().T.contiguous(),
        losses=tuple(losses), relation_grads=recorded, steps_run=steps_run, seconds=time.perf_counter() - t0,
        mode=mode,
    )
