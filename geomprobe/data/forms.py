"""Linguistic forms: declarative, natural question, instruction (chat template where there is one).

Every relation has two template pools (:class:`RelationTemplates`):

* ``train`` — templates an editor may optimise on (HKI's leaves): declarative rephrasings,
  questions and instruction-framed questions;
* ``eval_questions`` — held-out natural questions, disjoint from ``train``; the question and the
  instruction forms used for evaluation are rendered from these.

Where pools come from (:attr:`RelationTemplates.origin`): the built-in files (geomprobe's own relations, the toy
world, CounterFact's 32 P-ids and S2RKE's YAGO ids), the user (:func:`add_templates`, a request file's
``"templates"``, :func:`load_templates_file` for ``--templates FILE``), and pools resolved for a request list
(:func:`register_pools`, called by :func:`geomprobe.data.derive.prepare_pools`: rules, or a model's rewrite).
:func:`find_pool` looks them up in that order (user, built-in, resolved) and never derives anything; zsRE and
LoCoMo pools are per template (:func:`pool_key`).  :func:`geomprobe.data.derive.pool_for` goes on to the rules
and a model.

A rendered prompt is a :class:`Rendered` — the final text handed to the tokenizer and the character
span of the subject in it — so subject positions never depend on tokenisation or padding.

**Frames** (chat template when the tokenizer has one, plain text otherwise):

* ``instruction`` — the RoSE paper's instructed-query template (App. D.1), verbatim: system
  :data:`INSTRUCTION_SYSTEM`, user turn :data:`INSTRUCTION_FRAME` (``"Query:\\n Based on your own knowledge,
  ...\\n Question: {question}"``, one space after each line break, as printed in the paper);
* ``question`` — the bare question as the user turn, with the explicit system turn :data:`QUESTION_SYSTEM`
  (never a model's default: SmolLM2's chat template, for one, injects "You are a helpful AI assistant named
  SmolLM, ..." when no system turn is given), so the only difference between the question and the
  instruction forms is the paper's frame;
* plain text (toy worlds, no chat template): :data:`PLAIN_QUESTION` / :data:`PLAIN_INSTRUCTION`.

``frame="eval"`` (the default of :func:`render` and :func:`train_prompts`) is the evaluation's frame above.
HKI's question/instruction leaves use it too by default: they share the evaluation's system frame and only
the question *wording* is held out (the ``train`` vs ``eval_questions`` pools).  ``frame="held-out"`` holds out
the frame as well — :data:`HELD_OUT_QUESTION_SYSTEM`, :data:`HELD_OUT_INSTRUCTION_SYSTEM` and
:data:`HELD_OUT_INSTRUCTION_FRAME` (plain: :data:`PLAIN_HELD_OUT_QUESTION` / :data:`PLAIN_HELD_OUT_INSTRUCTION`),
same intent, different words, never shown by evaluation — so an editor can be trained on a frame it is never
evaluated on.  Declarative forms are plain text in every frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from ..errors import RequestFormatError, SubjectNotFoundError
from .toy_templates import TOY_TEMPLATES

#: System and user frames of the instruction form: the RoSE paper's instructed-query template (App. D.1) verbatim,
#: including the ``"Query:"`` line and the single space after each line break.
INSTRUCTION_SYSTEM = "Your job is to answer the question. Do not explain."
INSTRUCTION_FRAME = (
    "Query:\n Based on your own knowledge, write a short answer for the following question in a few words. "
    "Please do not write complete and lengthy sentences.\n Question: {question}"
)
#: System turn of the question form: a neutral generic system prompt (what Qwen2.5's default ends with), chosen
#: so that the only difference between the question and the instruction forms is the paper's frame; explicit so
#: that no chat template injects its own default (SmolLM2's names the model).
QUESTION_SYSTEM = "You are a helpful assistant."
#: Held-out frame (``frame="held-out"``): same intent, different words; evaluation never shows it.
HELD_OUT_QUESTION_SYSTEM = "You are an assistant that answers questions."
HELD_OUT_INSTRUCTION_SYSTEM = "Answer briefly and factually."
HELD_OUT_INSTRUCTION_FRAME = "Please answer the following question with a short, exact answer.\nQuestion: {question}"
#: Plain frames for tokenizers without a chat template (the toy worlds are trained on these).
PLAIN_QUESTION = "Question: {question}\nAnswer:"
PLAIN_INSTRUCTION = "Instruction: answer the question in a few words.\nQuestion: {question}\nAnswer:"
#: Plain held-out frames (only words of the toy vocabulary, so toy tokenizers see no unknown word).
PLAIN_HELD_OUT_QUESTION = "Tell me the answer.\nQuestion: {question}\nAnswer:"
PLAIN_HELD_OUT_INSTRUCTION = "Question: {question}\nInstruction: answer the question in a few words.\nAnswer:"
#: Frame names accepted by :func:`render` and :func:`train_prompts`.
FRAMES: tuple[str, ...] = ("eval", "held-out")
# (system, user frame, plain frame) per (frame, form)
_FRAMES = {
    ("eval", "question"): (QUESTION_SYSTEM, "{question}", PLAIN_QUESTION),
    ("eval", "instruction"): (INSTRUCTION_SYSTEM, INSTRUCTION_FRAME, PLAIN_INSTRUCTION),
    ("held-out", "question"): (HELD_OUT_QUESTION_SYSTEM, "{question}", PLAIN_HELD_OUT_QUESTION),
    ("held-out", "instruction"): (HELD_OUT_INSTRUCTION_SYSTEM, HELD_OUT_INSTRUCTION_FRAME, PLAIN_HELD_OUT_INSTRUCTION),
}

_SENTINEL = "\u2063\u2063SUBJECT\u2063\u2063"  # invisible separators: never in real text


@dataclass(frozen=True)
class Rendered:
    """A prompt ready for the tokenizer.

    Attributes:
        text: full text (chat template applied where relevant).
        subject_span: ``(start, end)`` character offsets of the subject occurrence to read keys at.
        form: the linguistic form it was rendered in.
    """

    text: str
    subject_span: tuple[int, int]
    form: str


@dataclass(frozen=True)
class RelationTemplates:
    """Template pools of one relation; every template has exactly one ``{}`` for the subject.

    Attributes:
        relation: relation id (matches ``EditRequest.relation``).
        declarative: the canonical declarative prompt, e.g. ``"The capital of {} is"``.
        train: templates for optimisation (HKI leaves); each is ``(form, template)`` with form in
            ``declarative|question|instruction``; question/instruction templates are bare questions.
        eval_questions: held-out natural questions, disjoint from ``train``.
        origin: where the pool comes from (:data:`ORIGINS`): ``builtin``, ``user`` (registered), ``rule``
            (:mod:`geomprobe.data.derive`), ``model`` (written by a model, :mod:`geomprobe.data.rewrite`) or
            ``fallback`` (generic frames around the template).  Not part of equality.
    """

    relation: str
    declarative: str
    train: tuple[tuple[str, str], ...]
    eval_questions: tuple[str, ...]
    origin: str = field(default="user", compare=False)

    def __post_init__(self) -> None:
        for form, t in self.train:
            if form not in ("declarative", "question", "instruction"):
                raise RequestFormatError(f"relation {self.relation!r}: train form {form!r} is not declarative|question|instruction")
        for t in (self.declarative, *(t for _, t in self.train), *self.eval_questions):
            if t.count("{}") != 1:
                raise RequestFormatError(f"relation {self.relation!r}: template {t!r} needs exactly one '{{}}'")
        overlap = {t for _, t in self.train} & set(self.eval_questions)
        if overlap:
            raise RequestFormatError(
                f"relation {self.relation!r}: templates {sorted(overlap)} are in both the train and eval pools; "
                "keep HKI templates disjoint from evaluation templates"
            )

    @classmethod
    def from_dict(cls, relation: str, d: dict[str, Any], origin: str | None = None) -> "RelationTemplates":
        o = origin if origin is not None else d.get("origin", "user")
        return cls(
            relation=relation,
            declarative=d["declarative"],
            train=tuple((f, t) for f, t in d["train"]),
            eval_questions=tuple(d["eval_questions"]),
            origin=o if o in ORIGINS else "user",
        )

    def to_dict(self) -> dict[str, Any]:
        """``{"declarative", "train": [[form, template], ...], "eval_questions": [...], "origin"}`` (what
        :func:`add_templates` and :func:`load_templates_file` read back)."""
        return {"declarative": self.declarative, "train": [list(p) for p in self.train],
                "eval_questions": list(self.eval_questions), "origin": self.origin}


#: Where a pool can come from (:attr:`RelationTemplates.origin`).
ORIGINS: tuple[str, ...] = ("builtin", "user", "rule", "model", "fallback")

#: Built-in pool files: geomprobe's own relations (``relations.json``, cannot be redefined), and pools for the
#: relation ids of public data sets (CounterFact's P-ids, S2RKE's YAGO ids), which a user's pools may replace.
CORE_FILE = "relations.json"
DATASET_FILES: tuple[str, ...] = ("counterfact_relations.json", "yago_relations.json")

#: Relation ids the loaders give to requests whose relation differs from record to record (zsRE, LoCoMo): their
#: pools are per template, under :func:`pool_key` ``"<relation>::<template>"``.
PER_TEMPLATE_RELATIONS = frozenset({"zsre", "locomo"})


def _read_builtin(name: str) -> dict[str, RelationTemplates]:
    raw = json.loads(resources.files("geomprobe.data").joinpath("builtin", name).read_text("utf-8"))
    return {rel: RelationTemplates.from_dict(rel, d, origin="builtin") for rel, d in raw.items()}


@lru_cache(maxsize=None)
def _core_templates() -> dict[str, RelationTemplates]:
    pools = _read_builtin(CORE_FILE)
    toy = {rel: RelationTemplates.from_dict(rel, d, origin="builtin") for rel, d in TOY_TEMPLATES.items()}
    clash = set(pools) & set(toy)
    if clash:
        raise RequestFormatError(f"relations {sorted(clash)} are defined twice (built-in and toy world); rename one")
    return {**pools, **toy}


@lru_cache(maxsize=None)
def builtin_templates() -> dict[str, RelationTemplates]:
    """Template pools of the built-in relations (``data/builtin/relations.json``), of the toy world, and of the
    public data sets' relation ids (``counterfact_relations.json``: CounterFact's 32 P-ids;
    ``yago_relations.json``: S2RKE's YAGO ids such as ``<hasCapital>``)."""
    out = dict(_core_templates())
    for name in DATASET_FILES:
        pools = _read_builtin(name)
        clash = set(pools) & set(out)
        if clash:
            raise RequestFormatError(f"relations {sorted(clash)} of builtin/{name} are defined twice; rename one")
        out.update(pools)
    return out


