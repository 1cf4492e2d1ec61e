"""Loaders for public knowledge-editing and memory data sets, all producing :class:`EditRequest`.

Supported layouts (detected from a file's structure by :func:`load_requests_file`):

* ``geomprobe`` — geomprobe's own ``{"requests": [...]}`` or a list of request objects;
* ``s2rke`` — ``{subjectID, class, subject{name}, Star_Topology: [{requested_rewrite, ...}]}``;
* ``counterfact`` — the ROME/MEMIT CounterFact records ``{case_id, requested_rewrite, ...}``;
* ``zsre`` — the ROME/MEMIT and EasyEdit zsRE records ``{subject, src, alt, answers, rephrase, loc, ...}``;
* ``easyedit`` — EasyEdit's CounterFact records ``{subject, prompt, target_new, ground_truth,
  rephrase_prompt, locality_prompt, locality_ground_truth}``;
* ``knowedit`` — KnowEdit records ``{subject, prompt, target_new, ground_truth, rephrase,
  portability: {name: [...]}, locality: {name: [...]}}``;
* ``locomo`` — LoCoMo conversations: ``locomo10.json``'s ``{conversation, observation, qa}`` or the
  per-conversation files' ``{speaker_a, speaker_b, session_N_observation, qa}``.

Detection (:func:`detect_format`) reads a top-level object (geomprobe's ``{"requests": ...}``, one
S2RKE subject, one LoCoMo conversation) or a list's first record.  A record with ``subject``,
``prompt`` and ``target_new`` is, in this order: KnowEdit if it has ``portability`` or ``locality``
(so KnowEdit's zsRE, which also has ``rephrase_prompt``, stays KnowEdit); EasyEdit if it has
``rephrase_prompt``, ``locality_prompt`` or ``locality_ground_truth``; with a bare ``ground_truth``,
KnowEdit (EasyEdit when it also has ``relation``; both map the same way); geomprobe's own only with
``relation`` and no foreign fields.  Anything else is an error naming the fix.

Choices shared by all loaders:

* Paraphrases and queries must name the request's subject literally (keys are read at the
  subject, and ``forms.eval_prompts`` locates it), so one that does not contain it is dropped and
  counted (``paraphrase_without_subject``, ``query_without_subject``).
  A ``{}`` in a paraphrase or query is filled with the subject first.
* Every malformed record raises :class:`RequestFormatError` naming the file, the record index
  (and, for ``.jsonl`` files, the line) and the field; nothing else escapes as a ``KeyError``/``TypeError``.
* What a loader skips is counted in the optional ``skipped`` counter passed by the caller and
  logged once per file as a warning.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..errors import RequestFormatError
from .requests import EditRequest, Query, parse_requests, read_json, record_where

__all__ = [
    "FILE_OPTIONS",
    "FORMATS",
    "detect_format",
    "load_counterfact",
    "load_easyedit",
    "load_knowedit",
    "load_locomo",
    "load_locomo_qa",
    "load_requests_file",
    "load_s2rke",
    "load_zsre",
    "requests_from_data",
    "template_relation",
]

log = logging.getLogger(__name__)

#: Layouts :func:`load_requests_file` recognises (the values of its ``fmt``).
FORMATS: tuple[str, ...] = ("geomprobe", "s2rke", "counterfact", "zsre", "easyedit", "knowedit", "locomo")

#: Options :func:`load_requests_file` (and ``gp.load_requests`` for a file) accepts.
FILE_OPTIONS: tuple[str, ...] = ("fmt", "skipped", "skip_unmatched")

#: Layouts whose loader takes ``skip_unmatched``.
SKIP_UNMATCHED_FORMATS: tuple[str, ...] = ("zsre", "easyedit", "knowedit")

#: Fields that mark EasyEdit's CounterFact layout; KnowEdit's are ``portability``/``locality`` dicts
#: or ``ground_truth`` (see :func:`detect_format`).
EASYEDIT_KEYS = frozenset({"rephrase_prompt", "locality_prompt", "locality_ground_truth"})
KNOWEDIT_KEYS = frozenset({"portability", "locality"})

#: zsRE locality questions start with this marker (Natural Questions); it is stripped.
NQ_MARKER = "nq question:"

#: S2RKE keys that may hold question / instruction queries of an entry.
QUERY_KEYS: dict[str, tuple[str, ...]] = {
    "question": ("question_prompts", "questions", "question_prompt", "question"),
    "instruction": ("instruction_prompts", "instructions", "instruction_prompt", "instruction"),
}

#: Words that end the LoCoMo prompt when they fall inside the last three words of a fact
#: (prepositions, articles, possessives, auxiliaries, relatives, conjunctions).
BOUNDARY_WORDS = frozenset(
    """a an the to in on at of for with from by as about into onto over under near after before
    during since until than like is was are were be been being has have had am do does did will
    would can could who which that whose whom and or but her his their its my our your
    named called""".split()
)

#: Most words the LoCoMo target (final words of a fact) may have.
MAX_TARGET_WORDS = 3

#: A LoCoMo target that is only one of these words says nothing about the fact; such facts are skipped.
PRONOUNS = frozenset(
    """i me my mine myself you your yours yourself yourselves he him his himself she her hers herself
    it its itself we us our ours ourselves they them their theirs themselves this that these those""".split()
)


# --------------------------------------------------------------------------- field access


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", list: "a list", dict: "an object", int: "an integer"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _field(obj: Any, key: str, kind: type | tuple[type, ...] | None, where: str, prefix: str = "") -> Any:
    """``obj[key]`` checked for presence and type; one-line RequestFormatError otherwise."""
    name = prefix + key
    if not isinstance(obj, dict):
        parent = prefix.rstrip(".") or "record"
        raise RequestFormatError(f"{where}: {parent!r} must be a JSON object, got {type(obj).__name__}; fix the record")
    if key not in obj:
        raise RequestFormatError(f"{where}: missing field {name!r}; add it or remove the record")
    value = obj[key]
    if kind is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise RequestFormatError(
            f"{where}: field {name!r} must be {_type_name(kind)}, got {type(value).__name__}; fix the record"
        )
    return value


def _target(value: Any, where: str, name: str) -> str:
    """A target given as a plain string or a CounterFact ``{"str": ..., "id": ...}`` object."""
    if isinstance(value, dict):
        value = _field(value, "str", str, where, prefix=f"{name}.")
    if not isinstance(value, str):
        raise RequestFormatError(
            f"{where}: field {name!r} must be a string or {{\"str\": ...}}, got {type(value).__name__}; fix the record"
        )
    return value


def _texts(value: Any, where: str, name: str) -> list[str]:
    """A list of prompts: strings, or objects with a ``prompt``/``text``/``question`` string."""
    if isinstance(value, (str, dict)):
        value = [value]
    if value is None:
        raise RequestFormatError(f"{where}: field {name!r} is null; give a list of strings ([] for none)")
    if not isinstance(value, list):
        raise RequestFormatError(f"{where}: field {name!r} must be a list of strings, got {type(value).__name__}")
    out = []
    for j, item in enumerate(value):
        if isinstance(item, dict):
            key = next((k for k in ("prompt", "text", "question") if isinstance(item.get(k), str)), None)
            if key is None:
                raise RequestFormatError(
                    f"{where}: {name}[{j}] has no 'prompt' string; give a string or {{\"prompt\": ...}}"
                )
            item = item[key]
        if not isinstance(item, str):
            raise RequestFormatError(f"{where}: {name}[{j}] must be a string, got {type(item).__name__}")
        out.append(item)
    return out


def _answered_queries(value: Any, form: str, default_answer: str, subject: str, where: str, name: str) -> list[Query]:
    """Queries from strings (answer = ``default_answer``) or objects carrying their own answer."""
    items = value if isinstance(value, list) else [value]
    out = []
    for j, item in enumerate(items):
        answer = default_answer
        if isinstance(item, dict):
            for key in ("answer", "target", "target_new"):
                if key in item:
                    answer = _target(item[key], where, f"{name}[{j}].{key}")
                    break
        (text,) = _texts([item], where, f"{name}[{j}]")
        out.append(Query(text=text.replace("{}", subject), form=form, answer=answer))
    return out


def _template(prompt: str, subject: str, where: str, name: str = "prompt") -> str:
    """A prompt with exactly one ``{}``; a prompt that spells the subject out gets it replaced."""
    if prompt.count("{}") == 1:
        return prompt
    if "{}" not in prompt and subject and subject in prompt:
        return prompt.replace(subject, "{}", 1)
    raise RequestFormatError(
        f"{where}: {name} {prompt!r} needs exactly one '{{}}' where the subject {subject!r} goes; fix the record"
    )


def _own(texts: list[str], subject: str, skipped: Counter, key: str) -> tuple[str, ...]:
    """Texts about the subject (``{}`` filled in); those that do not name it are dropped and counted."""
    kept = []
    for text in texts:
        text = text.replace("{}", subject)
        if subject in text:
            kept.append(text)
        else:
            skipped[key] += 1
    return tuple(kept)


def _request(where: str, **kwargs: Any) -> EditRequest:
    """EditRequest whose own validation errors also name the file and record."""
    try:
        return EditRequest(**kwargs)
    except RequestFormatError as e:
        raise RequestFormatError(f"{where}: {e}") from None


def _object(rec: Any, where: str) -> dict:
    """``rec`` itself when it is a JSON object; a one-line error otherwise."""
    if not isinstance(rec, dict):
        raise RequestFormatError(f"{where}: must be a JSON object, got {type(rec).__name__}; fix the record")
    return rec


def _case_id(rec: dict, index: int, where: str) -> str:
    """The record's ``case_id`` (a string or an integer), else its index."""
    case_id = rec.get("case_id", index)
    if not isinstance(case_id, (str, int)) or isinstance(case_id, bool):
        raise RequestFormatError(f"{where}: field 'case_id' must be a string or an integer; fix the record")
    return str(case_id)


