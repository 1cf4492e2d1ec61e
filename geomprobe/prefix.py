"""Prefix caching: re-run only what a change at (block L, subject's last token) can change.

A vector added to the residual stream after block ``L`` at column ``s`` changes nothing at columns ``< s``
(attention is causal) and nothing before block ``L + 1``.  For a left-padded batch whose rows' injection
columns are all ``>= P`` (``P`` = the smallest of them) a perturbed forward therefore needs

* the keys/values of columns ``[0, P)`` at every block — unperturbed, computed once (the model's own cache);
* the residual after block ``L`` at columns ``[P, seq)`` — unperturbed, computed once;
* per perturbation: blocks ``L + 1 ..`` on columns ``[P, seq)`` only, attending to the cached prefix, and the
  LM head only where it is scored.

:func:`prepare` builds a :class:`Suffix` once; :func:`run` answers each perturbed forward.  Both are exact:
equal to the full forward with :func:`geomprobe.hooks.add_to_residual` up to float rounding (tested on every
tiny architecture and under left padding).  Rows whose injection column lies after ``P`` recompute a few
unperturbed columns; sorting rows by ``seq - subject_last`` before chunking (:func:`suffix_chunks`) keeps that
small.
"""

from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import torch
from transformers import DynamicCache

from .hooks import _hook, read, resume_from
from .positions import Batch

if TYPE_CHECKING:
    from .models.load import LM

__all__ = ["Suffix", "head_at", "prefix_kv", "prepare", "prepare_group", "prepare_many", "run", "length_chunks",
           "suffix_chunks"]


@dataclass(frozen=True)
class Suffix:
    """What a perturbed forward of one left-padded batch reuses.

    Attributes:
        layer: perturbations enter after block ``layer``.
        start: ``P``, the first column that is re-run (every row's injection column is ``>= P``).
        input_ids, position_ids: (rows, W) the re-run columns ``[P, seq)``.
        attention_mask: (rows, P + W) the whole mask (cached prefix and re-run columns).
        hidden: (rows, W, d) residual after block ``layer`` at the re-run columns, model dtype, layer's device.
        kv: per block, the prefix's (key, value) states (empty when ``start == 0``).
        inject: (rows,) the injection column of each row, counted from ``start``.
    """

    layer: int
    start: int
    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    hidden: torch.Tensor
    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    inject: torch.Tensor

    @property
    def width(self) -> int:
        return self.input_ids.shape[1]


#: what one more forward (and its backward) costs, in padded columns of one row: the per-call overhead, measured
#: on SmolLM2 on 2 CPU cores (HKI value optimisation: 32, 128, 512 against fixed chunks of 32 rows); chooses cuts only
CHUNK_OVERHEAD = 128


def length_chunks(lengths: torch.Tensor, size: int, overhead: int = CHUNK_OVERHEAD) -> list[torch.Tensor]:
    """Row indices in micro-batches of at most ``size`` rows that cost least: rows sorted by ``lengths`` (rows,),
    cut where ``Σ_chunks (rows · longest length) + overhead · chunks`` — the padded columns computed plus a cost per
    forward — is smallest (exact dynamic programme over the sorted rows).  Rows are independent, so any chunking
    gives the same results; this one keeps rows of very different lengths out of one padded forward."""
    lengths = lengths.cpu()
    order = torch.argsort(lengths, stable=True)
    ln = lengths[order].tolist()
    n, size = len(ln), max(1, int(size))
    best, cut = [0.0] + [math.inf] * n, [0] * (n + 1)
    for j in range(1, n + 1):  # best[j]: the cheapest chunking of the j shortest rows; the last chunk is [i, j)
        for i in range(max(0, j - size), j):
            c = best[i] + (j - i) * ln[j - 1] + overhead
            if c < best[j]:
                best[j], cut[j] = c, i
    out, j = [], n
    while j > 0:
        out.append(order[cut[j]:j])
        j = cut[j]
    return out[::-1]