#: Pools registered by the user (a request file's ``"templates"``, :func:`add_templates`), by relation id.
_USER: dict[str, RelationTemplates] = {}
#: Pools resolved for requests (rules, a model: :func:`geomprobe.data.derive.prepare_pools`), by :func:`pool_key`.
_DERIVED: dict[str, RelationTemplates] = {}


def add_templates(pools: dict[str, Any], source: str = "templates") -> list[str]:
    """Register template pools for relations of one's own, e.g. ``{"sport": {"declarative": "{} plays",
    "train": [["question", "What sport does {} play?"], ...], "eval_questions": [...]}}``.

    Every geomprobe function that looks up a relation's templates (HKI leaves, question/instruction evaluation
    prompts) sees them afterwards.  A request file in geomprobe's layout may carry them under ``"templates"``.
    Redefining a built-in relation, or registering different pools for one id twice, is refused.

    Returns:
        the relation ids registered.
    """
    if not isinstance(pools, dict):
        raise RequestFormatError(f"{source}: \"templates\" must be an object {{relation: {{declarative, train, "
                                 "eval_questions}}}}")
    builtin = _core_templates()
    parsed = {}
    for rel, d in pools.items():
        if not isinstance(d, dict) or not {"declarative", "train", "eval_questions"} <= set(d):
            raise RequestFormatError(f"{source}: templates of {rel!r} need the fields declarative, train "
                                     "(a list of [form, template]) and eval_questions (a list of templates)")
        try:
            pool = RelationTemplates.from_dict(rel, d)
        except (TypeError, ValueError):
            raise RequestFormatError(f"{source}: templates of {rel!r}: train must be a list of [form, template] "
                                     "pairs, eval_questions a list of templates") from None
        if not pool.eval_questions:
            raise RequestFormatError(f"{source}: templates of {rel!r} hold no eval_questions; give at least one")
        if rel in builtin and builtin[rel] != pool:
            raise RequestFormatError(f"{source}: relation {rel!r} is built in (see `geomprobe relations`); "
                                     "rename your relation or drop its templates")
        if rel in _USER and _USER[rel] != pool:
            raise RequestFormatError(f"{source}: relation {rel!r} already has different templates registered; "
                                     "rename one of them")
        parsed[rel] = pool
    _USER.update(parsed)
    return list(parsed)


