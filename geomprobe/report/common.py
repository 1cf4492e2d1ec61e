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


def load_inputs(model: Any, requests: Any, device: str | None = None, dtype: str | None = None,
                log: Callable[[str], None] = print):
    """``(lm, requests)``: request file first (cheap errors before the model loads), then the model, then
    every prompt of the diagnosed forms (a subject missing from a query is an error here, not mid-run)."""
    from ..data import load_requests
    from ..data.forms import eval_prompts
    from ..models import LM, load_model

    if isinstance(requests, (str, Path)):
        reqs = list(load_requests(str(requests)))
    else:
        reqs = list(requests)
    if not reqs:
        raise GeomprobeError("no requests to diagnose; the request file holds none")
    reqs = with_ids(reqs)
    if isinstance(model, LM):
        lm = model
    else:
        kw = {k: v for k, v in (("device", device), ("dtype", dtype)) if v}
        t0 = time.perf_counter()
        log(f"loading {model} ...")
        lm = load_model(str(model), **kw)
        log(f"loaded {lm.name} ({time.perf_counter() - t0:.1f} s)")
    for r in reqs:
        for form in FORMS:
            eval_prompts(r, form, lm.tokenizer)
    return lm, reqs


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
           "median", "model_info", "package_version", "plain", "requests_arg", "snapshot", "with_ids"]
