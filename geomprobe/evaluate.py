"""Edit-quality metrics on linguistic forms: efficacy, paraphrase, generalization, locality.

Usage::

    ref = reference_predictions(lm, requests)          # on the UNEDITED model
    with update.applied(lm):
        df = evaluate(lm, requests, reference=ref)      # tidy: one row per measurement
    print(to_markdown(summarize(df)))

**What a row is.** :func:`evaluate` returns one row per (request, form, prompt index, protocol, metric)
with columns :data:`COLUMNS`: ``case_id, subject, relation, form, prompt_idx, protocol, metric, value``,
plus ``n_prompts`` (prompts of that request in that form, to weight per-request means), ``request``
(the request's position in the list passed in; ``case_id`` may be blank) and ``criterion`` (what a ``prob``
row's value compares: :data:`CRITERIA`; empty on the other protocols' rows and on ``target_prob``).

**Metric names** (stable; the ``form`` column says which linguistic form a number is on):

* ``efficacy`` — form ``declarative`` (the edit prompt itself);
* ``paraphrase`` — form ``paraphrase`` (the request's paraphrases);
* ``generalization`` — forms ``question`` and ``instruction`` (held-out templates from
  :func:`geomprobe.data.forms.eval_prompts`: the request's own queries of that form when it has them,
  else the relation's ``eval_questions``; chat template when the tokenizer has one);
* ``locality`` — neighbourhood prompts, compared with the pre-edit model (needs ``reference``); its
  ``form`` is the form the neighbourhood prompt was rendered in (see :func:`reference_predictions`);
* auxiliary: ``target_prob`` (protocol ``prob``), ``f1`` and ``locality_f1`` (protocol ``gen``).

**Protocols** (the ``protocol`` column names where a number came from):

* ``prob`` — MEMIT-style comparison: 1.0 if ``P(target_new | prompt) > P(target_true | prompt)``.
  As in MEMIT's reference code, a target's score is its teacher-forced log-probability **averaged over
  its tokens** (``length_normalized=True``; pass False for the plain sum — identical for one-token
  targets). Locality: 1.0 if the edited model's preference between ``target_true`` and ``target_new``
  on the neighbourhood prompt is the pre-edit model's preference (= MEMIT's neighbourhood score
  ``P(true) > P(new)`` whenever the unedited model prefers the true answer, as it does on a model
  that knows the fact). ``target_prob`` = ``exp(mean log-prob of target_new's tokens)``, the geometric
  mean per-token probability. The ``criterion`` column says what a ``prob`` row compared with
  (:data:`CRITERIA`): ``beats-true`` — the request's ``target_true``; ``beats-greedy`` — a request without a
  ``target_true`` is compared with the *unedited* model's own greedy answer on its declarative prompt (taken by
  :func:`reference_predictions` before the edit, as many tokens as ``target_new`` has, cut at an EOS, a line
  break or a sentence end; :meth:`Reference.true_target`), so pass ``reference`` to get it; ``prob>0.5`` —
  neither is available (no reference, or the unedited model already answers ``target_new``): 1.0 if
  ``target_prob > 0.5``. Locality under ``prob`` needs a true target (request or greedy); without one it is
  left out.
* ``token_acc`` — EasyEdit-style teacher-forced token accuracy: the share of ``target_new``'s tokens
  that are the argmax prediction given the prompt and the previous target tokens. Locality: the
  pre-edit model's greedy continuation of the neighbourhood prompt (as many tokens as ``target_true``
  has there; ``target_new``'s count when there is no ``target_true``) is teacher-forced through the
  edited model; the value is the share of positions whose argmax is the pre-edit argmax.
* ``gen`` (``generation=True``) — greedy generation of ``max_new_tokens`` tokens, cut at an EOS
  token, the first line break and the first sentence end (``. ! ?`` followed by a space or the end),
  scored against the expected answer after SQuAD/LoCoMo normalisation (lowercase, strip punctuation
  and the articles a/an/the, collapse spaces): the criterion metric holds exact match, ``f1`` the token
  F1. Locality compares the edited model's answer with the pre-edit one (``locality`` = exact match,
  ``locality_f1`` = F1).

The **expected answer** of a prompt is ``target_new``, except for a request's own queries that carry a
``Query.answer`` (LoCoMo QA, zsRE), which are scored against that answer under every protocol.

Prompts are batched (``batch_size``) after sorting by length, right-padded for teacher forcing and
left-padded for generation (position ids from the attention mask), so results do not depend on batching.
"""

from __future__ import annotations

import math
import re
import string
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
import torch

from .data.forms import RelationTemplates, Rendered, eval_prompts, find_pool
from .data.requests import EditRequest, Query
from .errors import GeomprobeError
from .positions import tokenize
from .prompt_pass import Plan
from .scoring import with_targets