def _records(data: Any, source: str, fmt: str) -> list[Any]:
    """The file's records (a list); one-line errors for anything else or an empty list."""
    if not isinstance(data, list):
        raise RequestFormatError(f"{source}: a {fmt} file must hold a JSON list of records, got {type(data).__name__}")
    if not data:
        raise RequestFormatError(f"{source}: holds no records; add at least one")
    return data


def _finish(requests: list[EditRequest], source: str, skipped: Counter) -> list[EditRequest]:
    if skipped:
        log.warning("%s: skipped %s", source, ", ".join(f"{n} {k}" for k, n in sorted(skipped.items())))
    if not requests:
        raise RequestFormatError(
            f"{source}: no usable edit requests in the file (skipped: {dict(skipped)}); check its format"
        )
    return requests


# --------------------------------------------------------------------------- S2RKE


def s2rke_requests(data: Any, source: str, skipped: Counter | None = None) -> list[EditRequest]:
    """S2RKE records (decoded JSON) to requests; see :func:`load_s2rke`."""
    skipped = Counter() if skipped is None else skipped
    local: Counter = Counter()
    if isinstance(data, dict):  # one subject object, not wrapped in a list
        data = [data]
    out = []
    for i, rec in enumerate(_records(data, source, "S2RKE")):
        where = record_where(data, source, i)
        sid = _field(rec, "subjectID", (str, int), where)
        subj = _field(rec, "subject", (str, dict), where)
        subject = subj if isinstance(subj, str) else _field(subj, "name", str, where, prefix="subject.")
        star = _field(rec, "Star_Topology", list, where)
        if not star:
            raise RequestFormatError(f"{where}: 'Star_Topology' is empty; give at least one requested_rewrite")
        for j, entry in enumerate(star):
            at = f"{where} Star_Topology[{j}]"
            rw = _field(entry, "requested_rewrite", dict, at)
            p = "requested_rewrite."
            relation_key = "relation" if "relation" in rw or "relation_id" not in rw else "relation_id"
            relation = _field(rw, relation_key, (str, int), at, prefix=p)
            target_new = _target(_field(rw, "target_new", None, at, prefix=p), at, p + "target_new")
            true = rw.get("target_true")
            target_true = None if true is None else _target(true, at, p + "target_true")
            queries = []
            for form, keys in QUERY_KEYS.items():
                for key in keys:
                    if key in entry:
                        queries += _answered_queries(entry[key], form, target_new, subject, at, key)
            if len(kept := [q for q in queries if subject in q.text]) < len(queries):
                local["query_without_subject"] += len(queries) - len(kept)
            out.append(_request(
                at,
                subject=subject,
                relation=str(relation),
                prompt=_template(_field(rw, "prompt", str, at, prefix=p), subject, at, p + "prompt"),
                target_new=target_new,
                target_true=target_true,
                paraphrases=_own(_texts(entry.get("paraphrase_prompts", []), at, "paraphrase_prompts"),
                                 subject, local, "paraphrase_without_subject"),
                neighborhood=tuple(_texts(entry.get("neighborhood_prompts", []), at, "neighborhood_prompts")),
                queries=tuple(kept),
                case_id=f"{sid}-{j}",
            ))
    skipped.update(local)
    return _finish(out, source, local)


