"""Which layers carry the subject at its last token: a residual-patching layer sweep.

For two requests of the same relation and prompt template with different subjects A and B, the residual
stream after block ``l`` at A's subject-last token is replaced by B's (same position in B's prompt), and
the run counts as a *switch* when the prediction at the end of A's prompt becomes B's prediction.
A high switch rate at layer ``l`` means the answer still flows through the subject token there — the
precondition for locate-then-edit editing at the MLPs up to ``l``.  geomprobe's edit-layer presets for
the toys and SmolLM2 are read off this curve (``figures/layer_sweep.csv``).
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from .. import prefix
from ..data.forms import render
from ..data.requests import EditRequest
from ..errors import GeomprobeError
from ..hooks import add_to_residual, override_value, read
from ..models.load import LM
from ..positions import tokenize


def same_template_pairs(requests: Sequence[EditRequest], max_pairs: int = 40) -> list[tuple[EditRequest, EditRequest]]:
    """Pairs (A, B) of requests with the same prompt template and different subjects, round robin."""
    by_prompt: dict[str, list[EditRequest]] = {}
    for r in requests:
        by_prompt.setdefault(r.prompt, [])
        if all(x.subject != r.subject for x in by_prompt[r.prompt]):
            by_prompt[r.prompt].append(r)
    pairs = []
    for rs in by_prompt.values():
        pairs += [(rs[i], rs[(i + 1) % len(rs)]) for i in range(len(rs)) if len(rs) > 1]
    return pairs[:max_pairs]


def subject_switch_rate(lm: LM, requests: Sequence[EditRequest], layers: Sequence[int] | None = None,
                        max_pairs: int = 40, site: str = "resid", resume: bool = True) -> pd.DataFrame:
    """Switch rate per layer (see the module docstring).

    Args:
        site: ``"resid"`` patches the residual stream after block ``l``; ``"mlp"`` patches only the MLP
            output (the rewrite module's value) of block ``l`` — the share one layer's MLP carries alone.
        resume: (``"resid"`` only) each patched run re-runs blocks ``l + 1 ..`` on the columns from the subject's
            last token on, the rest read once from the unpatched run (:mod:`geomprobe.prefix`; equal to the full
            patched forward up to float rounding); False runs the whole model per layer.

    Returns:
        tidy DataFrame ``layer, site, metric ("switch_rate"), value, n_pairs, n_differ`` where only pairs
        whose unpatched predictions differ count.
    """
    if site not in ("resid", "mlp"):
        raise GeomprobeError(f"site must be 'resid' or 'mlp', got {site!r}")
    kind = "resid" if site == "resid" else "value"
    pairs = same_template_pairs(requests, max_pairs)
    if not pairs:
        raise GeomprobeError("no two requests share a prompt template with different subjects; pass more requests")
    layers = list(layers) if layers is not None else list(range(lm.n_layers))
    A = tokenize(lm.tokenizer, [render(a.prompt, a.subject, "declarative") for a, _ in pairs])
    B = tokenize(lm.tokenizer, [render(b.prompt, b.subject, "declarative") for _, b in pairs])
    resume = resume and site == "resid"
    start = int(A.subject_last.min())
    with torch.no_grad(), read(lm, layers, (kind,), positions=None if resume else A.subject_last) as ra:
        la = lm.forward(A)
    rows_a = torch.arange(len(pairs))
    if resume:  # full columns kept for the resumed runs; the subject's last token read off them
        full = ra["resid"]
        ra = {"resid": {l: full[l][rows_a.to(full[l].device), A.subject_last.to(full[l].device)] for l in layers}}
        kv = prefix.prefix_kv(lm, A, start)
        head = (A.last - start)[:, None]
    with torch.no_grad(), read(lm, layers, (kind,), positions=B.subject_last) as rb:
        lb = lm.forward(B)
    pred_a = la[rows_a, A.last.to(la.device)].argmax(-1).cpu()
    pred_b = lb[rows_a, B.last.to(lb.device)].argmax(-1).cpu()
    differ = pred_a != pred_b
    out = []
    for layer in layers:
        if resume:
            diff = (rb["resid"][layer] - ra["resid"][layer]).float()
            h = full[layer][:, start:]
            sfx = prefix.Suffix(layer, start, A.input_ids[:, start:], A.position_ids[:, start:], A.attention_mask,
                                h, kv, (A.subject_last - start).to(h.device))
            with torch.no_grad():
                patched = prefix.run(lm, sfx, add=diff, head=head)[:, 0].argmax(-1).cpu()
        else:
            if site == "resid":
                diff = (rb["resid"][layer] - ra["resid"][layer]).float()
                with torch.no_grad(), add_to_residual(lm, layer, A.subject_last, diff):
                    lp = lm.forward(A)
            else:
                with torch.no_grad(), override_value(lm, layer, A.subject_last, rb["value"][layer]):
                    lp = lm.forward(A)
            patched = lp[rows_a, A.last.to(lp.device)].argmax(-1).cpu()
        switched = (patched == pred_b) & differ
        out.append({"layer": layer, "site": site, "metric": "switch_rate",
                    "value": float(switched.sum()) / max(int(differ.sum()), 1),
                    "n_pairs": len(pairs), "n_differ": int(differ.sum())})
    return pd.DataFrame(out)
