"""Teacher-forced scoring of a target continuation after a prompt.

The target is appended to the prompt text (with a space unless the prompt ends in whitespace, as after
a chat template's assistant header) and tokenised *together* with it, so the target's tokens are the
ones the model would really produce; target tokens are those whose characters lie past the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .data.forms import Rendered
from .errors import GeomprobeError
from .positions import Batch, tokenize


@dataclass(frozen=True)
class TargetBatch:
    """Prompts + targets, tokenised together.

    Attributes:
        batch: the tokenised ``prompt + sep + target`` texts (subject positions as in the prompts).
        labels: (batch, seq) the token id to predict *at* each position (``-100`` elsewhere): the logits at
            position ``t`` are scored against ``labels[:, t]`` (= ``input_ids[:, t + 1]`` on target tokens).
        n_target: (batch,) number of target tokens per row.
    """

    batch: Batch
    labels: torch.Tensor
    n_target: torch.Tensor

    def to(self, device: torch.device | str) -> "TargetBatch":
        return TargetBatch(self.batch.to(device), self.labels.to(device), self.n_target.to(device))


def join(prompt: str, target: str) -> str:
    """``prompt`` followed by ``target`` (a space in between unless the prompt ends in whitespace)."""
    target = target.strip()
    return prompt + target if (not prompt or prompt[-1].isspace()) else f"{prompt} {target}"


def with_targets(tokenizer: Any, prompts: Sequence[Rendered], targets: Sequence[str],
                 padding_side: str = "right") -> TargetBatch:
    """Tokenise ``prompt + target`` pairs and mark the target tokens."""
    if len(prompts) != len(targets):
        raise GeomprobeError(f"{len(prompts)} prompts but {len(targets)} targets; pass one target per prompt")
    joined = [Rendered(join(p.text, t), p.subject_span, p.form) for p, t in zip(prompts, targets)]
    batch = tokenize(tokenizer, joined, padding_side=padding_side)
    ends = batch.offsets[..., 1]
    prompt_len = torch.tensor([len(p.text) for p in prompts])[:, None]
    is_target = (ends > prompt_len) & batch.attention_mask.bool()
    n_target = is_target.sum(-1)
    if (n_target == 0).any():
        i = int((n_target == 0).nonzero()[0])
        raise GeomprobeError(f"target {targets[i]!r} produced no tokens after prompt {prompts[i].text[-40:]!r}; "
                             "check the target string")
    labels = torch.full_like(batch.input_ids, -100)
    # the logits at position t predict token t+1
    labels[:, :-1] = torch.where(is_target[:, 1:], batch.input_ids[:, 1:], torch.full_like(labels[:, :-1], -100))
    return TargetBatch(batch, labels, n_target)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Teacher-forced log-probability of each label token: the one implementation every scorer uses
    (:func:`target_logprob`, value optimisation, :mod:`geomprobe.evaluate`).

    The softmax is taken in float32 over the last axis; positions whose label is ``-100`` get 0.
    Keeps the autograd graph (value optimisation differentiates through it).

    Args:
        logits: (..., vocab), any float dtype — e.g. (batch, seq, vocab), or (n, vocab) for the
            scored positions only.
        labels: (...) token ids as in :class:`TargetBatch` (``-100`` = not scored), on ``logits``' device.

    Returns:
        (...) float32 log-probabilities.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    mask = labels != -100
    return logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask


def target_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of log-probabilities of the target tokens, per row.

    Args:
        logits: (batch, seq, vocab).
        labels: (batch, seq) as in :class:`TargetBatch`.

    Returns:
        (batch,) float32.
    """
    return token_logprobs(logits, labels).sum(-1)


def token_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Teacher-forced share of target tokens that are the argmax prediction, per row: (batch,)."""
    mask = labels != -100
    hit = (logits.argmax(-1) == labels) & mask
    return hit.sum(-1).float() / mask.sum(-1).clamp(min=1).float()
