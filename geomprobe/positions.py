"""Tokenise prompts and find each subject's last token from character offsets.

Positions come from the tokenizer's offset mapping, never from counting tokens, so they are right
under left and right padding, with a BOS token, and inside chat templates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .data.forms import Rendered, locate_subject
from .errors import GeomprobeError, SubjectNotFoundError


@dataclass(frozen=True)
class Batch:
    """A tokenised batch.

    Attributes:
        input_ids: (batch, seq) token ids.
        attention_mask: (batch, seq) 1 for real tokens.
        position_ids: (batch, seq) positions counted over real tokens (0 at the first real token).
        subject_last: (batch,) index of each subject's last token (-1 where no subject was given).
        last: (batch,) index of each prompt's last real token (where the next token is predicted).
        offsets: (batch, seq, 2) character offsets of each token (empty spans for special/pad tokens).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    subject_last: torch.Tensor
    last: torch.Tensor
    offsets: torch.Tensor

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.position_ids,
                                               self.subject_last, self.last, self.offsets)))

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for the model's forward."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": self.position_ids}


def token_at_char(offsets: torch.Tensor, char: int) -> int:
    """Index of the token whose character span contains ``char``.

    Args:
        offsets: (seq, 2) character offsets of one row; special and pad tokens have empty spans.
    """
    start, end = offsets[:, 0], offsets[:, 1]
    hit = ((start <= char) & (char < end)).nonzero()
    if len(hit) == 0:
        if int(offsets.sum()) == 0:
            raise GeomprobeError("the tokenizer returns no character offsets; load the model with a fast "
                                 "tokenizer that has them (load_model(..., tokenizer=...))")
        raise SubjectNotFoundError(
            f"no token covers character {char} of the prompt (was it truncated?); shorten the prompt or raise max_length"
        )
    return int(hit[-1])


def tokenize(tokenizer: Any, prompts: Sequence[Rendered | str], padding_side: str | None = None,
             max_length: int | None = None) -> Batch:
    """Tokenise rendered prompts (or plain strings, with no subject) into a padded :class:`Batch`.

    Args:
        tokenizer: a *fast* HF tokenizer (offset mappings are needed).
        prompts: :class:`Rendered` prompts (subject span known) or plain strings.
        padding_side: ``"left"`` / ``"right"``; the tokenizer's own setting when None.
    """
    if not prompts:
        raise GeomprobeError("no prompts to tokenise; pass at least one prompt")
    if not getattr(tokenizer, "is_fast", False):
        raise GeomprobeError("geomprobe needs a fast tokenizer (offset mappings); load the model with use_fast=True")
    texts = [p.text if isinstance(p, Rendered) else p for p in prompts]
    old_side = tokenizer.padding_side
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, return_offsets_mapping=True,
                        truncation=max_length is not None, max_length=max_length)
    finally:
        tokenizer.padding_side = old_side
    mask = enc["attention_mask"]
    offsets = enc["offset_mapping"]
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    idx = torch.arange(mask.shape[1]).expand_as(mask)
    last = torch.where(mask.bool(), idx, torch.full_like(idx, -1)).max(-1).values
    subject_last = torch.full((len(texts),), -1, dtype=torch.long)
    for i, p in enumerate(prompts):
        if isinstance(p, Rendered):
            start, end = p.subject_span
            subject_last[i] = token_at_char(offsets[i], end - 1)
    return Batch(enc["input_ids"], mask, position_ids, subject_last, last, offsets)


def render_pairs(prompts: Sequence[str], subjects: Sequence[str]) -> list[Rendered]:
    """Pair full prompts with their subjects (``{}`` templates are filled, else the last occurrence)."""
    if len(prompts) != len(subjects):
        raise GeomprobeError(f"{len(prompts)} prompts but {len(subjects)} subjects; pass one subject per prompt")
    out = []
    for p, s in zip(prompts, subjects):
        if isinstance(p, Rendered):
            out.append(p)
        elif p.count("{}") == 1:
            i = p.index("{}")
            out.append(Rendered(p.replace("{}", s), (i, i + len(s)), "declarative"))
        else:
            out.append(locate_subject(p, s))
    return out
