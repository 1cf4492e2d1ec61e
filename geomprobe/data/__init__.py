"""Edit requests, linguistic forms, built-in data sets and loaders for public benchmarks."""

from __future__ import annotations

from importlib import resources
from typing import Any

from ..errors import RequestFormatError
from .forms import Rendered, RelationTemplates, builtin_templates, eval_prompts, render, train_prompts
from .requests import FORMS, EditRequest, Query, group_by_subject, parse_requests, read_json, save_requests

#: Built-in request sets by name, with one line each.
BUILTIN_REQUESTS = {
    "same-subject": "real-world subjects x 3-5 relations each, counterfactual targets (written by geomprobe)",
    "near-duplicates": "pairs of near-duplicate subjects (iPhone 11 / iPhone 16 kind) for the boundary case",
    "toy": "same-subject counterfactual edits of the toy world's fictional facts (for toy-gpt2 / toy-llama)",
}


def load_requests(name_or_path: str, **options: Any) -> list[EditRequest]:
    """Built-in request sets by name, or a request file (geomprobe JSON, S2RKE, CounterFact, zsRE, EasyEdit,
    KnowEdit, LoCoMo).

    ``options`` go to the loader: for a file ``fmt``, ``skipped``, ``skip_unmatched``
    (:func:`geomprobe.data.loaders.load_requests_file`); for ``"toy"`` those of
    :func:`geomprobe.toy.world.toy_requests`; the other built-in sets take none. An unknown option is a
    :class:`RequestFormatError` naming the valid ones.
    """
    if name_or_path in ("same-subject", "near-duplicates"):
        _check_options(options, (), name_or_path)
        file = "same_subject.json" if name_or_path == "same-subject" else "near_duplicates.json"
        import json

        data = json.loads(resources.files("geomprobe.data").joinpath("builtin", file).read_text("utf-8"))
        return parse_requests(data, source=name_or_path)
    if name_or_path == "toy":
        import inspect

        from ..toy.world import toy_requests

        _check_options(options, tuple(inspect.signature(toy_requests).parameters), "toy")
        return toy_requests(**options)
    from .loaders import FILE_OPTIONS, load_requests_file

    _check_options(options, FILE_OPTIONS, name_or_path)
    return load_requests_file(name_or_path, **options)


def _check_options(options: dict[str, Any], valid: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(options) - set(valid))
    if unknown:
        allowed = ", ".join(valid) if valid else "none"
        raise RequestFormatError(f"unknown option(s) {', '.join(unknown)} for {what!r}; valid options: {allowed}")


__all__ = ["FORMS", "EditRequest", "Query", "Rendered", "RelationTemplates", "BUILTIN_REQUESTS", "builtin_templates",
           "eval_prompts", "render", "train_prompts", "group_by_subject", "load_requests", "parse_requests",
           "read_json", "save_requests"]
