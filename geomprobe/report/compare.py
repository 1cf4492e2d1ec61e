"""``compare``: the same requests through several editors, side by side.

    report = gp.compare("toy-llama", "requests.json", editors=["memit", "memit-merge", "alphaedit", "rose"],
                        out="cmp")
    # beside an edit made elsewhere (its saved weights; the model is the unedited one)
    report = gp.compare("toy-llama", "requests.json", editors=["memit", "rose"], edited={"mine": "edited/"})

Every editor is measured exactly as :func:`geomprobe.report.diagnose` measures one (shared workspace: the
unedited evaluation, reference predictions, key geometry and value optimisations that editors share — e.g.
``memit`` and ``alphaedit`` both use per-request targets — are computed once; each edit's time and peak
memory still count its value optimisation).

JSON report (``report.json``; schema ``geomprobe.compare/1``):

* ``schema``, ``model``, ``editors`` (in the order given, then the imported edits' names), ``edited`` (``{name:
  origin}`` of the edits made elsewhere, ``--edited NAME=PATH``; empty without), ``overrides`` (applied to every
  editor, not to imported edits), ``run`` (the first editor's, None without editors; each editor's remedy commands
  are this run with ``--editor`` set to it; an imported edit's remedies carry no commands),
  ``requests``, ``forms``, ``rules``, ``thresholds``, ``weights_unchanged``, ``wall_seconds``, ``created``,
  ``geomprobe_version``, ``files`` — as in ``geomprobe.diagnose/2``;
* ``table`` — one row per editor and form, fields :data:`TABLE_FIELDS`: ``success_before`` / ``success_after``
  (mean over requests of the share of the form's prompts on which the target wins, ``prob`` protocol),
  ``token_acc_after`` (``token_acc`` protocol), ``n_ok`` of ``n_requests`` (requests whose verdict on the form
  is ok), ``n_not_evaluated`` (requests whose form could not be evaluated: no prompts; left out of the means and
  medians), ``rho_median`` / ``rho_rel_median`` (over requests), ``delta_median`` (over requests; 0 on the
  declarative form), ``delta_lt_rho_rate`` (share of requests with Δ < ρ; None on the declarative form),
  ``edit_seconds``, ``peak_memory_mb``;
* ``per_editor`` — ``{editor: {layers, config, editor_rule, editor_mode, measurements, verdicts, metrics, edit,
  imported}}`` with the diagnose record formats (``measurements`` / ``verdicts`` typed in the returned report, their
  ``to_dict()`` in the JSON; each verdict's ``remedy_commands`` run ``geomprobe diagnose`` with that editor;
  ``imported`` as in ``geomprobe.diagnose/2``: None for an editor, where an imported edit came from and what is not
  available for it otherwise).

Edits made elsewhere (``edited={"mine": "edited-model/"}``, ``geomprobe compare --edited mine=edited-model/``) are
imported on the unedited model for the same requests (:meth:`EditUpdate.from_weights
<geomprobe.editors.update.EditUpdate.from_weights>`) before any editor runs, then measured like an editor: rows in
``table`` and an entry in ``per_editor`` under their name (``edit_seconds`` 0: the edit's cost is unknown).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import verdict as V
from .common import (FORMS, check_edited, check_editors, check_unchanged, import_edits, load_inputs, make_workspace,
                     mean, median, model_info, package_version, plain, requests_arg, snapshot)
from .diagnose import measure
from .records import Run

SCHEMA = "geomprobe.compare/1"
DEFAULT_EDITORS: tuple[str, ...] = ("memit", "memit-merge", "alphaedit", "rose")
TABLE_FIELDS: tuple[str, ...] = ("editor", "form", "success_before", "success_after", "success_after_low",
                                 "success_after_high", "n_subjects", "token_acc_after", "n_ok",
                                 "n_requests", "n_not_evaluated", "rho_median", "rho_rel_median", "delta_median",
                                 "delta_lt_rho_rate", "edit_seconds", "peak_memory_mb")
REPORT_KEYS: tuple[str, ...] = ("schema", "model", "editors", "edited", "overrides", "run", "requests", "forms",
                                "table", "per_editor", "rules", "thresholds", "weights_unchanged", "wall_seconds",
                                "created", "geomprobe_version", "files")


def _interval(ms) -> Any:
    """95% interval of the mean ``success_after`` over requests, resampling subjects (requests of one subject are
    not independent): :func:`geomprobe.intervals.cluster_bootstrap`."""
    from ..intervals import cluster_bootstrap

    got = [(m.success_after, m.subject or m.case_id) for m in ms if m.success_after is not None]
    return cluster_bootstrap([v for v, _ in got], [c for _, c in got])


def table_rows(name: str, res: dict) -> list[dict[str, Any]]:
    """The side-by-side rows (fields :data:`TABLE_FIELDS`) of one editor's :func:`~.diagnose.measure` result."""
    rows = []
    ok = {(v.case_id, v.form): v.ok for v in res["verdicts"]}
    for form in FORMS:
        every = [m for m in res["measurements"] if m.form == form]
        if not every:
            continue
        ms = [m for m in every if V.evaluable(m)]
        pairs = [(m.delta, m.rho) for m in ms if m.delta is not None and m.rho is not None]
        iv = _interval(ms)
        rows.append({
            "editor": name, "form": form, "success_before": mean(m.success_before for m in ms),
            "success_after": mean(m.success_after for m in ms),
            "success_after_low": iv.low if iv.defined else None, "success_after_high": iv.high if iv.defined else None,
            "n_subjects": iv.n_clusters,
            "token_acc_after": mean(m.token_acc_after for m in ms),
            "n_ok": sum(bool(ok.get((m.case_id, form))) for m in ms), "n_requests": len(every),
            "n_not_evaluated": len(every) - len(ms),
            "rho_median": median(m.rho for m in ms), "rho_rel_median": median(m.rho_rel for m in ms),
            "delta_median": median(m.delta for m in ms),
            "delta_lt_rho_rate": (sum(d < r for d, r in pairs) / len(pairs)) if pairs and form != "declarative"
            else None,
            "edit_seconds": res["edit"]["seconds"], "peak_memory_mb": res["edit"]["peak_memory_mb"],
        })
    return rows