def suffix_chunks(batch: Batch, positions: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Row indices in micro-batches of at most ``size``, grouped by suffix length ``seq - position``
    (left padding aligns row ends, so rows of one chunk share most of their re-run columns;
    :func:`length_chunks` chooses the cuts)."""
    return length_chunks(batch.input_ids.shape[1] - positions.cpu(), size)


def prefix_kv(lm: "LM", batch: Batch, start: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Keys/values of columns ``[0, start)`` at every block: one forward of the prefix, the model's own cache."""
    if start == 0:
        return ()
    body = lm.model.get_decoder() if hasattr(lm.model, "get_decoder") else lm.model.base_model
    dev = lm.input_device
    cache = DynamicCache(config=lm.model.config)
    body(input_ids=batch.input_ids[:, :start].to(dev), attention_mask=batch.attention_mask[:, :start].to(dev),
         position_ids=batch.position_ids[:, :start].to(dev), cache=cache, use_cache=True)
    return tuple((layer.keys, layer.values) for layer in cache.layers)


def prepare(lm: "LM", batch: Batch, layer: int, positions: torch.Tensor,
            hidden: torch.Tensor | None = None) -> Suffix:
    """Everything a perturbed forward of ``batch`` reuses (no gradient).

    Args:
        batch: left-padded rows.
        layer: perturbations enter after block ``layer``.
        positions: (rows,) injection column of each row (e.g. ``batch.subject_last``).
        hidden: (rows, seq, d) residual after block ``layer`` if already read (else one forward reads it).
    """
    start = int(positions.min())
    with torch.no_grad():
        if hidden is None:
            with read(lm, [layer], ("resid",), stop=True) as r:
                lm.forward(batch.to(lm.input_device))
            hidden = r["resid"][layer]
        kv = prefix_kv(lm, batch, start)
    return Suffix(layer, start, batch.input_ids[:, start:], batch.position_ids[:, start:], batch.attention_mask,
                  hidden[:, start:], kv, (positions - start).to(hidden.device))


def _padded(lm: "LM", batches: list[Batch], layer: int):
    """One forward of one-row unpadded ``batches`` left-padded together, through every block with the model's cache:
    ``(ids, mask, position ids, cache, residual after block layer (n, width, d), lengths)``, or None when a batch has
    several rows or padding, or a cache keeps fewer columns than it was given (a sliding window shorter than the
    rows: no cut is exact)."""
    if any(len(b) != 1 or not bool(b.attention_mask.all()) for b in batches):
        return None
    lens = [b.input_ids.shape[1] for b in batches]
    width = max(lens)
    ids = torch.zeros(len(batches), width, dtype=batches[0].input_ids.dtype)
    mask = torch.zeros(len(batches), width, dtype=batches[0].attention_mask.dtype)
    for i, (b, n) in enumerate(zip(batches, lens)):
        ids[i, width - n:] = b.input_ids[0].cpu()
        mask[i, width - n:] = 1
    pos_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    body = lm.model.get_decoder() if hasattr(lm.model, "get_decoder") else lm.model.base_model
    dev = lm.input_device
    cache = DynamicCache(config=lm.model.config)
    with torch.no_grad(), read(lm, [layer], ("resid",)) as r:
        body(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos_ids.to(dev), cache=cache,
             use_cache=True)
    if any(c.keys.shape[-2] != width for c in cache.layers):
        return None
    return ids, mask, pos_ids, cache, r["resid"][layer], lens


def prepare_many(lm: "LM", batches: list[Batch], layer: int, positions: list[torch.Tensor]) -> list[Suffix]:
    """:func:`prepare` for many one-row batches with one forward (no gradient): the rows are left-padded together,
    run once through every block with the model's cache, and each row's prefix keys/values and residual after
    block ``layer`` are cut back out, so each :class:`Suffix` is the one :func:`prepare` builds for its batch alone
    (equal up to float rounding; tested under left padding on every tiny architecture).

    Args:
        batches: one-row batches without padding (another batch, or a cache that keeps fewer columns than it
            was given — a sliding window shorter than the rows — falls back to :func:`prepare` per batch).
        positions: (1,) injection column of each batch.
    """
    if not batches:
        return []
    done = None if len(batches) == 1 else _padded(lm, batches, layer)
    if done is None:
        return [prepare(lm, b, layer, pos) for b, pos in zip(batches, positions)]
    _, _, _, cache, hidden, lens = done
    width = max(lens)
    out = []
    for i, (b, n, pos) in enumerate(zip(batches, lens, positions)):
        o, start = width - n, int(pos.min())
        kv = () if start == 0 else tuple((c.keys[i:i + 1, :, o:o + start].clone(), c.values[i:i + 1, :, o:o + start]
                                          .clone()) for c in cache.layers)
        h = hidden[i:i + 1, o + start:].clone()
        out.append(Suffix(layer, start, b.input_ids[:, start:], b.position_ids[:, start:], b.attention_mask, h, kv,
                          (pos - start).to(h.device)))
    return out


def prepare_group(lm: "LM", batches: list[Batch], layer: int, positions: list[torch.Tensor]
                  ) -> tuple[Suffix, list[int]] | None:
    """One :class:`Suffix` whose rows are many one-row batches left-padded together (one forward, no gradient), so
    perturbations of different prompts run in one :func:`run`; and each row's left padding (add it to a column of
    the batch to get the column in the group).  The re-run columns start at the earliest injection column of any
    row, so rows with a shorter suffix re-run a few unperturbed columns (exact; group prompts by ``len -
    position`` to keep that small).  None when :func:`prepare_many` would fall back (the caller then runs the
    prompts alone).

    Args:
        batches: one-row batches without padding.
        positions: (1,) injection column of each batch.
    """
    done = _padded(lm, batches, layer)
    if done is None:
        return None
    ids, mask, pos_ids, cache, hidden, lens = done
    width = max(lens)
    pads = [width - n for n in lens]
    inject = torch.tensor([o + int(p.min()) for o, p in zip(pads, positions)])
    start = int(inject.min())
    kv = () if start == 0 else tuple((c.keys[:, :, :start], c.values[:, :, :start]) for c in cache.layers)
    sfx = Suffix(layer, start, ids[:, start:], pos_ids[:, start:], mask, hidden[:, start:], kv,
                 (inject - start).to(hidden.device))
    return sfx, pads


def _cache(lm: "LM", kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]) -> DynamicCache | None:
    if not kv:
        return None
    cache = DynamicCache(config=lm.model.config)
    for i, (k, v) in enumerate(kv):
        cache.update(k, v, i)
    return cache


