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


#: Default name of an edit imported with ``diagnose(edited=...)`` / ``geomprobe diagnose --edited PATH``.
IMPORTED_NAME = "imported"
#: What is not measured for an imported edit (no editor settings, no value optimisation), and why.  Reports list
#: these under ``imported.not_available`` so nothing is silently absent.
NOT_AVAILABLE: dict[str, str] = {
    "delta_covariance, delta_identity, amplification": "the counterfactual update rules need the editor's λ / α "
                                                       "and the residuals it was asked to write",
    "conflict": "gradient conflict needs the relation gradients of the edit's value optimisation",
    "kck": "kᵀC⁻¹k needs the edit's update rule and λ",
    "value_steps, value_clamp, value loss": "no value optimisation ran: ρ is measured around the δ = z − h the "
                                            "edited model delivers at the last changed layer",
    "remedy_commands": "an imported edit cannot be recomputed with other options, so the remedies are named "
                       "without command lines",
}


def is_editor_name(name: str) -> bool:
    """Whether ``name`` names a geomprobe editor (``memit``, ``revive(rose)``...)."""
    from ..editors.config import parse_editor_name

    try:
        parse_editor_name(name)
    except GeomprobeError:
        return False
    return True


def default_name(edited: Any) -> str:
    """The report name of an edit given to ``diagnose(edited=...)`` without ``name``: a given
    :class:`~geomprobe.editors.update.EditUpdate`'s own ``editor`` when that is not an editor's name, else
    ``"imported"`` for an imported update or a path / mapping and ``"given-<editor>"`` for an editor-made update."""
    own = getattr(edited, "editor", None) if hasattr(edited, "deltas") else None
    if not isinstance(own, str) or not own:
        return IMPORTED_NAME
    if not is_editor_name(own) and own != "unedited" and "=" not in own and "," not in own and own == own.strip():
        return own
    return IMPORTED_NAME if getattr(edited, "is_imported", False) else f"given-{own}"


def parse_edited(items: Sequence[str]) -> dict[str, str]:
    """``["mine=path/a", "other=path/b"]`` (``--edited NAME=PATH``, repeatable) -> ``{name: path}``; one-line
    errors for a missing ``=``, an empty name or path, or a name given twice."""
    out: dict[str, str] = {}
    for item in items:
        name, eq, path = str(item).partition("=")
        name, path = name.strip(), path.strip()
        if not eq or not name or not path:
            raise GeomprobeError(f"--edited {item!r}: write NAME=PATH, e.g. --edited mine=edited-model/ (NAME labels "
                                 "the imported edit in the report, PATH is its saved weights)")
        if name in out:
            raise GeomprobeError(f"--edited names {name!r} twice; give each imported edit its own NAME")
        out[name] = path
    return out


def check_edited(edited: Any, editors: Sequence[str] = ()) -> dict[str, Any]:
    """Edits to import, ``{name: what}`` (``what`` a path, a state dict / ``{layer: ΔW}`` mapping or an
    :class:`~geomprobe.editors.update.EditUpdate`), checked before any model loads: each name a non-empty word
    that is neither an editor's name, ``"unedited"`` nor one of ``editors``; each path existing.  One-line
    :class:`GeomprobeError` otherwise."""
    from collections.abc import Mapping

    if edited is None:
        return {}
    if not isinstance(edited, Mapping):
        raise GeomprobeError(f"edited must map a name to saved weights, got a {type(edited).__name__}; e.g. "
                             "edited={'mine': 'edited-model/'}")
    out: dict[str, Any] = {}
    for name, what in edited.items():
        if not isinstance(name, str) or not name.strip() or name != name.strip() or "=" in name or "," in name:
            raise GeomprobeError(f"imported edit name {name!r}: use a non-empty word without '=', ',' or surrounding "
                                 "spaces (e.g. mine)")
        if name == "unedited":
            raise GeomprobeError("'unedited' names the model before any edit; name the imported edit otherwise "
                                 "(e.g. --edited mine=PATH)")
        if is_editor_name(name) or name in editors:
            raise GeomprobeError(f"imported edit name {name!r} is an editor's name; name it otherwise (e.g. "
                                 f"--edited my-{name}=PATH) so the report tells the two apart")
        if isinstance(what, (str, Path)):
            path = Path(what).expanduser()
            if not path.exists():
                raise GeomprobeError(f"edited weights {str(what)!r} (edit {name!r}) do not exist; pass the directory "
                                     "save_pretrained wrote, a .safetensors / .pt / .bin file of the edited weights, "
                                     "or a {layer: ΔW} file")
        elif what is None:
            raise GeomprobeError(f"no edited weights given for {name!r}; pass a path, a state dict or an EditUpdate")
        out[name] = what
    return out