def compare(model: Any, requests: Any, editors: Sequence[str] | str = DEFAULT_EDITORS,
            out: str | Path | None = None, *, edited: Mapping[str, Any] | None = None, overrides: dict | None = None,
            trials: int = 10, device: str | None = None, dtype: str | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run :func:`~geomprobe.report.diagnose`'s measurements for each editor on the same requests.

    Args:
        model / requests / overrides / trials / device / dtype: as for :func:`~geomprobe.report.diagnose`
            (``overrides`` apply to every editor, not to the imported edits).
        editors: names, or one comma-separated string (may be empty when ``edited`` is given).
        out: folder for ``report.html``, ``report.md``, ``report.json`` and the figure PNGs.
        edited: edits made elsewhere, ``{name: what}`` (``geomprobe compare --edited NAME=PATH``): ``what`` a saved
            model directory, a ``.safetensors`` / ``.pt`` / ``.bin`` file, a state dict or ``{layer: ΔW}``, or an
            :class:`~geomprobe.editors.update.EditUpdate`; each is imported for these requests on the (unedited)
            ``model`` before any editor runs (a refusal — another architecture or shape, nothing changed... — stops
            the run with one line) and measured after the editors, as ``diagnose(edited=...)`` measures one.  A name
            must not be an editor's.

    Returns:
        the JSON report (see the module docstring).
    """
    from .render import write_compare

    t0 = time.perf_counter()
    if isinstance(editors, str):
        editors = editors.split(",")
    editors = [n for n in editors if n and n.strip()]
    edits = check_edited(edited, editors=[n.strip() for n in editors])
    names = check_editors(list(editors)) if (editors or not edits) else []
    if len(set(names)) != len(names):
        names = list(dict.fromkeys(names))
    overrides = dict(overrides or {})
    # every editor's needs are checked here, before the model loads and before the first editor computes
    lm, reqs = load_inputs(model, requests, device, dtype, log, editors=names, overrides=overrides)
    saved = snapshot(lm)
    ws = make_workspace(lm, reqs, lm.name, out, trials, log)
    for nm, upd in import_edits(lm, reqs, edits, log).items():  # refusals here, before any editor computes
        ws.register_update(nm, upd)
    check_unchanged(lm, saved)
    run = Run(model=model if isinstance(model, (str, Path)) else lm.name, requests=requests_arg(requests, reqs, out),
              editor=names[0], overrides={k: plain(v) for k, v in overrides.items()}, trials=trials, device=device,
              dtype=dtype) if names else None
    per_editor, table = {}, []
    for name in [*names, *edits]:
        given = name in edits
        res = measure(ws, reqs, name, {} if given else overrides,
                      None if given else Run.from_report({"run": run}, editor=name))
        check_unchanged(lm, saved)
        upd = res.pop("update")
        per_editor[name] = {"layers": list(upd.layers), "config": dict(upd.hparams), **res}
        table.extend(table_rows(name, res))
    report = {
        "schema": SCHEMA, "model": model_info(lm), "editors": [*names, *edits],
        "edited": {nm: per_editor[nm]["config"].get("origin", f"<{type(edits[nm]).__name__}>") for nm in edits},
        "overrides": {k: plain(v) for k, v in overrides.items()}, "run": run, "requests": [r.to_dict() for r in reqs],
        "forms": list(FORMS), "table": table, "per_editor": per_editor, "rules": V.rules_table(),
        "thresholds": dict(V.THRESHOLDS), "weights_unchanged": True, "wall_seconds": time.perf_counter() - t0,
        "created": time.strftime("%Y-%m-%d %H:%M"), "geomprobe_version": package_version(), "files": [],
    }
    if out is not None:
        report["files"] = write_compare(report, Path(out))
    return report


__all__ = ["DEFAULT_EDITORS", "REPORT_KEYS", "SCHEMA", "TABLE_FIELDS", "compare"]
