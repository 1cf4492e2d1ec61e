"""What the edited model actually writes at (layer, subject's last token), per prompt form (issue 11).

The paper's activation deviation Δ (:mod:`geomprobe.probes.deviation`) is one layer's ``ΔW_L (k_form − k_decl)``
with keys read on the *unedited* model.  This probe measures the change the edit really makes to the residual
stream, on the edit prompt and on each question / instruction prompt, by two forwards per prompt (unedited,
then with the update applied):

* ``v_l = h^e_l − h_l``: the edited minus the unedited residual after block ``l`` (block output) at the subject's
  last token, for every edited layer ``l`` (the last one is ``L``, where the value optimisation put ``δ``);
* ``δ``: the request's optimised value, the column of ``update.value.delta`` of the group holding the request
  (``value.members``), or, when the update has no value result (imported), ``z − h`` of the request's column
  (the column named by its ``case_id`` or ``subject``, else the request's position in ``update.columns``).

Per (request, form, prompt, edited layer ``l``), all against the same ``δ`` (layer ``L``'s):

``written_share``   ``⟨v_l, δ⟩ / ‖δ‖²`` — how much of ``δ`` the edit writes (1 = all of it);
``off_delta_norm``  ``‖v_l − written_share·δ‖`` — what it writes besides;
``cosine``          ``cos(v_l, δ)``; ``v_norm`` ``‖v_l‖``; ``delta_norm`` ``‖δ‖``; ``h_norm`` ``‖h_l‖`` (unedited);
``miss_norm``       ``‖v_l − δ‖`` — at ``L``: how far the edited residual lies from the ideal patch ``h + δ``;
``drift_norm``      ``‖v_l(form) − v_l(decl)‖ = ‖(h^e_form − h_form) − (h^e_decl − h_decl)‖``: how much the
                    edit's actual effect at layer ``l`` differs between this prompt and the declarative edit
                    prompt (0 on the edit prompt itself);
``layer_drift``     ``‖ΔW_l (k^e_l(form) − k^e_l(decl))‖`` with keys read on the *edited* model (``k^e_l``
                    depends on the edits below ``l``, as MEMIT's solve at ``l`` saw it);
``cumulative_drift`` ``‖Σ_{l' ≤ l} ΔW_l' (k^e_l'(form) − k^e_l'(decl))‖`` over edited layers up to ``l``: at ``L``
                    the paper-style quantity summed over all edited layers with edited keys;
``paper_delta``     ``‖ΔW_l (k_l(form) − k_l(decl))‖`` with *unedited* keys: **the paper's Δ**, the value of
                    :func:`~geomprobe.probes.activation_deviation` (rule ``"update"``) at that layer.

The direct writes ``ΔW_l k`` are summed in ``cumulative_drift`` without their propagation through the blocks
between ``l`` and ``L``; ``drift_norm`` at ``L`` is the propagated, measured effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch

from ..data.forms import Rendered, eval_prompts
from ..editors.update import EditUpdate
from ..errors import GeomprobeError
from ..hooks import read
from ..models.load import LM
from ..positions import tokenize

__all__ = ["FORMS", "FormPrompt", "edit_drift", "form_prompts", "request_deltas", "subject_reads"]

FORMS = ("declarative", "question", "instruction")


@dataclass(frozen=True)
class FormPrompt:
    """One evaluation prompt of one request: request index ``i``, ``form``, index ``j`` within the form."""

    i: int
    form: str
    j: int
    prompt: Rendered


def form_prompts(update: EditUpdate, forms: Sequence[str], tokenizer, requests: Sequence[int] | None = None,
                 per_form: int | None = None) -> list[FormPrompt]:
    """The prompts of every request in every form (declarative = the edit prompt itself; the others from
    :func:`~geomprobe.data.forms.eval_prompts`), in request, form, prompt order; ``per_form`` keeps the first
    that many of each form (None: all)."""
    idx = range(len(update.requests)) if requests is None else requests
    out = []
    for i in idx:
        r = update.requests[i]
        for form in forms:
            ps = eval_prompts(r, form, tokenizer)
            out.extend(FormPrompt(i, form, j, p) for j, p in enumerate(ps[:per_form] if per_form else ps))
    if not out:
        raise GeomprobeError(f"no {'/'.join(forms)} prompts for these requests; add queries or relation templates")
    return out


def request_deltas(update: EditUpdate) -> tuple[int, torch.Tensor]:
    """``(L, δ)``: the last edit layer and each request's optimised value, (n_requests, d) float32 CPU.

    With a value result, request ``i``'s δ is the column of ``value.delta`` whose group holds ``i``
    (``value.members``).  Without one (an imported update), ``z − h`` of the request's column: the column named
    by its ``case_id``, else by its ``subject``, else the ``i``-th (``update.columns`` in request order).
    """
    value = update.value
    n = len(update.requests)
    if value is not None:
        col = {i: c for c, members in enumerate(value.members) for i in members}
        missing = [i for i in range(n) if i not in col]
        if missing:
            raise GeomprobeError(f"requests {missing} belong to no group of the update's value result")
        delta = value.delta.float().cpu()
        return value.layer, torch.stack([delta[:, col[i]] for i in range(n)])
    zh = (update.z - update.h).float().cpu()
    names = {c: k for k, c in enumerate(update.columns)}
    cols = []
    for i, r in enumerate(update.requests):
        c = names.get(r.case_id, names.get(r.subject))
        if c is None:
            if len(update.columns) != n:
                raise GeomprobeError(f"cannot find request {r.case_id!r}'s column among {len(update.columns)} "
                                     "columns; name columns by case_id or subject")
            c = i
        cols.append(zh[:, c])
    return update.layers[-1], torch.stack(cols)


def subject_reads(lm: LM, prompts: Sequence[Rendered], layers: Sequence[int], batch_size: int = 16
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Residuals (block outputs) and keys at the subject's last token: ``h`` (n, n_layers, d), ``k`` (n, n_layers,
    m), float32 CPU, on the model's current weights (the forward stops after the deepest layer)."""
    layers = list(layers)
    hs, ks = [], []
    for s in range(0, len(prompts), batch_size):
        batch = tokenize(lm.tokenizer, list(prompts[s:s + batch_size]))
        with torch.no_grad(), read(lm, layers, ("key", "resid"), positions=batch.subject_last, stop=True) as rd:
            lm.forward(batch)
        hs.append(torch.stack([rd["resid"][l].float().cpu() for l in layers], dim=1))
        ks.append(torch.stack([rd["key"][l].float().cpu() for l in layers], dim=1))
    return torch.cat(hs), torch.cat(ks)