def load_s2rke(path: str | Path, skipped: Counter | None = None) -> list[EditRequest]:
    """Load an S2RKE file: one request per ``Star_Topology`` entry.

    ``subject`` is ``subject.name``; ``relation`` is ``requested_rewrite.relation`` (or
    ``relation_id``); targets may be strings or ``{"str": ...}``; ``case_id`` is
    ``"<subjectID>-<entry index>"``. Question / instruction prompts stored with an entry
    (``question_prompts``, ``instruction_prompts`` and similar keys, see :data:`QUERY_KEYS`)
    become :class:`Query` objects whose answer is ``target_new`` unless the item carries its own;
    queries that do not name the subject are dropped and counted (``query_without_subject``).

    Args:
        path: JSON or JSONL file (a list of subject objects, or one subject object).
        skipped: optional counter that receives what was dropped (e.g. paraphrases lacking the subject).
    """
    return s2rke_requests(read_json(path), str(path), skipped)


# --------------------------------------------------------------------------- CounterFact


def counterfact_requests(data: Any, source: str, skipped: Counter | None = None) -> list[EditRequest]:
    """CounterFact records (decoded JSON) to requests; see :func:`load_counterfact`."""
    skipped = Counter() if skipped is None else skipped
    local: Counter = Counter()
    out = []
    for i, rec in enumerate(_records(data, source, "CounterFact")):
        where = record_where(data, source, i)
        rw = _field(rec, "requested_rewrite", dict, where)
        p = "requested_rewrite."
        subject = _field(rw, "subject", str, where, prefix=p)
        case_id = _case_id(rec, i, where)
        true = rw.get("target_true")
        out.append(_request(
            where,
            subject=subject,
            relation=str(_field(rw, "relation_id", (str, int), where, prefix=p)),
            prompt=_template(_field(rw, "prompt", str, where, prefix=p), subject, where, p + "prompt"),
            target_new=_target(_field(rw, "target_new", None, where, prefix=p), where, p + "target_new"),
            target_true=None if true is None else _target(true, where, p + "target_true"),
            paraphrases=_own(_texts(rec.get("paraphrase_prompts", []), where, "paraphrase_prompts"),
                             subject, local, "paraphrase_without_subject"),
            neighborhood=tuple(_texts(rec.get("neighborhood_prompts", []), where, "neighborhood_prompts")),
            case_id=case_id,
        ))
    skipped.update(local)
    return _finish(out, source, local)


def load_counterfact(path: str | Path, skipped: Counter | None = None) -> list[EditRequest]:
    """Load a ROME/MEMIT CounterFact file (``counterfact.json``, ``multi_counterfact.json``).

    ``relation`` is ``relation_id`` (e.g. ``"P103"``); targets are the ``str`` of
    ``target_new``/``target_true``. ``generation_prompts`` and ``attribute_prompts`` are not
    read: they score free generation, which geomprobe evaluates from its own forms.

    Args:
        path: JSON or JSONL file.
        skipped: optional counter that receives what was dropped.
    """
    return counterfact_requests(read_json(path), str(path), skipped)


# --------------------------------------------------------------------------- zsRE