#: Forms evaluated by default, in table order.
FORMS: tuple[str, ...] = ("declarative", "paraphrase", "question", "instruction")
#: Forms neighbourhood prompts can be rendered in (``paraphrase`` reuses the declarative ones).
LOCALITY_FORMS: tuple[str, ...] = ("declarative", "question", "instruction")
#: Teacher-forced protocols (``gen`` is switched on by ``generation=True``).
PROTOCOLS: tuple[str, ...] = ("prob", "token_acc")
#: The rewrite metric measured on each form.
METRIC_OF_FORM: dict[str, str] = {"declarative": "efficacy", "paraphrase": "paraphrase",
                                  "question": "generalization", "instruction": "generalization"}
#: Columns of :func:`evaluate`'s DataFrame, in order.
COLUMNS: tuple[str, ...] = ("case_id", "subject", "relation", "form", "prompt_idx", "protocol", "metric",
                            "value", "n_prompts", "request", "criterion")
#: Success criteria of the ``prob`` protocol (the ``criterion`` column): what P(target_new) is compared with.
CRITERIA: dict[str, str] = {
    "beats-true": "P(target_new) > P(target_true), the request's target_true",
    "beats-greedy": "P(target_new) > P(the unedited model's own greedy answer), the request has no target_true",
    "prob>0.5": "P(target_new) > 0.5, geometric mean per token (no target_true and no usable answer of the "
                "unedited model)",
}
#: Probability threshold of the ``prob>0.5`` criterion.
PROB_THRESHOLD = 0.5
#: Columns of :func:`summarize`'s table that hold scores (percent).
SCORE_COLUMNS: tuple[str, ...] = ("efficacy", "paraphrase", "generalization", "locality", "overall",
                                  "target_prob", "f1")

_TOKENIZE_CHUNK = 256  # texts per tokenizer call when only ids are needed
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


# --------------------------------------------------------------------------- the reference


@dataclass(frozen=True)
class LocalityPrompt:
    """Pre-edit predictions on one neighbourhood prompt.

    Attributes:
        request: index into :attr:`Reference.requests`.
        form: form the prompt is rendered in (``declarative`` for the raw neighbourhood prompts).
        prompt_idx: index among the request's locality prompts of that form.
        text: the full prompt text.
        prompt_ids: its token ids (no padding).
        n_tokens: continuation length scored by ``token_acc`` (``target_true``'s token count here).
        continuation: pre-edit greedy token ids, ``max(n_tokens, Reference.max_new_tokens)`` of them.
        argmax: pre-edit teacher-forced argmax over ``continuation[:n_tokens]`` (``n_tokens`` ids).
        logp_true: pre-edit summed log-prob of ``target_true`` (None without a ``target_true``).
        n_true: its token count (0 without a ``target_true``).
        logp_new: pre-edit summed log-prob of ``target_new``.
        n_new: its token count.
    """

    request: int
    form: str
    prompt_idx: int
    text: str
    prompt_ids: tuple[int, ...]
    n_tokens: int
    continuation: tuple[int, ...]
    argmax: tuple[int, ...]
    logp_true: float | None
    n_true: int
    logp_new: float
    n_new: int

    def prefers_true(self, length_normalized: bool) -> bool | None:
        """Whether the pre-edit model scores ``target_true`` above ``target_new`` (None: no target_true)."""
        if self.logp_true is None:
            return None
        return _prefers_true(self.logp_true, self.n_true, self.logp_new, self.n_new, length_normalized)


@dataclass(frozen=True)
class Reference:
    """Pre-edit predictions on every neighbourhood prompt of a list of requests.

    Attributes:
        identity: the model's :attr:`LM.identity`, as sorted ``(key, value)`` pairs.
        requests: the requests it was computed for.
        forms: the forms neighbourhood prompts were rendered in.
        max_new_tokens: greedy continuation length kept for the ``gen`` protocol.
        prompts: one :class:`LocalityPrompt` per (request, form, neighbourhood prompt).
        greedy_answers: per request, the unedited model's greedy answer on its declarative prompt when the
            request has no ``target_true`` (None for requests that have one, or when the answer is empty or is
            ``target_new`` itself); the ``prob`` protocol compares with it (``beats-greedy``).
    """

    identity: tuple[tuple[str, Any], ...]
    requests: tuple[EditRequest, ...]
    forms: tuple[str, ...]
    max_new_tokens: int
    prompts: tuple[LocalityPrompt, ...]
    greedy_answers: tuple[str | None, ...] = ()

    def __post_init__(self) -> None:
        bad = [p for p in self.prompts if not 0 <= p.request < len(self.requests)]
        if bad:
            raise GeomprobeError(f"reference prompt points at request {bad[0].request} of {len(self.requests)}; "
                                 "rebuild it with reference_predictions")

    @property
    def model_identity(self) -> dict[str, Any]:
        return dict(self.identity)

    def true_target(self, request: EditRequest) -> tuple[str | None, str]:
        """``(true target, criterion)`` the ``prob`` protocol uses for ``request`` (see :data:`CRITERIA`)."""
        return true_target(request, self)

    def check(self, lm: Any) -> None:
        """Refuse a model other than the one the reference was computed on."""
        if _identity(lm) != self.identity:
            raise GeomprobeError(
                f"the reference was computed on model {self.model_identity.get('name')!r}, not on "
                f"{lm.identity.get('name')!r} (identities differ); recompute it with reference_predictions(lm, "
                "requests) on the unedited model you evaluate")