@contextmanager
def head_at(lm: "LM", cols: torch.Tensor | None, keep: torch.Tensor | None = None) -> Iterator[None]:
    """Run the LM head only at ``cols`` (rows, k): per-row columns of the re-run part; with ``keep`` (rows, k) bool,
    only at the kept entries, flattened row by row into one sequence (1, kept, d)."""
    if cols is None:
        yield
        return

    def on_head(mod, args):
        x = args[0]
        idx = cols.to(x.device)[..., None].expand(-1, -1, x.shape[-1])
        x = x.gather(1, idx)
        return (x if keep is None else x[keep.to(x.device)][None], *args[1:])

    with ExitStack() as stack:
        _hook(stack, lm.model.get_output_embeddings(), on_head, pre=True)
        yield


def run(lm: "LM", sfx: Suffix, rows: torch.Tensor | None = None, add: torch.Tensor | None = None,
        head: torch.Tensor | None = None, replace: torch.Tensor | None = None,
        head_keep: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of a perturbed forward, re-running blocks ``layer + 1 ..`` on the suffix columns only.

    Args:
        rows: which rows of ``sfx`` to run (all when None).
        add: (rows, d) vector added to the residual after block ``layer`` at each row's injection column
            (may require grad; the graph is kept).
        replace: (rows, W, d) the residual after block ``layer`` at the re-run columns, used instead of
            ``sfx.hidden`` (e.g. another model state's); ``add`` is added on top.
        head: (rows, k) columns (counted from ``sfx.start``) where the LM head runs; all columns when None.
        head_keep: (rows, k) bool: run the head only where True (rows with fewer scored columns than ``k``).

    Returns:
        (rows, k or W, vocab) logits; with ``head_keep``, (kept, vocab), row by row.
    """
    sel = slice(None) if rows is None else rows
    hidden = sfx.hidden[sel] if replace is None else replace
    if add is not None:
        r = torch.arange(len(hidden), device=hidden.device)
        bump = torch.zeros(hidden.shape, device=hidden.device, dtype=add.dtype).index_put(
            (r, sfx.inject[sel].to(hidden.device)), add.to(hidden.device))
        hidden = hidden + bump.to(hidden.dtype)
    kv = tuple((k[sel], v[sel]) for k, v in sfx.kv)
    dev = lm.input_device
    with resume_from(lm, sfx.layer + 1, hidden), head_at(lm, head, head_keep):
        out = lm.model(input_ids=sfx.input_ids[sel].to(dev), attention_mask=sfx.attention_mask[sel].to(dev),
                       position_ids=sfx.position_ids[sel].to(dev), cache=_cache(lm, kv), use_cache=bool(kv))
    return out.logits if head_keep is None else out.logits[0]