def _strip_nq(text: str) -> str:
    if text[: len(NQ_MARKER)].lower() == NQ_MARKER:
        text = text[len(NQ_MARKER):]
    return text.strip()


def zsre_requests(data: Any, source: str, skipped: Counter | None = None,
                  skip_unmatched: bool = False) -> list[EditRequest]:
    """zsRE records (decoded JSON) to requests; see :func:`load_zsre`."""
    skipped = Counter() if skipped is None else skipped
    local: Counter = Counter()
    out = []
    for i, rec in enumerate(_records(data, source, "zsRE")):
        where = record_where(data, source, i)
        subject = _field(rec, "subject", str, where)
        src = _field(rec, "src", str, where)
        alt = _target(_field(rec, "alt", None, where), where, "alt")
        if not alt.strip():
            local["empty_alt"] += 1
            continue
        if not subject.strip() or subject not in src:
            if skip_unmatched:
                local["src_without_subject"] += 1
                continue
            raise RequestFormatError(
                f"{where}: subject {subject!r} does not occur in src {src!r}; fix the record "
                "or pass skip_unmatched=True to skip such records"
            )
        answers = rec.get("answers")
        if answers is not None and not isinstance(answers, list):
            answers = [answers]
        if answers:
            target_true = _target(answers[0], where, "answers[0]")
        elif rec.get("pred") is not None:
            target_true = _target(rec["pred"], where, "pred")
        else:
            target_true = None
        rephrase = _texts(rec.get("rephrase", []), where, "rephrase")
        loc = [_strip_nq(t) for t in _texts(rec.get("loc", []), where, "loc")]
        case_id = _case_id(rec, i, where)
        out.append(_request(
            where,
            subject=subject,
            relation="zsre",
            prompt=src.replace(subject, "{}", 1),
            target_new=alt,
            target_true=target_true,
            paraphrases=_own(rephrase, subject, local, "paraphrase_without_subject"),
            neighborhood=tuple(t for t in loc if t),
            queries=(Query(text=src, form="question", answer=alt),),
            case_id=case_id,
        ))
    skipped.update(local)
    return _finish(out, source, local)


def load_zsre(path: str | Path, skipped: Counter | None = None, skip_unmatched: bool = False) -> list[EditRequest]:
    """Load a zsRE file in the ROME/MEMIT (``pred``, ``cond``) or EasyEdit (``portability``) layout.

    geomprobe takes ``alt`` as the new target (EasyEdit's convention), not MEMIT's zsRE protocol
    (which writes ``answers[0]`` as the new fact).

    * ``prompt`` is ``src`` with the first occurrence of ``subject`` replaced by ``{}``; a record
      whose ``src`` does not contain the subject raises (or is skipped with ``skip_unmatched``).
    * ``target_new`` is ``alt``; ``target_true`` is ``answers[0]``, else ``pred``, else None.
      Records with an empty ``alt`` (``""`` or whitespace) are skipped and counted as ``empty_alt``.
    * ``rephrase`` becomes the paraphrase only if it contains the subject literally (keys are read
      at the subject); otherwise it is dropped and counted as ``paraphrase_without_subject``.
    * ``loc`` becomes the neighbourhood prompt, without its leading ``"nq question: "``.
    * ``relation`` is ``"zsre"``; ``src`` is also kept as a ``question`` query answered by ``alt``.
    * EasyEdit's ``portability`` and ``locality`` extras are not read (their questions are about
      other subjects).

    Args:
        path: JSON or JSONL file.
        skipped: optional counter that receives what was dropped.
        skip_unmatched: skip (and count) records whose subject is not in ``src`` instead of raising.
    """
    return zsre_requests(read_json(path), str(path), skipped, skip_unmatched)


# --------------------------------------------------------------------------- EasyEdit / KnowEdit


def template_relation(template: str) -> str:
    """Relation id for layouts that name none: the prompt template, whitespace collapsed.

    EasyEdit and KnowEdit records carry no relation, so requests that share a template
    (``"The mother tongue of {} is"``) share a relation; that is what geomprobe groups by.
    """
    return " ".join(template.split())


def _ground_truth(rec: dict, where: str) -> str | None:
    """``ground_truth`` as a string, or the first string of a (nested) list; None when absent or empty."""
    value = rec.get("ground_truth")
    while isinstance(value, list) and value:
        value = value[0]
    if value is None or value == []:
        return None
    text = _target(value, where, "ground_truth")
    return text if text.strip() else None


def _relation(rec: dict, template: str, where: str) -> str:
    if "relation" in rec:
        return str(_field(rec, "relation", (str, int), where))
    return template_relation(template)


def _flat_request(rec: dict, index: int, where: str, local: Counter, skip_unmatched: bool,
                  paraphrases: list[str], neighborhood: list[str]) -> EditRequest | None:
    """A request from EasyEdit/KnowEdit's flat fields; None when skipped (prompt without its subject)."""
    subject = _field(rec, "subject", str, where)
    prompt = _field(rec, "prompt", str, where)
    if skip_unmatched and "{}" not in prompt and not (subject.strip() and subject in prompt):
        local["prompt_without_subject"] += 1
        return None
    template = _template(prompt, subject, where)
    return _request(
        where,
        subject=subject,
        relation=_relation(rec, template, where),
        prompt=template,
        target_new=_target(_field(rec, "target_new", None, where), where, "target_new"),
        target_true=_ground_truth(rec, where),
        paraphrases=_own(paraphrases, subject, local, "paraphrase_without_subject"),
        neighborhood=tuple(t for t in neighborhood if t.strip()),
        case_id=_case_id(rec, index, where),
    )