def reference_predictions(lm: Any, requests: Sequence[EditRequest], forms: Sequence[str] = LOCALITY_FORMS,
                          max_new_tokens: int = 0, batch_size: int = 16,
                          templates: dict[str, RelationTemplates] | None = None) -> Reference:
    """Pre-edit predictions on the neighbourhood prompts, for locality.

    Call it on the *unedited* model (nothing can check that). Neighbourhood prompts are the request's
    ``neighborhood`` strings plus its queries of form ``neighborhood``, used as they are for form
    ``declarative``. For ``question`` / ``instruction``, a neighbourhood prompt is *templated* when it
    is the request's ``prompt`` (or a declarative template of the relation's pool) with another
    subject in the ``{}`` (matched case-insensitively, e.g. ``"the capital of germany is"`` for
    ``"The capital of {} is"``); such neighbour subjects are rendered with the same held-out templates
    the request's own subject is evaluated with (its own queries of that form with the subject swapped,
    else the relation's ``eval_questions``). Prompts that match no template get no question/instruction
    versions.

    Args:
        lm: the unedited model.
        requests: the requests to be evaluated later (a subset of them may be evaluated).
        forms: forms to render neighbourhood prompts in (subset of :data:`LOCALITY_FORMS`;
            ``paraphrase`` is accepted and ignored, paraphrases reuse the declarative neighbourhood).
        max_new_tokens: greedy continuation length kept for ``evaluate(generation=True)``; the default 0
            keeps only as many tokens as the true target has (enough for ``prob`` and ``token_acc``
            locality; generation locality then is skipped with a warning), which is far cheaper.
        batch_size: prompts per forward.
        templates: template pools per relation (default: the built-in ones).

    Returns:
        a frozen :class:`Reference` holding the model identity.
    """
    requests = _check_requests(requests)
    forms = tuple(f for f in _check_forms(forms) if f in LOCALITY_FORMS)
    _check_counts(max(max_new_tokens, 1), batch_size)
    tok = lm.tokenizer
    with torch.no_grad():
        greedy = _greedy_answers(lm, requests, batch_size)
    found: list[tuple[int, str, int, Rendered]] = []
    for i, req in enumerate(requests):
        for form in forms:
            for j, r in enumerate(neighborhood_prompts(req, form, tok, templates)):
                found.append((i, form, j, r))
    if not found:
        return Reference(_identity(lm), tuple(requests), forms, max_new_tokens, (), greedy)
    prompts = [r for *_, r in found]
    trues = [requests[i].target_true or greedy[i] for i, *_ in found]
    own_true = [bool(requests[i].target_true) for i, *_ in found]
    news = [requests[i].target_new for i, *_ in found]
    # two plans: target_new, target_true and the greedy continuation from one pass per prompt; then the argmax
    # along that continuation (it needs the continuation)
    plan = Plan()
    new_rows = _target_rows(lm, prompts, news)
    j_new = [plan.score(p, t) for p, t in new_rows]
    has_true = [k for k, t in enumerate(trues) if t]
    true_rows = dict(zip(has_true, _target_rows(lm, [prompts[k] for k in has_true], [trues[k] for k in has_true])))
    j_true = {k: plan.score(p, t) for k, (p, t) in true_rows.items()}
    n_new = [len(t) for _, t in new_rows]
    n_true = {k: len(t) for k, (_, t) in true_rows.items()}
    # token_acc locality scores as many tokens as the request's own target_true has (target_new's without one)
    n_tokens = [n_true[k] if own_true[k] else n_new[k] for k in range(len(found))]
    ids = _prompt_ids(tok, [r.text for r in prompts])
    j_gen = [plan.generate(p, max(n, max_new_tokens)) for p, n in zip(ids, n_tokens)]
    with torch.no_grad():
        scored, answers = plan.run(lm, batch_size)
        conts = [answers[g][:max(n, max_new_tokens)] for g, n in zip(j_gen, n_tokens)]
        argmax = _forced_argmax(lm, ids, [c[:n] for c, n in zip(conts, n_tokens)], batch_size)
    logp_new = [scored[j].logp for j in j_new]
    logp_true = {k: scored[j].logp for k, j in j_true.items()}
    out = tuple(
        LocalityPrompt(request=i, form=form, prompt_idx=j, text=r.text, prompt_ids=tuple(ids[k]),
                       n_tokens=n_tokens[k], continuation=tuple(conts[k]), argmax=tuple(argmax[k]),
                       logp_true=logp_true.get(k), n_true=n_true.get(k, 0), logp_new=logp_new[k], n_new=n_new[k])
        for k, (i, form, j, r) in enumerate(found))
    return Reference(_identity(lm), tuple(requests), forms, max_new_tokens, out, greedy)