def import_edits(lm, reqs, edited: dict[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """``{name: EditUpdate}`` for :func:`check_edited`'s edits on the loaded (unedited) model ``lm`` and the
    report's requests: paths and mappings through :meth:`EditUpdate.from_weights
    <geomprobe.editors.update.EditUpdate.from_weights>` (its refusals — another architecture or shape, nothing
    changed, NaN/Inf, other parameters changed — propagate as one-line errors; ``lm``'s weights are left
    bit-identical), an ``EditUpdate`` as given (named ``name``; it must be for ``lm`` and these requests)."""
    from ..editors.update import EditUpdate

    out = {}
    for name, what in edited.items():
        if isinstance(what, EditUpdate):
            what.check_model(lm)
            if case_key(what.requests) != case_key(reqs):
                raise GeomprobeError(f"the update given as {name!r} edited requests {list(case_key(what.requests))}, "
                                     f"not the report's {list(case_key(reqs))}; pass the requests it edited")
            out[name] = what if what.editor == name else replace(what, editor=name)
            continue
        t0 = time.perf_counter()
        where = str(what) if isinstance(what, (str, Path)) else f"<{type(what).__name__}>"
        log(f"{name}: importing the edit from {where}")
        upd = EditUpdate.from_weights(lm, what, reqs, name=name)
        log(f"{name}: changed layers {list(upd.layers)} ({upd.hparams.get('form')}), read in "
            f"{time.perf_counter() - t0:.1f} s")
        out[name] = upd
    return out


def imported_info(upd) -> dict[str, Any] | None:
    """The ``imported`` entry of a report: where an imported edit came from and what is not available for it
    (None for an edit computed by a geomprobe editor)."""
    if not getattr(upd, "is_imported", False):
        return None
    hp = upd.hparams
    return {"name": upd.editor, "origin": hp.get("origin"), "form": hp.get("form"),
            "key_weighting": hp.get("key_weighting"), "reapply_exact": hp.get("reapply_exact"),
            "max_abs_delta": dict(hp.get("max_abs_delta") or {}),
            "value": "delivered: δ = z − h at the last changed layer on the bare prompt (no value optimisation)",
            "not_available": {k: f"not available for an imported edit: {why}" for k, why in NOT_AVAILABLE.items()}}


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


def preflight(model: Any, reqs, editors: Sequence[str] = (), overrides: dict | None = None) -> list[str]:
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
    from ..data.derive import prepare_pools

    prepare_pools(reqs)  # pools the rules derive (no model): evaluation prompts for any relation they cover
    for r in reqs:
        for form in FORMS:
            eval_prompts(r, form)
    left = []
    for name in editors:
        left += check_requests_for(name, reqs)
    return list(dict.fromkeys(left))


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
    left = preflight(model, reqs, editors, overrides)
    if left:
        log(f"note: no template pool or rule for relation(s) {', '.join(map(repr, left))}: the model writes their "
            "questions once it loads (cached; review them with `geomprobe templates`)")
    if isinstance(model, LM):
        lm = model
    else:
        kw = {k: v for k, v in (("device", device), ("dtype", dtype)) if v}
        t0 = time.perf_counter()
        log(f"loading {model} ...")
        lm = load_model(str(model), **kw)
        log(f"loaded {lm.name} ({time.perf_counter() - t0:.1f} s)")
    check_layers((overrides or {}).get("layers"), lm.n_layers, lm.name)
    from ..data.derive import prepare_pools

    prepare_pools(reqs, lm=lm)  # relations no rule covers: the model's rewrite (seeded, cached)
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


__all__ = ["FORMS", "IMPORTED_NAME", "NOT_AVAILABLE", "case_key", "check_edited", "check_editors", "check_unchanged",
           "default_name", "import_edits", "imported_info", "is_editor_name", "load_inputs", "make_workspace", "mean",
           "median", "model_info", "not_evaluated_reason", "package_version", "parse_edited", "plain", "preflight",
           "requests_arg", "snapshot", "unevaluable_forms", "with_ids"]