def _flat_requests(data: Any, source: str, skipped: Counter | None, skip_unmatched: bool, name: str,
                   extras: Callable[[dict, str, Counter], tuple[list[str], list[str]]]) -> list[EditRequest]:
    """Requests from flat records; ``extras`` gives each record's (paraphrases, neighbourhood prompts)."""
    skipped = Counter() if skipped is None else skipped
    local: Counter = Counter()
    out = []
    for i, rec in enumerate(_records(data, source, name)):
        where = record_where(data, source, i)
        rec = _object(rec, where)
        paraphrases, neighborhood = extras(rec, where, local)
        request = _flat_request(rec, i, where, local, skip_unmatched, paraphrases, neighborhood)
        if request is not None:
            out.append(request)
    skipped.update(local)
    return _finish(out, source, local)


def _easyedit_extras(rec: dict, where: str, local: Counter) -> tuple[list[str], list[str]]:
    return (_texts(rec.get("rephrase_prompt", []), where, "rephrase_prompt"),
            _texts(rec.get("locality_prompt", []), where, "locality_prompt"))


def easyedit_requests(data: Any, source: str, skipped: Counter | None = None,
                      skip_unmatched: bool = False) -> list[EditRequest]:
    """EasyEdit CounterFact records (decoded JSON) to requests; see :func:`load_easyedit`."""
    return _flat_requests(data, source, skipped, skip_unmatched, "EasyEdit", _easyedit_extras)


def load_easyedit(path: str | Path, skipped: Counter | None = None,
                  skip_unmatched: bool = False) -> list[EditRequest]:
    """Load EasyEdit's CounterFact layout (``{prompt, subject, target_new, ground_truth, rephrase_prompt,
    locality_prompt, locality_ground_truth}``).

    * ``prompt`` is the full text; the first occurrence of ``subject`` becomes ``{}``. A prompt
      without the subject raises (or, with ``skip_unmatched``, is skipped and counted as
      ``prompt_without_subject``).
    * ``target_true`` is ``ground_truth``; ``rephrase_prompt`` is the paraphrase (dropped and
      counted as ``paraphrase_without_subject`` when it does not name the subject);
      ``locality_prompt`` is the neighbourhood prompt. ``locality_ground_truth`` is not read:
      locality is compared with the unedited model.
    * ``relation``: EasyEdit has none, so it is the template itself (:func:`template_relation`,
      e.g. ``"The mother tongue of {} is"``) and requests with the same template share it.
      A record's own ``relation`` is used when present.
    * ``case_id`` is the record's ``case_id``, else its index.

    Args:
        path: JSON or JSONL file.
        skipped: optional counter that receives what was dropped.
        skip_unmatched: skip (and count) records whose prompt does not contain the subject instead of raising.
    """
    return easyedit_requests(read_json(path), str(path), skipped, skip_unmatched)


def _named_prompts(rec: dict, key: str, where: str) -> list[str]:
    """Prompts of a KnowEdit ``{name: [{prompt, ground_truth}, ...]}`` field, in order."""
    groups = rec.get(key, {})
    if not isinstance(groups, dict):
        raise RequestFormatError(
            f"{where}: field {key!r} must be an object {{name: [{{prompt, ground_truth}}, ...]}}, "
            f"got {type(groups).__name__}; fix the record"
        )
    out: list[str] = []
    for name, items in groups.items():
        out += _texts(items, where, f"{key}.{name}")
    return out


def _knowedit_extras(rec: dict, where: str, local: Counter) -> tuple[list[str], list[str]]:
    key = "rephrase" if "rephrase" in rec else "rephrase_prompt"
    paraphrases = _texts(rec.get(key, []), where, key)
    neighborhood = [_strip_nq(t) for t in _named_prompts(rec, "locality", where)]
    portability = len(_named_prompts(rec, "portability", where))
    if portability:
        local["portability_prompt"] += portability
    return paraphrases, neighborhood


def knowedit_requests(data: Any, source: str, skipped: Counter | None = None,
                      skip_unmatched: bool = False) -> list[EditRequest]:
    """KnowEdit records (decoded JSON) to requests; see :func:`load_knowedit`."""
    return _flat_requests(data, source, skipped, skip_unmatched, "KnowEdit", _knowedit_extras)


def load_knowedit(path: str | Path, skipped: Counter | None = None,
                  skip_unmatched: bool = False) -> list[EditRequest]:
    """Load a KnowEdit file (wiki_counterfact, wiki_recent, zsre: ``{subject, prompt, target_new,
    ground_truth, rephrase, portability, locality}``).

    * ``prompt`` may be a statement or a question (zsRE); it must contain the subject, whose first
      occurrence becomes ``{}`` (otherwise it raises, or with ``skip_unmatched`` is skipped and
      counted as ``prompt_without_subject``).
    * ``target_true`` is ``ground_truth`` (a string, or the first string of a list); None without one.
    * ``rephrase`` (or ``rephrase_prompt``) is the paraphrase, kept only if it names the subject.
    * Every ``locality`` prompt (``Relation_Specificity``, ``Forgetfulness``, ...) is a neighbourhood
      prompt, without a leading ``"nq question:"``; its ``ground_truth`` is not read (locality is
      compared with the unedited model).
    * ``portability`` prompts are not read: they test *other* facts (reasoning, aliases, logical
      generalisation) with answers other than ``target_new``, while geomprobe measures one fact
      across forms. Their number is counted as ``portability_prompt``.
    * ``relation`` is the template (:func:`template_relation`) unless the record has one;
      ``case_id`` is ``case_id``, else the record index.

    Args:
        path: JSON or JSONL file.
        skipped: optional counter that receives what was dropped.
        skip_unmatched: skip (and count) records whose prompt does not contain the subject instead of raising.
    """
    return knowedit_requests(read_json(path), str(path), skipped, skip_unmatched)