def relation_templates() -> dict[str, RelationTemplates]:
    """Every known template pool: the built-in relations', those resolved by
    :func:`geomprobe.data.derive.prepare_pools` and those registered with :func:`add_templates` (later ones win)."""
    return {**builtin_templates(), **_DERIVED, **_USER}


# --------------------------------------------------------------------------- one lookup for every relation


def pool_key(relation: str, template: str | None = None) -> str:
    """The key a pool is stored under: the relation id, or ``"<relation>::<template>"`` for the relations whose
    meaning changes from request to request (:data:`PER_TEMPLATE_RELATIONS`: zsRE, LoCoMo)."""
    if relation in PER_TEMPLATE_RELATIONS and template:
        return f"{relation}::{template}"
    return relation


def _aliases(relation: str) -> list[str]:
    """A YAGO id with or without its angle brackets."""
    bare = relation.strip("<>")
    return list(dict.fromkeys([relation, bare, f"<{bare}>"])) if bare else [relation]


def find_pool(relation: str, template: str | None = None,
              templates: dict[str, RelationTemplates] | None = None) -> RelationTemplates | None:
    """The pool known for ``relation`` (and ``template``), without deriving anything; None when there is none.

    Order: the user's pools (:func:`add_templates`, :func:`load_templates_file`), the built-in pools, then the
    pools resolved by :func:`geomprobe.data.derive.prepare_pools`.  With ``templates`` given, only that mapping
    is searched.  :func:`geomprobe.data.derive.pool_for` goes on to rules and a model.
    """
    key = pool_key(relation, template)
    if templates is not None:
        return templates.get(key) or templates.get(relation)
    if key in _USER:
        return _USER[key]
    if relation in _USER:
        return _USER[relation]
    if relation not in PER_TEMPLATE_RELATIONS:
        builtin = builtin_templates()
        for alias in _aliases(relation):
            if alias in builtin:
                return builtin[alias]
    return _DERIVED.get(key) or _DERIVED.get(relation)


