"""One forward per prompt: every continuation scored and the greedy answer generated from the same keys/values.

Evaluation asks several things of one prompt: the teacher-forced log-probability of ``target_new`` and of
``target_true``, the argmax along a reference continuation (token-accuracy locality) and a greedy answer.  Run
separately, each of them runs the prompt again.  A :class:`Plan` collects them; :meth:`Plan.run` runs each distinct
prompt once (left-padded batches whose chat-template frame runs once, :mod:`geomprobe.shared`; the LM head only at
the last column), then each continuation only on its own tokens against the rows of that cache it needs, and the
greedy steps last.  Equal to separate forwards up to float rounding (``tests/test_prompt_pass.py``: every tiny
architecture).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from . import shared
from .scoring import token_logprobs

__all__ = ["Plan", "Scored", "enabled"]

_ON = [True]


@contextmanager
def enabled(on: bool) -> Iterator[None]:
    """Run each distinct prompt once (on, the default) or once per job and per greedy answer (off) inside the
    block."""
    old, _ON[0] = _ON[0], bool(on)
    try:
        yield
    finally:
        _ON[0] = old


@dataclass(frozen=True)
class Scored:
    """A continuation teacher-forced after its prompt: summed log-prob of its ``n`` tokens, how many are the
    argmax (``hits``), and the argmax at each of its positions."""

    logp: float
    n: int
    hits: float
    argmax: tuple[int, ...]


class Plan:
    """What to compute on a set of prompts: continuations to score (:meth:`score`) and greedy answers
    (:meth:`generate`); identical prompts are run once."""

    def __init__(self) -> None:
        self.prompts: list[tuple[int, ...]] = []
        self._index: dict[tuple[int, ...], int] = {}
        self.jobs: list[tuple[int, tuple[int, ...]]] = []
        self.n_new: list[int] = []

    def _prompt(self, ids: Sequence[int]) -> int:
        key = tuple(int(t) for t in ids)
        if not key:
            raise ValueError("a prompt needs at least one token")
        if key not in self._index:
            self._index[key] = len(self.prompts)
            self.prompts.append(key)
            self.n_new.append(0)
        return self._index[key]

    def score(self, prompt: Sequence[int], tokens: Sequence[int]) -> int:
        """Teacher-force ``tokens`` (non-empty) after ``prompt``; returns the job's index into :meth:`run`'s
        scores."""
        if not tokens:
            raise ValueError("a continuation needs at least one token")
        self.jobs.append((self._prompt(prompt), tuple(int(t) for t in tokens)))
        return len(self.jobs) - 1

    def generate(self, prompt: Sequence[int], n: int) -> int:
        """``n`` greedy tokens after ``prompt`` (the longest asked when asked twice); returns the prompt's index
        into :meth:`run`'s answers."""
        k = self._prompt(prompt)
        self.n_new[k] = max(self.n_new[k], int(n))
        return k

    def run(self, lm: Any, batch_size: int = 16) -> tuple[list[Scored], list[list[int]]]:
        """``(scores per job, greedy tokens per prompt)`` (``[]`` for a prompt nothing generates after).

        With :func:`enabled` off, every job and every greedy answer runs its prompt again (the separate forwards
        this replaces; ``geomprobe bench --only evaluation`` compares)."""
        scored: list[Scored | None] = [None] * len(self.jobs)
        answers: list[list[int]] = [[] for _ in self.prompts]
        by_prompt: dict[int, list[int]] = {}
        for j, (k, _) in enumerate(self.jobs):
            by_prompt.setdefault(k, []).append(j)
        pad = pad_id(lm.tokenizer)
        if _ON[0] and lm.d_model < shared.MIN_D_MODEL:
            # a narrow model's forward costs about its Python overhead: whole rows in one padded forward each beat
            # a prompt pass plus a continuation pass (measured on the toy worlds, d = 64)
            self._whole_rows(lm, batch_size, pad, scored)
            units = [(k, [], n) for k, n in enumerate(self.n_new) if n > 0]
        elif _ON[0]:  # a unit: (prompt index, its jobs, greedy tokens after it)
            units = [(k, by_prompt.get(k, []), self.n_new[k]) for k in range(len(self.prompts))
                     if k in by_prompt or self.n_new[k] > 0]
        else:
            units = [(k, [j], 0) for j, (k, _) in enumerate(self.jobs)]
            units += [(k, [], n) for k, n in enumerate(self.n_new) if n > 0]
        rows = [self.prompts[k] for k, _, _ in units]
        for group in shared.groups(rows, lm):
            for chunk in chunks([len(rows[g]) for g in group], batch_size):
                us = [units[group[c]] for c in chunk]
                prompts = [self.prompts[k] for k, _, _ in us]
                P = shared.prefix_of(prompts, min(len(p) for p in prompts) - 1, lm)
                logits, cache, mask, pos = shared.forward(lm, prompts[0][:P], [p[P:] for p in prompts], pad, "left",
                                                          last_only=True)
                last = logits[:, -1]  # (n, vocab): predicts each prompt's next token
                items = [(m, j) for m, (_, js, _) in enumerate(us) for j in js]
                for s in range(0, len(items), batch_size):
                    self._continue(lm, items[s:s + batch_size], last, cache, mask, pos, pad, scored)
                steps = max(n for _, _, n in us)
                if steps:
                    new = _greedy_steps(lm, last, cache, mask, pos, steps)
                    for m, (k, _, n) in enumerate(us):
                        if n:
                            answers[k] = new[m][:n]
        if any(s is None for s in scored):
            raise RuntimeError("prompt pass: a continuation was not scored")
        return scored, answers

    def _whole_rows(self, lm: Any, batch_size: int, pad: int, scored: list) -> None:
        """Score every job as one right-padded row ``prompt + tokens[:-1]`` (no cache)."""
        rows = [self.prompts[k] + toks[:-1] for k, toks in self.jobs]
        for chunk in chunks([len(r) for r in rows], batch_size):
            logits, _, _, _ = shared.forward(lm, (), [rows[j] for j in chunk], pad, "right")
            for r, j in enumerate(chunk):
                k, toks = self.jobs[j]
                start = len(self.prompts[k]) - 1
                _record(logits[r, start:start + len(toks)], toks, scored, j)

    def _continue(self, lm: Any, items: list[tuple[int, int]], last: torch.Tensor, cache: Any, mask: torch.Tensor,
                  pos: torch.Tensor, pad: int, scored: list) -> None:
        """Score the jobs ``items`` ((row of the prompt batch, job)) against a copy of those rows' cache."""
        dev = last.device
        inputs = [self.jobs[j][1][:-1] for _, j in items]  # the last token is only predicted
        width = max(len(x) for x in inputs)
        out = None
        if width:
            idx = torch.tensor([m for m, _ in items], device=mask.device)
            ids = torch.full((len(items), width), pad, dtype=torch.long)
            cmask = torch.zeros((len(items), width), dtype=torch.long)
            for r, x in enumerate(inputs):
                if x:
                    ids[r, :len(x)] = torch.tensor(x, dtype=torch.long)
                    cmask[r, :len(x)] = 1
            full = torch.cat([mask[idx], cmask.to(mask.device)], 1)
            p = pos[idx, -1:] + 1 + torch.arange(width, device=pos.device)[None]
            out = lm.model(input_ids=ids.to(lm.input_device), attention_mask=full, position_ids=p,
                           cache=_select(cache, idx), use_cache=True).logits
        for r, (m, j) in enumerate(items):
            toks = self.jobs[j][1]
            seq = last[m:m + 1] if len(toks) == 1 else torch.cat([last[m:m + 1], out[r, :len(toks) - 1].to(dev)], 0)
            _record(seq, toks, scored, j)