# --------------------------------------------------------------------------- LoCoMo

_SESSION_OBS = re.compile(r"^session_(\d+)_observation$")
_TRAILING = ".!?;:,\"' \t\n"


def _name_pattern(name: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + re.escape(name) + r"(?!\w)")


def split_fact(fact: str, subject: str) -> tuple[str, str] | None:
    """Split a declarative fact into ``(prompt, target)`` (deterministic; None when it cannot).

    Rule: the subject is its first whole-word occurrence and becomes ``{}``. Trailing punctuation is
    dropped. The target is the last ``MAX_TARGET_WORDS`` (3) words, shortened to the words after
    the last :data:`BOUNDARY_WORDS` word among them (``"to move to Sweden"`` -> ``"Sweden"``,
    ``"is a painter"`` -> ``"painter"``); it never reaches back past the first word after the
    subject, so the prompt always keeps at least one word of its own. Facts with fewer than two
    words after the subject give None.

    Example: ``"Caroline attended a support group on 7 May 2023."`` with subject ``"Caroline"``
    gives ``("{} attended a support group on", "7 May 2023")``.
    """
    m = _name_pattern(subject).search(fact)
    if m is None:
        return None
    text = fact.rstrip(_TRAILING)
    words = [w for w in re.finditer(r"\S+", text) if w.start() >= m.end()]
    if len(words) < 2:
        return None
    tail = words[-min(MAX_TARGET_WORDS, len(words) - 1):]
    cut = 0
    for k, w in enumerate(tail[:-1]):
        if w.group().lower().strip(",;:\"'") in BOUNDARY_WORDS:
            cut = k + 1
    start = tail[cut].start()
    target = text[start:].rstrip(_TRAILING)
    prompt = text[:start].rstrip()
    prompt = prompt[: m.start()] + "{}" + prompt[m.end():]
    if not target or prompt.count("{}") != 1:
        return None
    return prompt, target