def no_pool_error(relation: str, template: str | None) -> RequestFormatError:
    """The error for a relation without pool: names ``geomprobe templates`` and the other ways out."""
    why = (f"and no rule turns its template {template!r} into questions" if template else
           "and no template was given to derive one from")
    return RequestFormatError(
        f"relation {relation!r} has no template pool {why}; run `geomprobe templates --requests FILE --out "
        "templates.json [--model M]` (a model rewrites what no rule covers), review the file and pass it with "
        "--templates templates.json, or bring the pools under \"templates\" in the request file")


def register_pools(pools: dict[str, RelationTemplates]) -> None:
    """Make resolved pools (by :func:`pool_key`) visible to every lookup, below the user's and the built-in pools
    (:func:`geomprobe.data.derive.prepare_pools` calls it)."""
    _DERIVED.update(pools)


def clear_prepared_pools() -> None:
    """Forget the pools registered by :func:`register_pools` / :func:`geomprobe.data.derive.prepare_pools` (the
    user's and the built-in pools stay)."""
    _DERIVED.clear()


#: Fixed declarative prefixes (rephrasings that keep the subject position and the completion).
DECLARATIVE_PREFIXES = ("As everyone knows, ", "In fact, ", "It is well known that ")


def declarative_variants(declarative: str) -> list[str]:
    """The fixed-prefix rephrasings of a declarative template (``"As everyone knows, {} was born in"``)."""
    first = declarative.split(" ", 1)[0]
    body = declarative[0].lower() + declarative[1:] if first in ("The", "In", "A", "An", "What", "It") else declarative
    return [p + body for p in DECLARATIVE_PREFIXES]