def _record(seq: torch.Tensor, toks: tuple[int, ...], scored: list, j: int) -> None:
    """``scored[j]``: the continuation ``toks`` scored from ``seq`` (len(toks), vocab), the logits predicting each
    of its tokens."""
    gold = torch.tensor(toks, device=seq.device)
    lp = token_logprobs(seq.float(), gold)
    arg = seq.float().argmax(-1)
    scored[j] = Scored(float(lp.sum()), len(toks), float((arg == gold).sum()), tuple(arg.tolist()))


def _select(cache: Any, idx: torch.Tensor) -> Any:
    """A cache holding rows ``idx`` of ``cache`` (new tensors: ``cache`` itself is left as it was)."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    out.batch_select_indices(idx)
    return out


def _greedy_steps(lm: Any, logits: torch.Tensor, cache: Any, mask: torch.Tensor, pos: torch.Tensor,
                  steps: int) -> list[list[int]]:
    """``steps`` greedy tokens per row from the last-column ``logits`` (n, vocab) of a left-padded batch."""
    dev = lm.input_device
    tokens = []
    for step in range(steps):
        nxt = logits.argmax(-1)
        tokens.append(nxt.cpu())
        if step + 1 == steps:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        pos = pos[:, -1:] + 1
        logits = lm.model(input_ids=nxt[:, None].to(dev), attention_mask=mask, position_ids=pos, cache=cache,
                          use_cache=True).logits[:, -1]
    return torch.stack(tokens, 1).tolist()


def pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else (tokenizer.eos_token_id or 0))


def chunks(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches (less padding; results do not depend on the order)."""
    order = sorted(range(len(lengths)), key=lambda k: lengths[k])
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