def _ids(value: Any) -> tuple[str, ...]:
    """Dialogue ids from ``"D1:3"``, ``"D1:3; D2:4"`` or a list of those."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, str):
            out += [s.strip() for s in re.split(r"[;,]", item) if s.strip()]
    return tuple(out)


def _observations(rec: dict, where: str) -> dict[int, dict]:
    """``{session number: {speaker: [[fact, dia_id], ...]}}`` from either place LoCoMo keeps them."""
    found: dict[int, dict] = {}
    nested = rec.get("observation", {})
    if not isinstance(nested, dict):
        raise RequestFormatError(f"{where}: field 'observation' must be an object, got {type(nested).__name__}")
    for container in (rec, nested):
        for key, value in container.items():
            m = _SESSION_OBS.match(key)
            if m:
                if not isinstance(value, dict):
                    raise RequestFormatError(
                        f"{where}: field {key!r} must be an object {{speaker: [[fact, dia_id], ...]}}, "
                        f"got {type(value).__name__}"
                    )
                found[int(m.group(1))] = value
    return dict(sorted(found.items()))


def _qa_items(rec: dict, where: str) -> list[dict[str, Any]]:
    qa = rec.get("qa", [])
    if not isinstance(qa, list):
        raise RequestFormatError(f"{where}: field 'qa' must be a list, got {type(qa).__name__}")
    out = []
    for k, item in enumerate(qa):
        at = f"{where} qa[{k}]"
        question = _field(item, "question", str, at, prefix="qa.")
        answer = item.get("answer")
        if answer is not None and not isinstance(answer, (str, int, float)):
            raise RequestFormatError(
                f"{at}: field 'qa.answer' must be a string or a number, got {type(answer).__name__}"
            )
        category = item.get("category")
        if category is not None and (not isinstance(category, int) or isinstance(category, bool)):
            raise RequestFormatError(f"{at}: field 'qa.category' must be an integer, got {type(category).__name__}")
        out.append({
            "question": question,
            "answer": None if answer is None else str(answer),
            "category": category,
            "evidence": list(_ids(item.get("evidence", []))),
        })
    return out


def _speakers(rec: dict, where: str) -> tuple[str, str]:
    """``speaker_a``/``speaker_b`` from ``conversation`` (locomo10.json) or the top level (per-conversation files)."""
    if "conversation" in rec:
        conv, prefix = _field(rec, "conversation", dict, where), "conversation."
    elif "speaker_a" in rec or "speaker_b" in rec:
        conv, prefix = rec, ""
    else:
        raise RequestFormatError(
            f"{where}: missing field 'conversation' (or top-level 'speaker_a' and 'speaker_b'); "
            "add it or remove the record"
        )
    return (_field(conv, "speaker_a", str, where, prefix=prefix),
            _field(conv, "speaker_b", str, where, prefix=prefix))


def _samples(data: Any, source: str) -> list[tuple[str, str, dict]]:
    """``(sample_id, where, record)`` per LoCoMo sample.

    A single object (a per-conversation file) is one sample; without a ``sample_id`` it is named
    after the file (``conv-26.json`` -> ``"conv-26"``), a sample of a list after its index.
    """
    single = isinstance(data, dict)
    out = []
    for i, rec in enumerate(_records([data] if single else data, source, "LoCoMo")):
        where = record_where(data, source, i)
        rec = _object(rec, where)
        default = Path(source).stem if single else f"locomo-{i}"
        out.append((str(rec.get("sample_id", default)), where, rec))
    return out


def _split_or_skip(fact: str, speaker: str, local: Counter) -> tuple[str, str] | None:
    """:func:`split_fact`, counting why a fact is skipped (no speaker, too short, bare pronoun target)."""
    if not _name_pattern(speaker).search(fact):
        local["fact_without_subject"] += 1
        return None
    split = split_fact(fact, speaker)
    if split is None:
        local["fact_too_short"] += 1
        return None
    if split[1].lower() in PRONOUNS:
        local["pronoun_target"] += 1
        return None
    return split


def _facts(rec: dict, where: str, sample_id: str, speakers: set[str], local: Counter) -> list[tuple]:
    """``(request kwargs, speaker, dia ids, where)`` per usable observation; adds speakers seen."""
    facts = []
    for session, by_speaker in _observations(rec, where).items():
        for speaker, entries in by_speaker.items():
            at = f"{where} session_{session}_observation[{speaker!r}]"
            if not isinstance(entries, list):
                raise RequestFormatError(f"{at}: must be a list of [fact, dia_id] pairs, got {type(entries).__name__}")
            speakers.add(speaker)
            for j, entry in enumerate(entries):
                if isinstance(entry, str):
                    entry = [entry]
                if not isinstance(entry, list) or not entry or not isinstance(entry[0], str):
                    raise RequestFormatError(f"{at}[{j}]: must be a [fact, dia_id] pair with a string fact")
                split = _split_or_skip(entry[0], speaker, local)
                if split is None:
                    continue
                kwargs = dict(subject=speaker, relation="locomo", prompt=split[0], target_new=split[1],
                              target_true=None, case_id=f"{sample_id}:s{session}:{speaker}:{j}")
                dia = entry[1] if len(entry) > 1 else []
                facts.append((kwargs, speaker, set(_ids(dia)), f"{at}[{j}]"))
    return facts


def locomo_requests(data: Any, source: str, skipped: Counter | None = None) -> list[EditRequest]:
    """LoCoMo samples (decoded JSON) to requests; see :func:`load_locomo`."""
    skipped = Counter() if skipped is None else skipped
    local: Counter = Counter()
    out = []
    for sample_id, where, rec in _samples(data, source):
        speakers = set(_speakers(rec, where))
        facts = _facts(rec, where, sample_id, speakers, local)
        queries: list[list[Query]] = [[] for _ in facts]
        for qa in _qa_items(rec, where):
            named = {s for s in speakers if _name_pattern(s).search(qa["question"])}
            hits = [n for n, (_, speaker, dia, _) in enumerate(facts)
                    if speaker in named and dia & set(qa["evidence"])]
            if qa["answer"] is None or not hits:
                local["qa_unattached"] += 1
            else:
                for n in hits:
                    queries[n].append(Query(text=qa["question"], form="question", answer=qa["answer"]))
        out += [_request(at, **kwargs, queries=tuple(q)) for (kwargs, _, _, at), q in zip(facts, queries)]
    skipped.update(local)
    return _finish(out, source, local)


def load_locomo(path: str | Path, skipped: Counter | None = None) -> list[EditRequest]:
    """Load LoCoMo conversations: each session observation becomes a declarative edit request.

    * ``subject`` is the speaker the observation is filed under; facts that do not name the
      speaker (whole word) are skipped and counted as ``fact_without_subject``; facts too short
      to split as ``fact_too_short``; facts whose target would be a bare pronoun
      (``"Tomas visited them."``, see :data:`PRONOUNS`) as ``pronoun_target``.
    * ``prompt`` / ``target_new`` come from :func:`split_fact` (the last <= 3 words, cut after the
      last preposition/article/auxiliary among them); ``target_true`` is None; ``relation`` is
      ``"locomo"``; ``case_id`` is ``"<sample_id>:s<session>:<speaker>:<index>"``.
    * A QA item becomes ``Query(form="question", answer=...)`` on each request of a speaker named
      in the question whose source turn (``dia_id``) is in the item's ``evidence``. Items with no
      such request, or without an ``answer`` (adversarial, category 5), are attached nowhere and
      counted as ``qa_unattached``; :func:`load_locomo_qa` returns all of them.

    Observations are read from ``observation.session_N_observation`` and from top-level
    ``session_N_observation`` keys (both occur in releases); the speakers from ``conversation``
    (``locomo10.json``) or from top-level ``speaker_a``/``speaker_b`` (the per-conversation files).
    A file holding one sample object without ``sample_id`` is named after the file.

    Args:
        path: JSON or JSONL file (a list of samples, or one sample object).
        skipped: optional counter that receives what was dropped.
    """
    return locomo_requests(read_json(path), str(path), skipped)


def load_locomo_qa(path: str | Path) -> pd.DataFrame:
    """All LoCoMo QA items as a DataFrame.

    Returns:
        columns ``sample_id`` (str), ``question`` (str), ``answer`` (str; missing, i.e.
        ``isna()``, for adversarial items without one), ``category`` (int or None), ``evidence`` (list of dialogue ids).
    """
    rows = []
    for sample_id, where, rec in _samples(read_json(path), str(path)):
        rows += [{"sample_id": sample_id, **qa} for qa in _qa_items(rec, where)]
    return pd.DataFrame(rows, columns=["sample_id", "question", "answer", "category", "evidence"])


# --------------------------------------------------------------------------- detection


#: What detection errors offer instead.
ACCEPTED = ("geomprobe ({\"requests\": [...]} or records with 'relation'), S2RKE, CounterFact, zsRE, "
            "EasyEdit, KnowEdit or LoCoMo")

#: Fields of geomprobe's own request records.
GEOMPROBE_FIELDS = frozenset(f.name for f in fields(EditRequest))


def detect_format(data: Any, source: str = "requests") -> str:
    """Name the layout of decoded JSON (one of :data:`FORMATS`) from its top-level object or first record."""
    if isinstance(data, dict):
        return _detect_object(data, source)
    if not isinstance(data, list):
        raise RequestFormatError(f"{source}: unrecognised JSON {type(data).__name__}; give {ACCEPTED}")
    if not data:
        raise RequestFormatError(f"{source}: holds no records; add at least one")
    first = data[0]
    if not isinstance(first, dict):
        raise RequestFormatError(f"{source}: record 0 is a {type(first).__name__}, not an object; give {ACCEPTED}")
    return _detect_record(set(first), source)


def _is_locomo(keys: Any) -> bool:
    return "conversation" in keys or "speaker_a" in keys or any(_SESSION_OBS.match(k) for k in keys)


def _detect_object(data: dict, source: str) -> str:
    """A top-level object: geomprobe's ``{"requests": ...}``, one S2RKE subject or one LoCoMo conversation."""
    if "requests" in data:
        return "geomprobe"
    if "Star_Topology" in data:
        return "s2rke"
    if _is_locomo(data):
        return "locomo"
    raise RequestFormatError(f"{source}: unrecognised JSON object (keys {sorted(data)[:6]}); give {ACCEPTED}")