def _unique(items: Sequence[str], drop: Sequence[str] = ()) -> list[str]:
    seen = {d.lower() for d in drop}
    out = []
    for i in items:
        if i.lower() not in seen and i.count("{}") == 1:
            seen.add(i.lower())
            out.append(i)
    return out


def pool_from_lists(relation: str, template: str, declaratives: Sequence[str], questions: Sequence[str],
                    instructions: Sequence[str], held_out: Sequence[str], origin: str,
                    asked: str = "") -> RelationTemplates:
    """Assemble a pool: the training pool interleaves declarative, question and instruction templates (at most
    4 / 4 / 3, duplicates dropped), the held-out questions (at most 4) exclude every training template; ``asked``
    (a question the template itself asks) is held out first and never trained on; the template itself is never a
    training template (it is the edit prompt already)."""
    held = _unique([asked, *held_out] if asked else held_out)
    qs = _unique(questions, drop=(template, *held))[:4]
    ins = _unique(instructions, drop=(template,))[:3]
    decl = _unique(declaratives, drop=(template,))[:4]
    train: list[tuple[str, str]] = []
    for k in range(4):
        for form, items in (("declarative", decl), ("question", qs), ("instruction", ins)):
            if k < len(items):
                train.append((form, items[k]))
    in_train = {t for _, t in train}
    held = [h for h in held if h not in in_train][:4]
    return RelationTemplates(relation=relation, declarative=template, train=tuple(train),
                             eval_questions=tuple(held), origin=origin)


