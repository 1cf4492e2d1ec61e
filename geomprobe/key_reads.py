"""``gp.keys``: the rewrite-module input at each subject's last token, for many prompts and layers."""

from __future__ import annotations

from typing import Sequence

import torch

from .data.forms import Rendered
from .errors import GeomprobeError
from .hooks import read
from .models.load import LM
from .positions import render_pairs, tokenize


def keys(lm: LM, prompts: Sequence[str | Rendered], subjects: Sequence[str] | None, layers: Sequence[int] | int,
         batch_size: int = 16, padding_side: str | None = None) -> torch.Tensor:
    """Keys ``k`` (down-projection inputs) at each subject's last token.

    Args:
        prompts: full prompts, ``{}`` templates, or :class:`Rendered` prompts (then ``subjects`` may be None).
        subjects: one subject per prompt (its last occurrence in the prompt is used).
        layers: layer index or indices.
        batch_size: prompts per forward; the forward stops after the deepest layer asked for.

    Returns:
        (n_prompts, n_layers, d_mlp) float32 tensor on the CPU.
    """
    layers = [layers] if isinstance(layers, int) else list(layers)
    if not layers:
        raise GeomprobeError("no layers given; pass at least one layer index")
    if not prompts:
        raise GeomprobeError("no prompts given; pass at least one prompt")
    if subjects is None:
        if not all(isinstance(p, Rendered) for p in prompts):
            raise GeomprobeError("subjects=None needs Rendered prompts; pass one subject per prompt")
        rendered = list(prompts)
    else:
        rendered = render_pairs(prompts, subjects)
    out = []
    for i in range(0, len(rendered), batch_size):
        batch = tokenize(lm.tokenizer, rendered[i:i + batch_size], padding_side=padding_side)
        with torch.no_grad(), read(lm, layers, ("key",), positions=batch.subject_last, stop=True) as reads:
            lm.forward(batch)
        out.append(torch.stack([reads["key"][l].float().cpu() for l in layers], dim=1))
    return torch.cat(out)