def _detect_record(keys: set[str], source: str) -> str:
    if "Star_Topology" in keys:
        return "s2rke"
    if "requested_rewrite" in keys:
        return "counterfact"
    if {"src", "alt"} <= keys:
        return "zsre"
    if _is_locomo(keys):
        return "locomo"
    if {"subject", "prompt", "target_new"} <= keys:
        return _detect_flat(keys, source)
    raise RequestFormatError(f"{source}: unrecognised record layout (keys {sorted(keys)[:6]}); give {ACCEPTED}")


def _detect_flat(keys: set[str], source: str) -> str:
    """KnowEdit, EasyEdit or geomprobe, for a record with ``subject``, ``prompt`` and ``target_new``."""
    if keys & KNOWEDIT_KEYS:
        return "knowedit"
    if keys & EASYEDIT_KEYS:
        return "easyedit"
    if "ground_truth" in keys:
        return "easyedit" if "relation" in keys else "knowedit"
    if "relation" not in keys:
        raise RequestFormatError(
            f"{source}: record 0 has subject, prompt and target_new but no 'relation'; add 'relation' "
            "(geomprobe's layout) or pass fmt='easyedit' to use each prompt template as its relation"
        )
    foreign = sorted(keys - GEOMPROBE_FIELDS)
    if foreign:
        raise RequestFormatError(
            f"{source}: record 0 has field(s) {', '.join(foreign)} that geomprobe's layout does not have "
            f"(allowed: {', '.join(sorted(GEOMPROBE_FIELDS))}); remove them, or pass fmt= for another layout"
        )
    return "geomprobe"


_LOADERS: dict[str, Callable[..., list[EditRequest]]] = {
    "s2rke": s2rke_requests,
    "counterfact": counterfact_requests,
    "zsre": zsre_requests,
    "easyedit": easyedit_requests,
    "knowedit": knowedit_requests,
    "locomo": locomo_requests,
}


def requests_from_data(data: Any, source: str = "requests", fmt: str | None = None,
                       skipped: Counter | None = None, skip_unmatched: bool = False) -> list[EditRequest]:
    """Requests from decoded JSON in any of :data:`FORMATS` (detected unless ``fmt`` is given)."""
    fmt = fmt or detect_format(data, source)
    if fmt not in FORMATS:
        raise RequestFormatError(f"unknown request format {fmt!r}; use one of {', '.join(FORMATS)}")
    if skip_unmatched and fmt not in SKIP_UNMATCHED_FORMATS:
        raise RequestFormatError(
            f"{source}: skip_unmatched applies to {', '.join(SKIP_UNMATCHED_FORMATS)} files, not {fmt}; drop the option"
        )
    if fmt == "geomprobe":
        return parse_requests(data, source)
    if fmt in SKIP_UNMATCHED_FORMATS:
        return _LOADERS[fmt](data, source, skipped, skip_unmatched)
    return _LOADERS[fmt](data, source, skipped)


def load_requests_file(path: str | Path, fmt: str | None = None, skipped: Counter | None = None,
                       skip_unmatched: bool = False) -> list[EditRequest]:
    """Load a JSON/JSONL request file in any supported layout, detected from its structure.

    Args:
        path: the file.
        fmt: force a layout (one of :data:`FORMATS`) instead of detecting it.
        skipped: optional counter that receives what the loader dropped.
        skip_unmatched: skip (and count) records whose subject is not in their prompt instead of
            raising; zsre, easyedit and knowedit files only.

    Raises:
        RequestFormatError: unreadable file, unknown layout, or a malformed record (one line).
    """
    return requests_from_data(read_json(path), str(path), fmt, skipped, skip_unmatched)
