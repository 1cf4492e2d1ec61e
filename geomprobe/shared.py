"""Shared-prefix forwards: prompts of one form share their chat-template prefix; compute it once.

Evaluation prompts of a form start with the same tokens (system turn, the instruction frame up to the
question); declarative prompts of one relation share their template's opening words.  :func:`groups` puts
token rows with a common opening together; :func:`prefix_of` is the longest prefix every row of a group shares
(kept short of the first scored position); :func:`forward` runs the prefix once (batch 1) and the rows' rest
against its keys/values.  Equal to the plain forward up to float rounding (tests: every tiny architecture,
teacher forcing and greedy generation).  ``enabled(False)`` turns it off (``geomprobe bench`` compares).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Sequence

import torch
from transformers import DynamicCache

if TYPE_CHECKING:
    from .models.load import LM

__all__ = ["enabled", "forward", "groups", "is_enabled", "prefix_of", "worth"]

_ON = [True]
#: Rows are grouped by their first ``KEY`` tokens.
KEY = 8
#: A shared prefix shorter than this is not worth a separate pass (nor splitting the batch for it): such rows
#: run as plain padded batches.  Chat-templated prompts share 15-50 tokens (system turn, instruction frame).
MIN_PREFIX = 12


def is_enabled() -> bool:
    return _ON[0]


@contextmanager
def enabled(on: bool) -> Iterator[None]:
    """Turn shared-prefix forwards on or off inside the block (evaluation falls back to plain batches)."""
    old, _ON[0] = _ON[0], bool(on)
    try:
        yield
    finally:
        _ON[0] = old


#: Models narrower than this run plain batches: a forward of the toy worlds costs about as much as its Python
#: overhead, so the extra prefix pass and the smaller batches lose (measured on toy-llama, d = 64: 0.29x).
MIN_D_MODEL = 256


def worth(lm: "LM") -> bool:
    """Shared-prefix forwards are on (:func:`enabled`) and pay off on this model's width."""
    return is_enabled() and lm.d_model >= MIN_D_MODEL


def groups(rows: Sequence[Sequence[int]], lm: "LM | None" = None) -> list[list[int]]:
    """Indices of ``rows`` grouped by their first :data:`KEY` tokens; groups whose rows share fewer than
    :data:`MIN_PREFIX` tokens are pooled into one plain group (one group of all rows when disabled, or when
    ``lm`` is too narrow to gain: :func:`worth`)."""
    if not is_enabled() or (lm is not None and not worth(lm)):
        return [list(range(len(rows)))]
    by_key: dict[tuple[int, ...], list[int]] = {}
    for k, r in enumerate(rows):
        by_key.setdefault(tuple(r[:KEY]), []).append(k)
    out, plain = [], []
    for idx in by_key.values():
        (out if _common([rows[k] for k in idx], 10 ** 9) >= MIN_PREFIX else plain).append(idx)
    flat = [k for idx in plain for k in idx]
    return out + ([flat] if flat else [])


def _common(rows: Sequence[Sequence[int]], limit: int) -> int:
    n = min(limit, *(len(r) for r in rows))
    first = rows[0]
    p = 0
    while p < n and all(r[p] == first[p] for r in rows):
        p += 1
    return p


def prefix_of(rows: Sequence[Sequence[int]], limit: int, lm: "LM | None" = None) -> int:
    """Length of the longest token prefix all ``rows`` share, at most ``limit`` (0 when disabled, shorter than
    :data:`MIN_PREFIX`, or ``lm`` too narrow: :func:`worth`)."""
    if not is_enabled() or not rows or (lm is not None and not worth(lm)):
        return 0
    p = _common(rows, limit)
    return p if p >= MIN_PREFIX else 0


def _prefix_cache(lm: "LM", prefix: Sequence[int], n: int) -> DynamicCache:
    """Keys/values of ``prefix`` (one pass, batch 1), repeated for ``n`` rows."""
    dev = lm.input_device
    ids = torch.tensor([list(prefix)], device=dev)
    one = DynamicCache(config=lm.model.config)
    lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.arange(len(prefix), device=dev)[None],
             cache=one, use_cache=True, logits_to_keep=1)
    cache = DynamicCache(config=lm.model.config)
    for i, layer in enumerate(one.layers):
        cache.update(layer.keys.expand(n, -1, -1, -1), layer.values.expand(n, -1, -1, -1), i)
    return cache


def forward(lm: "LM", prefix: Sequence[int], rest: Sequence[Sequence[int]], pad_id: int, side: str = "right",
            last_only: bool = False):
    """The model on ``prefix + rest[k]`` for every row, the prefix computed once.

    Args:
        prefix: tokens every row starts with (may be empty: a plain padded forward).
        rest: each row's tokens after the prefix (non-empty).
        side: padding of the rest, ``"right"`` (teacher forcing) or ``"left"`` (generation: last column = last
            token of every row).

    Returns:
        ``(logits, cache, mask, positions)``: logits (n, width, vocab) of the rest's columns, the cache holding
        prefix and rest, the full attention mask (n, P + width) and the rest's position ids (n, width) — what a
        greedy continuation extends.  ``last_only``: the LM head runs on the last column alone (logits (n, 1,
        vocab); with ``side="left"`` that column predicts every row's next token).
    """
    dev = lm.input_device
    n, width, P = len(rest), max(len(r) for r in rest), len(prefix)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for k, r in enumerate(rest):
        sl = slice(0, len(r)) if side == "right" else slice(width - len(r), width)
        ids[k, sl] = torch.tensor(list(r), dtype=torch.long)
        mask[k, sl] = 1
    pos = P + (mask.cumsum(-1) - 1).clamp(min=0)
    full_mask = torch.cat([torch.ones((n, P), dtype=torch.long), mask], 1).to(dev)
    cache = _prefix_cache(lm, prefix, n) if P else DynamicCache(config=lm.model.config)
    out = lm.model(input_ids=ids.to(dev), attention_mask=full_mask, position_ids=pos.to(dev), cache=cache,
                   use_cache=True, **({"logits_to_keep": 1} if last_only else {}))
    return out.logits, cache, full_mask, pos.to(dev)