def true_target(request: EditRequest, reference: "Reference | None" = None) -> tuple[str | None, str]:
    """``(true target, criterion)`` of the ``prob`` protocol for ``request``: its ``target_true``
    (``beats-true``); else the unedited model's greedy answer kept by ``reference`` (``beats-greedy``); else
    ``(None, "prob>0.5")``."""
    if request.target_true:
        return request.target_true, "beats-true"
    if reference is not None:
        try:
            k = reference.requests.index(request)
        except ValueError:
            k = -1
        if 0 <= k < len(reference.greedy_answers) and reference.greedy_answers[k]:
            return reference.greedy_answers[k], "beats-greedy"
    return None, "prob>0.5"


def _greedy_answers(lm: Any, requests: Sequence[EditRequest], batch_size: int) -> tuple[str | None, ...]:
    """Per request without a ``target_true``: the model's greedy answer on its declarative prompt, as many tokens
    as ``target_new`` has there, cut at an EOS, a line break or a sentence end, trailing punctuation stripped;
    None when it is empty or normalises to ``target_new`` (the comparison would be meaningless)."""
    todo = [i for i, r in enumerate(requests) if not r.target_true]
    out: list[str | None] = [None] * len(requests)
    if not todo:
        return tuple(out)
    prompts = [eval_prompts(requests[i], "declarative")[0] for i in todo]
    n_new = [int(n) for n in with_targets(lm.tokenizer, prompts, [requests[i].target_new for i in todo]).n_target]
    ids = _prompt_ids(lm.tokenizer, [p.text for p in prompts])
    conts = _greedy(lm, ids, [max(1, n) for n in n_new], batch_size)
    eos = _eos_ids(lm)
    for i, cont in zip(todo, conts):
        text = _answer_text(lm.tokenizer, cont, eos).strip().rstrip(string.punctuation).strip()
        if text and normalize_answer(text) and normalize_answer(text) != normalize_answer(requests[i].target_new):
            out[i] = text
    return tuple(out)


def neighborhood_prompts(request: EditRequest, form: str, tokenizer: Any = None,
                         templates: dict[str, RelationTemplates] | None = None) -> list[Rendered]:
    """A request's neighbourhood prompts rendered in ``form`` (see :func:`reference_predictions`)."""
    raw = [t for t in (*request.neighborhood, *(q.text for q in request.queries if q.form == "neighborhood"))
           if t.strip()]
    if form == "declarative":
        return [_plain(t, "declarative") for t in raw]
    if form not in ("question", "instruction"):
        raise GeomprobeError(f"neighbourhood prompts have no form {form!r}; use declarative, question or instruction")
    pool = find_pool(request.relation, request.prompt, templates)
    patterns = [request.prompt]
    if pool is not None:
        patterns += [pool.declarative, *(t for f, t in pool.train if f == "declarative")]
    out = []
    for text in raw:
        other = _fill_of(text, patterns)
        if other is None or other == request.subject:
            continue
        own = tuple(Query(q.text.replace(request.subject, other), q.form) for q in request.queries
                    if q.form == form and request.subject in q.text)
        proxy = EditRequest(subject=other, relation=request.relation, prompt=request.prompt,
                            target_new=request.target_new, queries=own)
        out += eval_prompts(proxy, form, tokenizer, templates)
    return out


# --------------------------------------------------------------------------- evaluation