def _with_declaratives(update: EditUpdate, prompts: list[FormPrompt], tokenizer) -> tuple[list[FormPrompt], dict]:
    """``prompts`` plus each request's declarative prompt where missing; {request: index of its declarative}."""
    everything = list(prompts)
    decl = {p.i: n for n, p in enumerate(everything) if p.form == "declarative" and p.j == 0}
    for i in dict.fromkeys(p.i for p in prompts):
        if i not in decl:
            decl[i] = len(everything)
            everything.append(FormPrompt(i, "declarative", 0, eval_prompts(update.requests[i], "declarative",
                                                                            tokenizer)[0]))
    return everything, decl


def residual_changes(lm: LM, update: EditUpdate, prompts: list[FormPrompt], layers: Sequence[int],
                     batch_size: int = 16) -> dict[str, torch.Tensor | dict]:
    """Unedited and edited reads of ``prompts`` plus each request's declarative prompt.

    Returns ``{"h", "k", "he", "ke"}`` (n_all, n_layers, ·) — unedited / edited residuals and keys — and
    ``"decl"``, {request: row of its declarative prompt}; rows ``0..len(prompts)-1`` are ``prompts``.
    """
    everything, decl = _with_declaratives(update, prompts, lm.tokenizer)
    rendered = [p.prompt for p in everything]
    h, k = subject_reads(lm, rendered, layers, batch_size)
    with update.applied(lm):
        he, ke = subject_reads(lm, rendered, layers, batch_size)
    return {"h": h, "k": k, "he": he, "ke": ke, "decl": decl}


def edit_drift(lm: LM, update: EditUpdate, forms: Sequence[str] = FORMS, requests: Sequence[int] | None = None,
               batch_size: int = 16) -> pd.DataFrame:
    """The edited model's actual residual change at the subject's last token, per form prompt and edited layer.

    Args:
        lm: the *unedited* model the update was computed on (its weights are bit-identical afterwards).
        update: the edit; with a value result (δ per group) or imported (δ = ``z − h``).
        forms: prompt forms (``declarative`` is the edit prompt; others from ``eval_prompts``).
        requests: indices of the requests to measure (default all).
        batch_size: prompts per forward.

    Returns:
        tidy DataFrame, one row per (request, form, prompt, edited layer): ``editor, case_id, subject,
        relation, form, prompt_idx, layer, last_layer (layer == L), written_share, off_delta_norm, cosine,
        v_norm, delta_norm, h_norm, miss_norm, drift_norm, layer_drift, cumulative_drift, paper_delta``
        (definitions in the module docstring; ``paper_delta`` is the paper's Δ).
    """
    update.check_model(lm)
    L, deltas = request_deltas(update)
    layers = sorted(update.layers)
    if L not in layers:
        raise GeomprobeError(f"the value layer {L} is not an edited layer of this update ({layers})")
    prompts = form_prompts(update, forms, lm.tokenizer, requests)
    reads = residual_changes(lm, update, prompts, layers, batch_size)
    h, k, he, ke, decl = reads["h"], reads["k"], reads["he"], reads["ke"], reads["decl"]
    v = he - h  # (n_all, n_layers, d)
    dW = torch.stack([update.deltas[l].float().cpu() for l in layers])  # (n_layers, d, m)
    rows = []
    for n, p in enumerate(prompts):
        r, dcl = update.requests[p.i], decl[p.i]
        delta = deltas[p.i]
        dd = float(delta @ delta)
        writes_e = torch.einsum("ldm,lm->ld", dW, ke[n] - ke[dcl])  # ΔW_l (k^e_form − k^e_decl) per layer
        writes_u = torch.einsum("ldm,lm->ld", dW, k[n] - k[dcl])
        cumulative = writes_e.cumsum(0)
        for li, layer in enumerate(layers):
            vl = v[n, li]
            share = float(vl @ delta) / dd if dd > 0 else float("nan")
            off = float((vl - share * delta).norm()) if dd > 0 else float("nan")
            cos = float(torch.nn.functional.cosine_similarity(vl, delta, dim=0)) if dd > 0 else float("nan")
            rows.append({
                "editor": update.editor, "case_id": r.case_id, "subject": r.subject, "relation": r.relation,
                "form": p.form, "prompt_idx": p.j, "layer": layer, "last_layer": layer == L,
                "written_share": share, "off_delta_norm": off, "cosine": cos, "v_norm": float(vl.norm()),
                "delta_norm": dd ** 0.5, "h_norm": float(h[n, li].norm()), "miss_norm": float((vl - delta).norm()),
                "drift_norm": float((vl - v[dcl, li]).norm()), "layer_drift": float(writes_e[li].norm()),
                "cumulative_drift": float(cumulative[li].norm()), "paper_delta": float(writes_u[li].norm()),
            })
    return pd.DataFrame(rows)
