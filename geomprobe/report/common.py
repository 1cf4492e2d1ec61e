"""What ``diagnose`` and ``compare`` share: input checks, the workspace, the weight guard and small helpers."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..errors import GeomprobeError

FORMS: tuple[str, ...] = ("declarative", "question", "instruction")


# ---- inputs ---------------------------------------------------------------------------------------------
def check_editors(names: Sequence[str]) -> list[str]:
    """Editor names, validated before any model is loaded (unknown name: one-line error)."""
    from .. import editors

    names = [n.strip() for n in names if n and n.strip()]
    if not names:
        raise GeomprobeError("no editor given; pass --editor NAME or --editors a,b,c")
    for n in names:
        editors.get(n)
    return names


def with_ids(requests) -> list:
    """Requests with unique, non-empty case ids (``r<i>`` for missing ones, ``<id>#<i>`` for repeats).

    The ids key the JSON records; a person reads a request as its label (``subject · relation``)."""
    out, seen = [], set()
    for i, r in enumerate(requests):
        cid = r.case_id or f"r{i}"
        if cid in seen:
            cid = f"{cid}#{i}"
        seen.add(cid)
        out.append(r if cid == r.case_id else replace(r, case_id=cid))
    return out


def not_evaluated_reason(request, form: str) -> str:
    """Why ``request`` has no evaluation prompts in ``form`` (question / instruction: no held-out templates for
    its relation and no queries of that form in the request)."""
    from ..data.forms import relation_templates

    if form not in ("question", "instruction"):
        return f"no {form} prompts"
    pool = relation_templates().get(request.relation)
    what = "has no template pool" if pool is None else "has no held-out eval_questions"
    return (f"relation {request.relation!r} {what} and the request has no {form} queries; add \"templates\" for "
            f"it to the request file (README, Request files) or give the request {form} \"queries\"")


def unevaluable_forms(reqs) -> list[tuple[Any, str]]:
    """(request, form) pairs of :data:`FORMS` without evaluation prompts (tokenizer-independent)."""
    from ..data.forms import eval_prompts

    return [(r, form) for r in reqs for form in FORMS if not eval_prompts(r, form)]


def preflight(model: Any, reqs, editors: Sequence[str] = (), overrides: dict | None = None) -> None:
    """Every check that needs no model weights, before any model loads: the model name (no hub retries), what
    each editor needs of the requests (all editors, before the first computes), the edit layers against the
    model's layer count read from its config.json, and every prompt of the diagnosed forms rendered (a subject
    missing from a query is an error here)."""
    from ..data.forms import eval_prompts
    from ..editors.options import check_layers, check_model, check_requests_for, model_layer_count

    if isinstance(model, (str, Path)):
        check_model(str(model))
    layers = (overrides or {}).get("layers")
    if layers and isinstance(model, (str, Path)):
        check_layers(layers, model_layer_count(str(model)), str(model))
    for r in reqs:
        for form in FORMS:
            eval_prompts(r, form)
    for name in editors:
        check_requests_for(name, reqs)


def load_inputs(model: Any, requests: Any, device: str | None = None, dtype: str | None = None,
                log: Callable[[str], None] = print, editors: Sequence[str] = (), overrides: dict | None = None):
    """``(lm, requests)``: request file first and every check of :func:`preflight` (cheap errors before the
    model loads: model name, what each of ``editors`` needs, the edit layers of ``overrides``), then the model
    (the layers checked again against it), then every prompt of the diagnosed forms with its tokenizer.  Forms
    that cannot be evaluated are named in the log (the report lists them as not evaluated)."""
    from ..data import load_requests
    from ..data.forms import eval_prompts
    from ..editors.options import check_layers
    from ..models import LM, load_model

    if isinstance(requests, (str, Path)):
        reqs = list(load_requests(str(requests)))
    else:
        reqs = list(requests)
    if not reqs:
        raise GeomprobeError("no requests to diagnose; the request file holds none")
    reqs = with_ids(reqs)
    preflight(model, reqs, editors, overrides)
    if isinstance(model, LM):
        lm = model
    else:
        kw = {k: v for k, v in (("device", device), ("dtype", dtype)) if v}
        t0 = time.perf_counter()
        log(f"loading {model} ...")
        lm = load_model(str(model), **kw)
        log(f"loaded {lm.name} ({time.perf_counter() - t0:.1f} s)")
    check_layers((overrides or {}).get("layers"), lm.n_layers, lm.name)
    for r in reqs:
        for form in FORMS:
            eval_prompts(r, form, lm.tokenizer)
    missing = unevaluable_forms(reqs)
    if missing:
        shown = "; ".join(f"{request_label_of(r)} ({form})" for r, form in missing[:4])
        more = f"; and {len(missing) - 4} more" if len(missing) > 4 else ""
        log(f"note: {len(missing)} request-form(s) have no prompts and are reported as not evaluated: {shown}{more}")
    return lm, reqs


def request_label_of(r) -> str:
    return f"{r.subject} · {r.relation}"


def make_workspace(lm, reqs, model_name: str, out, trials: int, log):
    """A :class:`~geomprobe.workspace.Workspace` around an already loaded model (memoises edits and probes)."""
    from ..workspace import Settings, Workspace

    return Workspace(model=lm, requests=list(reqs), out=out or ".", settings=Settings(trials=trials), log=log)


def requests_arg(requests: Any, reqs: Sequence, out: str | Path | None) -> str:
    """How the run's requests are named on a command line: the file or built-in name as given; a list of
    requests is saved to ``<out>/requests.json`` (``requests.json`` without ``out``)."""
    if isinstance(requests, (str, Path)):
        return str(requests)
    if out is None:
        return "requests.json"
    from ..data import save_requests

    path = Path(out) / "requests.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_requests(list(reqs), str(path))
    return str(path)


def case_key(reqs) -> tuple[str, ...]:
    """Memo key of a request list (its case ids)."""
    return tuple(r.case_id for r in reqs)


# ---- the weight guard -----------------------------------------------------------------------------------
def snapshot(lm) -> dict[int, torch.Tensor]:
    return {l: lm.rewrite_module(l).weight.detach().clone() for l in range(lm.n_layers)}


def check_unchanged(lm, saved: dict[int, torch.Tensor]) -> None:
    changed = [l for l, w in saved.items() if not torch.equal(lm.rewrite_module(l).weight, w)]
    if changed:
        raise GeomprobeError(f"the model's rewrite weights changed at layers {changed} during the report (a bug); "
                             "please report it")


# ---- small helpers --------------------------------------------------------------------------------------
def mean(xs: Iterable) -> float | None:
    """Mean of the non-None values (None when there are none)."""
    xs = [float(x) for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def median(xs: Iterable) -> float | None:
    """Median of the non-None values (None when there are none)."""
    xs = [float(x) for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def model_info(lm) -> dict[str, Any]:
    """The ``model`` entry of the JSON reports."""
    return {"name": lm.name, "n_layers": lm.n_layers, "d_model": lm.d_model, "d_mlp": lm.d_mlp,
            "dtype": str(lm.dtype).replace("torch.", "")}


def package_version() -> str:
    """geomprobe's installed version (from the package metadata: importing ``geomprobe`` here would be a cycle)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("geomprobe")
    except PackageNotFoundError:
        return "unknown"


def plain(v):
    """A JSON-friendly override value (tuples as lists)."""
    return list(v) if isinstance(v, tuple) else v


__all__ = ["FORMS", "case_key", "check_editors", "check_unchanged", "load_inputs", "make_workspace", "mean",
           "median", "model_info", "not_evaluated_reason", "package_version", "plain", "preflight", "requests_arg",
           "snapshot", "unevaluable_forms", "with_ids"]