def evaluate(lm: Any, requests: Sequence[EditRequest], forms: Sequence[str] = FORMS,
             reference: Reference | None = None, protocols: Sequence[str] = PROTOCOLS, generation: bool = False,
             max_new_tokens: int = 16, batch_size: int = 16, templates: dict[str, RelationTemplates] | None = None,
             length_normalized: bool = True, locality: bool = True) -> pd.DataFrame:
    """Efficacy, paraphrase, generalization and locality of (edited) ``lm`` on ``requests``.

    Args:
        lm: the model to evaluate (usually inside ``update.applied(lm)``).
        requests: the edit requests.
        forms: forms to evaluate, a subset of :data:`FORMS`.
        reference: :func:`reference_predictions` of the unedited model; without it locality is skipped
            (with a warning).
        protocols: subset of ``("prob", "token_acc")`` (``"gen"`` here is the same as ``generation=True``).
        generation: add the ``gen`` protocol (greedy generation, exact match and token F1).
        max_new_tokens: generation length.
        batch_size: prompts per forward.
        templates: template pools per relation for question/instruction forms (default: built-in).
        length_normalized: ``prob`` compares mean per-token log-probs (MEMIT) rather than sums.
        locality: False skips the locality rows (the ``reference`` then only supplies true targets).

    Returns:
        tidy DataFrame with columns :data:`COLUMNS` (see the module docstring for names).
    """
    requests = _check_requests(requests)
    forms = _check_forms(forms)
    protocols = tuple(protocols)
    unknown = [p for p in protocols if p not in (*PROTOCOLS, "gen")]
    if unknown:
        raise GeomprobeError(f"unknown protocol {unknown[0]!r}; use prob, token_acc (and generation=True for gen)")
    generation = generation or "gen" in protocols
    protocols = tuple(p for p in PROTOCOLS if p in protocols)
    _check_counts(max_new_tokens, batch_size)
    if reference is not None:
        _check_reference(lm, reference, requests)
    rows: list[dict[str, Any]] = []
    trues = [true_target(r, reference) for r in requests]
    from .progress import progress as _progress
    passes = 1 + (reference is not None and locality)
    with torch.no_grad(), _progress(passes, f"evaluation ({len(requests)} requests)", "pass") as bar:
        rows += _rewrite_rows(lm, requests, forms, protocols, generation, max_new_tokens, batch_size, templates,
                              length_normalized, trues)
        bar.update()
        if not locality:
            pass
        elif reference is None:
            if any(r.neighborhood or any(q.form == "neighborhood" for q in r.queries) for r in requests):
                warnings.warn("locality skipped: pass reference=reference_predictions(lm, requests) computed on the "
                              "unedited model", stacklevel=2)
        else:
            rows += _locality_rows(lm, requests, forms, reference, protocols, generation, max_new_tokens, batch_size,
                                   length_normalized, trues)
            bar.update()
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return df.astype({"prompt_idx": int, "value": float, "n_prompts": int, "request": int})


def _rewrite_rows(lm: Any, requests: list[EditRequest], forms: tuple[str, ...], protocols: tuple[str, ...],
                  generation: bool, max_new_tokens: int, batch_size: int,
                  templates: dict[str, RelationTemplates] | None, length_normalized: bool,
                  trues: list[tuple[str | None, str]]) -> list[dict[str, Any]]:
    items = []  # (request index, form, prompt index, n_prompts, prompt, expected answer)
    for i, req in enumerate(requests):
        for form in forms:
            prompts = eval_prompts(req, form, lm.tokenizer, templates)
            answers = [req.target_new] * len(prompts)
            if form in ("question", "instruction"):
                own = [q for q in req.queries if q.form == form]
                if own and len(own) == len(prompts):  # eval_prompts used the request's own queries
                    answers = [q.answer or req.target_new for q in own]
            items += [(i, form, j, len(prompts), p, a) for j, (p, a) in enumerate(zip(prompts, answers))]
    if not items:
        return []
    prompts = [it[4] for it in items]
    answers = [it[5] for it in items]
    # one plan: each prompt runs once for target_new, target_true and the greedy answer (prompt_pass)
    plan = Plan()
    j_new = [plan.score(p, t) for p, t in _target_rows(lm, prompts, answers)] if protocols else []
    with_true = [k for k, it in enumerate(items) if trues[it[0]][0]] if "prob" in protocols else []
    j_true = dict(zip(with_true, (plan.score(p, t) for p, t in _target_rows(
        lm, [prompts[k] for k in with_true], [trues[items[k][0]][0] for k in with_true]))))
    j_gen = [plan.generate(ids, max_new_tokens) for ids in _prompt_ids(lm.tokenizer, [p.text for p in prompts])
             ] if generation else []
    scored, greedy = plan.run(lm, batch_size)
    logp_new, n_new = [scored[j].logp for j in j_new], [scored[j].n for j in j_new]
    hits = [scored[j].hits for j in j_new]
    logp_true = {k: scored[j].logp for k, j in j_true.items()}
    n_true = {k: scored[j].n for k, j in j_true.items()}
    eos = _eos_ids(lm)
    gens = [_answer_text(lm.tokenizer, greedy[k][:max_new_tokens], eos) for k in j_gen] if generation else None
    rows = []
    for k, (i, form, j, n, _, answer) in enumerate(items):
        metric = METRIC_OF_FORM[form]
        row = _row_maker(requests[i], i, form, j, n)
        if "prob" in protocols:
            p_new = math.exp(logp_new[k] / n_new[k])
            criterion = trues[i][1]
            if k in logp_true:
                new_wins = not _prefers_true(logp_true[k], n_true[k], logp_new[k], n_new[k], length_normalized,
                                             ties_to_true=True)
            else:
                new_wins = p_new > PROB_THRESHOLD
            rows.append(row("prob", metric, float(new_wins), criterion))
            rows.append(row("prob", "target_prob", p_new))
        if "token_acc" in protocols:
            rows.append(row("token_acc", metric, hits[k] / n_new[k]))
        if gens is not None:
            rows.append(row("gen", metric, exact_match(gens[k], answer)))
            rows.append(row("gen", "f1", token_f1(gens[k], answer)))
    return rows


