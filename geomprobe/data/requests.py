"""Edit requests: the facts an editor writes, and the prompts that evaluate them.

A request names a subject, a relation and a declarative prompt with ``{}`` where the subject goes
(``"The capital of {} is"``), the new target and, where known, the true one.  Paraphrases,
neighbourhood prompts and evaluation queries are *full* strings; those that belong to the
request's own subject must contain the subject literally (checked where keys are taken).

geomprobe's own request file is JSON: either a list of request objects or ``{"requests": [...]}``
with the field names of :class:`EditRequest`, optionally with ``"templates"``: template pools for relations
that are not built in (README, "Request files").  Loaders for S2RKE, CounterFact, zsRE, EasyEdit,
KnowEdit and LoCoMo live in :mod:`geomprobe.data.loaders` and produce the same type.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import RequestFormatError

#: Linguistic forms a query can take.  ``declarative`` is the edit prompt itself.
FORMS: tuple[str, ...] = ("declarative", "paraphrase", "question", "instruction", "neighborhood")


@dataclass(frozen=True)
class Query:
    """One evaluation prompt with its expected answer.

    Attributes:
        text: the full prompt (plain text; chat templating happens at render time).
        form: one of :data:`FORMS`.
        answer: the expected continuation; for free-form QA (LoCoMo) a short answer string.
    """

    text: str
    form: str
    answer: str | None = None

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise RequestFormatError(f"unknown query form {self.form!r}; use one of {', '.join(FORMS)}")


@dataclass(frozen=True)
class EditRequest:
    """One fact to write: ``prompt.format(subject) -> target_new``.

    Attributes:
        subject: the subject string, e.g. ``"France"``.
        relation: a relation id shared by requests of the same kind, e.g. ``"capital"``
            (used to pick question/instruction templates and to group HKI gradients).
        prompt: declarative prompt with one ``{}`` for the subject, e.g. ``"The capital of {} is"``.
        target_new: the counterfactual answer to write (no leading space; one is added when scored).
        target_true: the answer the unedited model should give, if known.
        paraphrases: full declarative rephrasings containing the subject.
        neighborhood: full prompts about *other* subjects (locality; compared with the pre-edit model).
        queries: extra evaluation queries (e.g. S2RKE questions, LoCoMo QA); question/instruction
            forms are otherwise rendered from the relation's held-out templates.
        case_id: stable identifier within its data set.
    """

    subject: str
    relation: str
    prompt: str
    target_new: str
    target_true: str | None = None
    paraphrases: tuple[str, ...] = ()
    neighborhood: tuple[str, ...] = ()
    queries: tuple[Query, ...] = ()
    case_id: str = ""

    def __post_init__(self) -> None:
        where = f"request {self.case_id or self.subject!r}"
        for name in ("subject", "relation", "prompt", "target_new"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise RequestFormatError(f"{where}: field {name!r} must be a non-empty string")
        if self.prompt.count("{}") != 1:
            raise RequestFormatError(
                f"{where}: prompt {self.prompt!r} must contain exactly one '{{}}' where the subject goes"
            )
        for name in ("paraphrases", "neighborhood", "queries"):
            _check_list(getattr(self, name), where, name)
        # tuples keep the dataclass hashable and immutable even when built from lists
        object.__setattr__(self, "paraphrases", tuple(self.paraphrases))
        object.__setattr__(self, "neighborhood", tuple(self.neighborhood))
        object.__setattr__(self, "queries", tuple(self.queries))

    @property
    def text(self) -> str:
        """The declarative edit prompt with the subject filled in."""
        return self.prompt.replace("{}", self.subject)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["paraphrases"] = list(self.paraphrases)
        d["neighborhood"] = list(self.neighborhood)
        d["queries"] = [asdict(q) for q in self.queries]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "request") -> "EditRequest":
        """A request from geomprobe JSON; every error is prefixed with ``where`` (file and record)."""
        try:
            return cls._from_dict(d, where)
        except RequestFormatError as e:
            message = str(e)
            raise RequestFormatError(message if message.startswith(where) else f"{where}: {message}") from None

    @classmethod
    def _from_dict(cls, d: dict[str, Any], where: str) -> "EditRequest":
        if not isinstance(d, dict):
            raise RequestFormatError(f"{where}: expected a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise RequestFormatError(
                f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}"
            )
        missing = [k for k in ("subject", "relation", "prompt", "target_new") if k not in d]
        if missing:
            raise RequestFormatError(f"{where}: missing field(s) {', '.join(missing)}")
        d = dict(d)
        for key in ("paraphrases", "neighborhood", "queries"):
            _check_list(d.get(key, ()), where, key)
        try:
            d["queries"] = tuple(Query(**q) for q in d.get("queries", ()))
        except TypeError as e:
            raise RequestFormatError(f"{where}: malformed query ({e}); fields are text, form, answer") from None
        return cls(**d)


def _check_list(value: Any, where: str, name: str) -> None:
    """``value`` must be a list of strings (of :class:`Query` or query objects for ``queries``)."""
    if value is None:
        raise RequestFormatError(f"{where}: field {name!r} is null; give a list ([] for none) or leave it out")
    if isinstance(value, (str, dict)) or not isinstance(value, (list, tuple)):
        raise RequestFormatError(f"{where}: field {name!r} must be a list, got {type(value).__name__}")
    if name != "queries" and not all(isinstance(p, str) for p in value):
        raise RequestFormatError(f"{where}: {name!r} must be a list of strings")


def save_requests(requests: Iterable[EditRequest], path: str | Path) -> Path:
    """Write requests as geomprobe JSON (``{"requests": [...]}``)."""
    path = Path(path)
    path.write_text(json.dumps({"requests": [r.to_dict() for r in requests]}, indent=1, ensure_ascii=False))
    return path


def parse_requests(data: Any, source: str = "requests") -> list[EditRequest]:
    """Parse geomprobe JSON (already decoded) into requests.

    ``data`` is a list of request objects or ``{"requests": [...], "templates": {...}}``; the optional
    ``templates`` (template pools of the file's own relations, see :func:`geomprobe.data.forms.add_templates`)
    are registered before the requests are checked.
    """
    if isinstance(data, dict) and "requests" in data:
        extra = sorted(set(data) - {"requests", "templates"})
        if extra:
            raise RequestFormatError(f"{source}: unknown top-level field(s) {', '.join(extra)}; "
                                     "a geomprobe request file holds \"requests\" and optionally \"templates\"")
        if "templates" in data:
            from .forms import add_templates

            add_templates(data["templates"], source=f"{source}: templates")
        data = data["requests"]
    if not isinstance(data, list):
        raise RequestFormatError(f"{source}: expected a list of requests or {{\"requests\": [...]}}")
    if not data:
        raise RequestFormatError(f"{source}: holds no requests; add at least one")
    return [EditRequest.from_dict(d, where=record_where(data, source, i)) for i, d in enumerate(data)]


class JsonLines(list):
    """Records of a JSON-lines file; ``lines[i]`` is the file line record ``i`` came from."""

    lines: list[int]


def record_where(data: Any, source: str, index: int) -> str:
    """``"<source> record <index>"``, plus ``" (line N)"`` for records read from a JSON-lines file."""
    lines = getattr(data, "lines", None)
    if lines is not None and index < len(lines):
        return f"{source} record {index} (line {lines[index]})"
    return f"{source} record {index}"


def read_json(path: str | Path) -> Any:
    """Read a JSON or JSON-lines file with one-line errors for the usual failures.

    A ``.jsonl`` file gives a :class:`JsonLines` list that remembers each record's line number.
    """
    path = Path(path)
    if not path.is_file():
        raise RequestFormatError(f"request file {str(path)!r} does not exist; pass a path to a JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RequestFormatError(f"cannot read {str(path)!r} ({e.__class__.__name__}); pass a UTF-8 JSON file") from None
    if path.suffix == ".jsonl":
        return _read_json_lines(text, path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _json_error(path, e, e.lineno) from None


def _read_json_lines(text: str, path: Path) -> JsonLines:
    records = JsonLines()
    records.lines = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise _json_error(path, e, n) from None
        records.lines.append(n)
    return records


def _json_error(path: Path, e: json.JSONDecodeError, line: int) -> RequestFormatError:
    return RequestFormatError(
        f"{str(path)!r} is not valid JSON (line {line}, column {e.colno}: {e.msg}); fix the file"
    )


def group_by_subject(requests: Sequence[EditRequest]) -> dict[str, list[EditRequest]]:
    """Requests grouped by subject, in first-seen order."""
    groups: dict[str, list[EditRequest]] = {}
    for r in requests:
        groups.setdefault(r.subject, []).append(r)
    return groups