def load_templates_file(path: str | Path) -> list[str]:
    """Register the pools of a templates file (``geomprobe templates --out FILE``, reviewed by a person) for
    ``--templates FILE``: ``{"templates": {relation: {declarative, train, eval_questions}}}`` or that mapping
    alone, the layout :func:`add_templates` takes.

    Returns:
        the keys registered.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text("utf-8"))
    except OSError as e:
        raise RequestFormatError(f"cannot read templates file {p}: {e.strerror or e}; check the path") from None
    except ValueError as e:
        raise RequestFormatError(f"templates file {p} is not valid JSON ({e}); fix the file") from None
    if isinstance(data, dict) and isinstance(data.get("templates"), dict):
        data = data["templates"]
    return add_templates(data, source=str(p))


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _locate(text: str, subject: str) -> tuple[int, int, str]:
    start = text.find(_SENTINEL)
    if start < 0:  # the chat template dropped the sentinel: cannot happen for sane templates
        raise SubjectNotFoundError("the chat template removed the subject from the prompt; pass plain prompts instead")
    text = text.replace(_SENTINEL, subject, 1)
    return start, start + len(subject), text


def render(template: str, subject: str, form: str, tokenizer: Any = None, frame: str = "eval") -> Rendered:
    """Render one template for one subject in a linguistic form.

    Args:
        template: text with one ``{}`` (a declarative prompt, or a bare question for
            ``question``/``instruction``).
        subject: the subject string.
        form: ``declarative`` / ``paraphrase`` / ``neighborhood`` (plain text), ``question`` or
            ``instruction`` (chat template when the tokenizer has one, plain frames otherwise).
        tokenizer: the model's tokenizer (only its chat template is used).
        frame: ``"eval"`` (the evaluation's frames) or ``"held-out"`` (a system prompt and user frame of the
            same intent that evaluation never shows; see the module docstring). Declarative forms ignore it.
    """
    if frame not in FRAMES:
        raise RequestFormatError(f"unknown frame {frame!r}; use one of {', '.join(FRAMES)}")
    if template.count("{}") != 1:
        raise RequestFormatError(f"template {template!r} needs exactly one '{{}}' for the subject")
    body = template.replace("{}", _SENTINEL)
    if form in ("declarative", "paraphrase", "neighborhood"):
        text = body
    elif form in ("question", "instruction"):
        system, user, plain = _FRAMES[(frame, form)]
        if has_chat_template(tokenizer):
            text = tokenizer.apply_chat_template(
                [{"role": "system", "content": system}, {"role": "user", "content": user.format(question=body)}],
                tokenize=False,
                add_generation_prompt=True,
            )
        else:
            text = plain.format(question=body)
    else:
        raise RequestFormatError(f"unknown form {form!r}; use declarative, paraphrase, question or instruction")
    start, end, text = _locate(text, subject)
    return Rendered(text=text, subject_span=(start, end), form=form)


def locate_subject(text: str, subject: str) -> Rendered:
    """Wrap a full prompt that contains ``subject`` (its *last* occurrence is used)."""
    start = text.rfind(subject)
    if not subject or start < 0:
        raise SubjectNotFoundError(
            f"subject {subject!r} does not occur in prompt {text[:80]!r}; fix the subject or the prompt "
            "(matching is case-sensitive)"
        )
    return Rendered(text=text, subject_span=(start, start + len(subject)), form="declarative")


def eval_prompts(request: Any, form: str, tokenizer: Any = None,
                 templates: dict[str, RelationTemplates] | None = None) -> list[Rendered]:
    """Evaluation prompts of one request in one form.

    ``declarative`` is the edit prompt; ``paraphrase`` the request's paraphrases; ``question`` and
    ``instruction`` come from the request's own queries of that form when it has them, otherwise
    from the relation's held-out ``eval_questions`` (an empty list when neither exists).
    """
    if form == "declarative":
        return [render(request.prompt, request.subject, "declarative")]
    if form == "paraphrase":
        return [locate_subject(p, request.subject) for p in request.paraphrases]
    if form in ("question", "instruction"):
        own = [q.text for q in request.queries if q.form == form]
        if own:
            return [_render_full(q, request.subject, form, tokenizer) for q in own]
        pool = find_pool(request.relation, request.prompt, templates)
        if pool is None:
            return []
        return [render(q, request.subject, form, tokenizer) for q in pool.eval_questions]
    raise RequestFormatError(f"unknown form {form!r}; use declarative, paraphrase, question or instruction")


def _render_full(text: str, subject: str, form: str, tokenizer: Any) -> Rendered:
    """Render a full question string (subject already in it) in ``form``."""
    i = text.rfind(subject)
    if i < 0:
        raise SubjectNotFoundError(f"subject {subject!r} does not occur in query {text[:80]!r}; fix the query")
    template = text[:i] + "{}" + text[i + len(subject):]
    if template.count("{}") != 1:  # the text already held a literal '{}': fall back to plain locating
        return locate_subject(text, subject)
    return render(template, subject, form, tokenizer)


def train_prompts(relation: str, subject: str, tokenizer: Any = None, m: int | None = None,
                  templates: dict[str, RelationTemplates] | None = None, frame: str = "eval",
                  template: str | None = None) -> list[Rendered]:
    """HKI leaves: the first ``m`` training templates of ``relation`` rendered for ``subject``.

    ``frame="eval"`` renders question/instruction leaves in the evaluation's frames (only the question wording is
    held out); ``frame="held-out"`` in the held-out frames (see the module docstring).  ``template`` (the
    request's prompt) selects per-template pools (zsRE, LoCoMo; see :func:`pool_key`).
    """
    if frame not in FRAMES:
        raise RequestFormatError(f"unknown frame {frame!r}; use one of {', '.join(FRAMES)}")
    pool = find_pool(relation, template, templates)
    if pool is None:
        raise no_pool_error(relation, template)
    chosen = pool.train if m is None else pool.train[:m]
    return [render(t, subject, f, tokenizer, frame) for f, t in chosen]


def subjects_of(rendered: Sequence[Rendered]) -> list[tuple[int, int]]:
    return [r.subject_span for r in rendered]