def _locality_rows(lm: Any, requests: list[EditRequest], forms: tuple[str, ...], reference: Reference,
                   protocols: tuple[str, ...], generation: bool, max_new_tokens: int, batch_size: int,
                   length_normalized: bool, trues: list[tuple[str | None, str]]) -> list[dict[str, Any]]:
    index = {r: k for k, r in enumerate(reference.requests)}
    by_request: dict[int, list[LocalityPrompt]] = {}
    for p in reference.prompts:
        by_request.setdefault(p.request, []).append(p)
    entries = [(i, p) for i, r in enumerate(requests) for p in by_request.get(index[r], []) if p.form in forms]
    if not entries:
        return []
    count = Counter((i, p.form) for i, p in entries)
    prompts = [_plain(p.text, p.form) for _, p in entries]
    rows: list[tuple[int, LocalityPrompt, str, str, float]] = []
    # one plan: each prompt runs once for target_new, target_true, the reference's argmax and the greedy answer
    plan = Plan()
    ks = [k for k, (i, p) in enumerate(entries) if p.logp_true is not None and trues[i][0]] if "prob" in protocols else []
    sub = [prompts[k] for k in ks]
    j_new = [plan.score(p, t) for p, t in _target_rows(lm, sub, [requests[entries[k][0]].target_new for k in ks])]
    j_true = [plan.score(p, t) for p, t in _target_rows(lm, sub, [trues[entries[k][0]][0] for k in ks])]
    j_arg = {k: plan.score(p.prompt_ids, p.continuation[:p.n_tokens]) for k, (_, p) in enumerate(entries)
             if p.n_tokens and p.continuation[:p.n_tokens]} if "token_acc" in protocols else {}
    gen = generation and max_new_tokens <= reference.max_new_tokens
    if generation and not gen:
        warnings.warn(f"gen locality skipped: the reference kept {reference.max_new_tokens} generated tokens but "
                      f"max_new_tokens={max_new_tokens}; recompute it with reference_predictions(..., "
                      f"max_new_tokens={max_new_tokens})", stacklevel=3)
    j_gen = [plan.generate(p.prompt_ids, max_new_tokens) for _, p in entries] if gen else []
    scored, greedy = plan.run(lm, batch_size)
    for m, k in enumerate(ks):
        i, p = entries[k]
        a, b = scored[j_true[m]], scored[j_new[m]]
        post = _prefers_true(a.logp, a.n, b.logp, b.n, length_normalized)
        rows.append((i, p, "prob", "locality", float(post == p.prefers_true(length_normalized))))
    if "token_acc" in protocols:
        for k, (i, p) in enumerate(entries):
            got = scored[j_arg[k]].argmax if k in j_arg else ()
            same = sum(int(a == b) for a, b in zip(got, p.argmax))
            rows.append((i, p, "token_acc", "locality", same / max(p.n_tokens, 1)))
    if gen:
        eos = _eos_ids(lm)
        for (i, p), k in zip(entries, j_gen):
            post = _answer_text(lm.tokenizer, greedy[k][:max_new_tokens], eos)
            pre = _answer_text(lm.tokenizer, list(p.continuation[:max_new_tokens]), eos)
            rows.append((i, p, "gen", "locality", exact_match(post, pre)))
            rows.append((i, p, "gen", "locality_f1", token_f1(post, pre)))
    order = {"prob": 0, "token_acc": 1, "gen": 2}
    rows.sort(key=lambda r: (r[0], forms.index(r[1].form), r[1].prompt_idx, order[r[2]]))
    return [_row_maker(requests[i], i, p.form, p.prompt_idx, count[(i, p.form)])(
        proto, metric, value, trues[i][1] if proto == "prob" else "") for i, p, proto, metric, value in rows]


def _check_reference(lm: Any, reference: Reference, requests: list[EditRequest]) -> None:
    if not isinstance(reference, Reference):
        raise GeomprobeError(f"reference must be a Reference, got {type(reference).__name__}; build it with "
                             "reference_predictions(lm, requests) on the unedited model")
    reference.check(lm)
    known = set(reference.requests)
    missing = [r for r in requests if r not in known]
    if missing:
        raise GeomprobeError(f"request {missing[0].case_id or missing[0].subject!r} is not in the reference; compute "
                             "the reference with reference_predictions(lm, requests) for the requests you evaluate")


def _row_maker(req: EditRequest, i: int, form: str, j: int, n: int):
    def row(protocol: str, metric: str, value: float, criterion: str = "") -> dict[str, Any]:
        return {"case_id": req.case_id, "subject": req.subject, "relation": req.relation, "form": form,
                "prompt_idx": j, "protocol": protocol, "metric": metric, "value": float(value), "n_prompts": n,
                "request": i, "criterion": criterion}
    return row


def _prefers_true(logp_true: float, n_true: int, logp_new: float, n_new: int, length_normalized: bool,
                  ties_to_true: bool = False) -> bool:
    """``target_true`` scores above ``target_new`` (``>=`` with ``ties_to_true``)."""
    t = logp_true / n_true if length_normalized else logp_true
    n = logp_new / n_new if length_normalized else logp_new
    return t >= n if ties_to_true else t > n


# --------------------------------------------------------------------------- summary table


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Main-results table: per (protocol, form), mean scores in percent.

    Each request weighs the same: values are averaged over a request's prompts first, then over
    requests. Columns: ``protocol, form, efficacy, paraphrase, generalization, locality, overall``, plus
    ``target_prob`` / ``f1`` where the protocol has them, and ``n_requests``. A row fills the rewrite
    column its form measures (declarative → efficacy, paraphrase → paraphrase, question/instruction →
    generalization) and leaves the others NaN. ``locality`` is the locality measured on neighbourhood
    prompts of the same form (the paraphrase row uses the declarative neighbourhood). ``overall`` is the
    harmonic mean of the row's rewrite score and its locality, as MEMIT's "Score" does (0 if either is
    0; NaN without locality).
    """
    if df.empty:
        return pd.DataFrame(columns=["protocol", "form", *SCORE_COLUMNS[:5], "n_requests"])
    key = "request" if "request" in df.columns else "case_id"
    per_case = df.groupby(["protocol", "form", "metric", key], sort=False)["value"].mean().reset_index()
    means = per_case.groupby(["protocol", "form", "metric"], sort=False)["value"].mean() * 100.0
    n_req = per_case[per_case["metric"].isin(set(METRIC_OF_FORM.values()))].groupby(
        ["protocol", "form"], sort=False)[key].nunique()
    form_order = {f: k for k, f in enumerate(FORMS)}
    proto_order = {p: k for k, p in enumerate((*PROTOCOLS, "gen"))}
    keys = sorted({(p, f) for p, f, m in means.index if m in METRIC_OF_FORM.values()},
                  key=lambda pf: (proto_order.get(pf[0], 99), pf[0], form_order.get(pf[1], 99), pf[1]))
    rows = []
    for proto, form in keys:
        row: dict[str, Any] = {"protocol": proto, "form": form}
        for m in ("efficacy", "paraphrase", "generalization"):
            row[m] = means.get((proto, form, m), math.nan) if METRIC_OF_FORM.get(form) == m else math.nan
        loc_form = "declarative" if form == "paraphrase" else form
        row["locality"] = means.get((proto, loc_form, "locality"), math.nan)
        rewrite = row[METRIC_OF_FORM[form]] if form in METRIC_OF_FORM else math.nan
        row["overall"] = _harmonic(rewrite, row["locality"])
        row["target_prob"] = means.get((proto, form, "target_prob"), math.nan)
        row["f1"] = means.get((proto, form, "f1"), math.nan)
        row["n_requests"] = int(n_req.get((proto, form), 0))
        rows.append(row)
    out = pd.DataFrame(rows)
    for extra in ("target_prob", "f1"):
        if out[extra].isna().all():
            out = out.drop(columns=extra)
    return out


def _harmonic(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def to_markdown(table: pd.DataFrame, digits: int = 1) -> str:
    """Render a DataFrame as a GitHub Markdown table (numbers right-aligned, NaN as ``–``)."""
    cols = [str(c) for c in table.columns]
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    body = [[cell(v) for v in rec] for rec in table.itertuples(index=False, name=None)]
    widths = [max([len(c), 3, *(len(r[k]) for r in body)]) for k, c in enumerate(cols)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w)
                                 for c, w, num in zip(cells, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                          for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(cols), rule, *(line(r) for r in body)])


# --------------------------------------------------------------------------- answer matching


def normalize_answer(text: str) -> str:
    """SQuAD/LoCoMo normalisation: lowercase, drop punctuation and articles, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answer: str) -> float:
    """1.0 if the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(answer))


def token_f1(prediction: str, answer: str) -> float:
    """Token-overlap F1 of the normalised strings (1.0 if both are empty, 0.0 if only one is)."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------- forwards


def _target_rows(lm: Any, prompts: list[Rendered], targets: list[str]) -> list[tuple[list[int], list[int]]]:
    """Per pair: (prompt tokens, target tokens) of ``prompt + target`` tokenised together
    (:func:`~geomprobe.scoring.with_targets`: a token that crosses the boundary belongs to the target)."""
    out = []
    for s in range(0, len(prompts), _TOKENIZE_CHUNK):
        tb = with_targets(lm.tokenizer, prompts[s:s + _TOKENIZE_CHUNK], targets[s:s + _TOKENIZE_CHUNK])
        for ids, lab, m in zip(tb.batch.input_ids, tb.labels, tb.batch.attention_mask.bool()):
            row, lab = ids[m].tolist(), lab[m]
            first = int((lab != -100).nonzero()[0])  # its logits predict the first target token
            out.append((row[:first + 1], row[first + 1:]))
    return out


def _score(lm: Any, prompts: list[Rendered], targets: list[str], batch_size: int
           ) -> tuple[list[float], list[int], list[int]]:
    """Teacher-forced scores of ``targets`` after ``prompts`` (one pass per distinct prompt: :mod:`~geomprobe.prompt_pass`).

    Returns:
        per prompt: summed target log-prob, number of target tokens, number of argmax hits.
    """
    plan = Plan()
    jobs = [plan.score(p, t) for p, t in _target_rows(lm, prompts, targets)]
    scored, _ = plan.run(lm, batch_size)
    return [scored[j].logp for j in jobs], [scored[j].n for j in jobs], [int(scored[j].hits) for j in jobs]


def _prompt_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each text as the model sees it (special tokens included, no padding)."""
    out = []
    for s in range(0, len(texts), _TOKENIZE_CHUNK):
        batch = tokenize(tokenizer, texts[s:s + _TOKENIZE_CHUNK])
        out += [ids[m.bool()].tolist() for ids, m in zip(batch.input_ids, batch.attention_mask)]
    return out


def _forced_argmax(lm: Any, prompts: list[list[int]], conts: list[list[int]], batch_size: int) -> list[list[int]]:
    """Argmax predictions at the continuation positions when ``prompt + cont`` is teacher-forced."""
    plan = Plan()
    jobs = {k: plan.score(prompts[k], c) for k, c in enumerate(conts) if c}
    scored, _ = plan.run(lm, batch_size)
    return [list(scored[jobs[k]].argmax) if k in jobs else [] for k in range(len(prompts))]


def _greedy(lm: Any, prompts: list[list[int]], n_new: list[int], batch_size: int) -> list[list[int]]:
    """Greedy continuations (``n_new[k]`` tokens each; no early stop), left-padded batches, KV cache, the prompts'
    shared prefix computed once per batch."""
    plan = Plan()
    idx = [plan.generate(p, n) for p, n in zip(prompts, n_new)]
    _, answers = plan.run(lm, batch_size)
    return [answers[k][:n] for k, n in zip(idx, n_new)]


def _eos_ids(lm: Any) -> set[int]:
    ids = {lm.tokenizer.eos_token_id}
    gen_eos = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
    return {int(i) for i in ids if i is not None}


def _answer_text(tokenizer: Any, ids: list[int], eos: set[int]) -> str:
    """Decoded answer: cut at an EOS token, then at the first line break and the first sentence end."""
    for k, t in enumerate(ids):
        if t in eos:
            ids = ids[:k]
            break
    text = tokenizer.decode(ids, skip_special_tokens=True).strip()
    text = text.split("\n", 1)[0]
    end = _SENTENCE_END.search(text)
    return (text[:end.start()] if end else text).strip()


# --------------------------------------------------------------------------- helpers


def _plain(text: str, form: str) -> Rendered:
    """A full prompt with no known subject (the span marks its first character, never read)."""
    start = len(text) - len(text.lstrip())
    return Rendered(text=text, subject_span=(start, start + 1), form=form)


def _fill_of(text: str, patterns: list[str]) -> str | None:
    """The string filling ``{}`` when ``text`` matches one of ``patterns`` (case-insensitive), else None."""
    t = text.strip()
    for p in patterns:
        pre, post = p.strip().split("{}")
        if (len(t) > len(pre) + len(post) and t.lower().startswith(pre.lower())
                and t.lower().endswith(post.lower())):
            fill = t[len(pre):len(t) - len(post)].strip()
            if fill:
                return fill
    return None


def _identity(lm: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((str(k), v) for k, v in dict(lm.identity).items()))


def _check_requests(requests: Sequence[EditRequest]) -> list[EditRequest]:
    requests = list(requests)
    if not requests:
        raise GeomprobeError("no requests given; pass at least one EditRequest")
    bad = [r for r in requests if not isinstance(r, EditRequest)]
    if bad:
        raise GeomprobeError(f"expected EditRequest objects, got {type(bad[0]).__name__}; load them with "
                             "gp.load_requests")
    return requests


def _check_forms(forms: Sequence[str]) -> tuple[str, ...]:
    forms = (forms,) if isinstance(forms, str) else tuple(forms)
    bad = [f for f in forms if f not in FORMS]
    if bad:
        raise GeomprobeError(f"unknown form {bad[0]!r}; use declarative, paraphrase, question or instruction")
    return tuple(dict.fromkeys(forms))


def _check_counts(max_new_tokens: int, batch_size: int) -> None:
    if max_new_tokens < 1 or batch_size < 1:
        raise GeomprobeError(f"max_new_tokens={max_new_tokens} and batch_size={batch_size} must be >= 1; pass "
                             "positive values")
