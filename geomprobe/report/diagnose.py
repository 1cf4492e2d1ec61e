"""``diagnose``: why an edit works or fails, per request and linguistic form.

    import geomprobe as gp
    report = gp.diagnose("toy-llama", "requests.json", editor="memit", out="diag")
    for v in report["verdicts"]:
        print(v.label, v.form, v.verdict, *v.remedy_commands)

    # an edit made elsewhere (EasyEdit, the ROME/MEMIT scripts...): the unedited model + its edited weights
    report = gp.diagnose("toy-llama", "requests.json", edited="edited-model/", out="diag-imported")

The edit is computed once and applied only inside ``update.applied(lm)``; the model's rewrite weights are
checked bit-identical afterwards.  Every number comes from the probes (:mod:`geomprobe.probes`) and
:func:`geomprobe.evaluate.evaluate`; the verdicts come from the numbers through the rules of
:mod:`geomprobe.report.verdict`.  In the returned report the records are typed
(:class:`~geomprobe.report.records.Measurement`, :class:`~geomprobe.report.records.Verdict`,
:class:`~geomprobe.report.records.Run`); ``report.json`` holds their ``to_dict()``.

JSON report (``report.json``; schema ``geomprobe.diagnose/2``, fields stable within a schema version):

* ``schema`` — ``"geomprobe.diagnose/2"``;
* ``model`` — ``{name, n_layers, d_model, d_mlp, dtype}``;
* ``editor`` — editor name; ``editor_rule`` / ``editor_mode`` — its update rule and value optimisation mode;
* ``overrides`` — editor options applied on top of the model's preset; ``config`` — the resolved config;
* ``run`` — ``{model, requests, editor, overrides, trials, device, dtype}``: what reproduces the run on the
  command line (the remedy commands are this run with one change); None for an edit made elsewhere (``edited``:
  it cannot be recomputed with other options, so its remedies carry no command lines);
* ``imported`` — None for an edit computed by a geomprobe editor; for an edit made elsewhere (``geomprobe diagnose
  --edited PATH``, ``gp.diagnose(..., edited=PATH)``): ``{name, origin, form, key_weighting, reapply_exact,
  max_abs_delta, value, not_available}`` — where it came from, and ``not_available``: what is not measured for an
  imported edit and why (counterfactual rules Δ cov. / Δ iso. / amplification, gradient conflict, kᵀC⁻¹k, value
  settings and losses, remedy command lines; those measurement fields are None).  Its ``editor_rule`` is None and
  ``editor_mode`` ``"imported"``; ρ is measured around the δ = z − h the edited model delivers at its last changed
  layer on the bare prompt (:func:`~geomprobe.editors.imported.delivered_value`), not around an optimised value;
* ``layers`` — edit layers (Δ and ρ are measured at the last one);
* ``requests`` — the edited requests (``EditRequest.to_dict()``; requests without a ``case_id`` get ``r<i>``:
  ids key the records, people read the ``label``);
* ``forms`` — ``["declarative", "question", "instruction"]``;
* ``measurements`` — one record per request and form, fields
  :data:`geomprobe.report.verdict.MEASUREMENT_FIELDS` (meanings in that module's docstring; ρ, Δ in
  residual-norm units at the last edit layer; success shares under the ``prob`` protocol, decided by the
  record's ``criterion``: ``beats-true`` with the request's ``target_true``, ``beats-greedy`` against
  ``true_target`` — the unedited model's own greedy answer, taken before the edit — for a request without one,
  ``prob>0.5`` when neither exists; ``label`` is ``"subject · relation"``).  A form that cannot be evaluated
  (no prompts: its relation has no question/instruction templates and the request no queries) is still a record,
  with ``n_prompts`` 0, None numbers and the reason in ``not_evaluated``;
* ``verdicts`` — one record per request and form, fields :data:`geomprobe.report.verdict.VERDICT_FIELDS`
  (``label``, ``ok``, ``status`` — ``ok``, ``fails`` or ``not-evaluable`` —, ``criterion``, ``rules`` fired,
  ``verdict`` sentence, ``remedies`` naming the values measured for this
  case, ``remedy_commands`` — the ``geomprobe diagnose`` command line of each remedy that has one —, the
  ``numbers`` the rules read, ``thresholds``) — the paper's account —, and beside it (schema 2) the ``cause`` the
  interventions show on a failing form (:mod:`geomprobe.report.cause`: ``write-side``, ``read-side``,
  ``magnitude``, ``interference``, ``value-not-reached``, ``declarative-failed``, ``near-duplicate``,
  ``unexplained``), ``cause_text``, ``confirmed_by`` (the intervention), ``cause_remedy`` and ``cause_numbers``.
  Measurement fields of the causal chain (schema 2): ``written_share``, ``drift_norm``, ``cumulative_drift``,
  ``patched_success``, ``edited_patched_success``, ``crossing_scale``, ``rho_form`` (measured on failing forms
  only), ``rho_along_delta``, ``rho_along_drift`` and ``miss_norm`` (:func:`causal_chain`); verdicts carry
  ``cause_confirmed`` (the cause's defining intervention was measured);
* ``rules`` — the rule table (``id, when, says, remedy``);
* ``metrics`` — before/after summary per form: ``{form, protocol, before, after, n}`` (mean over requests of the
  per-request share; ``prob`` and ``token_acc``);
* ``edit`` — ``{seconds, peak_memory_mb, delta_norms, value_steps_run, value_loss_first, value_loss_last}``;
* ``weights_unchanged`` — True (a run whose weights changed raises instead of reporting);
* ``wall_seconds``, ``created``, ``geomprobe_version``, ``files`` (paths written; empty without ``out``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..errors import GeomprobeError
from . import verdict as V
from .common import (FORMS, case_key, check_edited, check_editors, check_unchanged, default_name, import_edits,
                     imported_info, load_inputs, make_workspace, mean, model_info, not_evaluated_reason,
                     package_version, plain, requests_arg, snapshot)
from ..evaluate import true_target
from .cause import FORM_SUCCESS
from .records import Measurement, Run, Verdict, request_label

SCHEMA = "geomprobe.diagnose/2"
_METRIC = {"declarative": "efficacy", "question": "generalization", "instruction": "generalization"}
#: Rules whose remedy names the layer where ``probes.subject_switch_rate`` peaks (measured only when one fires).
SWITCH_RULES: tuple[str, ...] = ("not-the-drift", "value-not-reached")
#: Other subjects swapped into a request's prompt by the switch-rate probe.
SWITCH_SUBJECTS = 20


# ---- measurements ---------------------------------------------------------------------------------------
def evaluation(ws, reqs, name: str | None, overrides: dict) -> pd.DataFrame:
    """Metrics on the three forms, ``prob`` and ``token_acc``; ``name`` None: the unedited model.  No locality rows
    (no record reads them); the unedited reference only where a request has no ``target_true``."""
    from ..evaluate import evaluate

    kw = {"forms": FORMS, "reference": _reference(ws, reqs), "protocols": ("prob", "token_acc"), "locality": False}

    def make():
        if name is None:
            return evaluate(ws.lm, reqs, **kw)
        with ws.update(name, reqs, **overrides).applied(ws.lm):
            return evaluate(ws.lm, reqs, **kw)

    return ws.memo(("report-eval", name, case_key(reqs), tuple(sorted(overrides.items()))), make)


def _reference(ws, reqs):
    """The unedited model's reference predictions, needed only for the greedy answers of requests without a
    ``target_true`` (:func:`~geomprobe.evaluate.true_target`); None when every request has one."""
    return ws.reference(reqs) if any(not r.target_true for r in reqs) else None


def _shares(df: pd.DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    """{(case_id, form): {success, criterion, target_prob, token_acc, n}} from an evaluation DataFrame."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for (cid, form), g in df.groupby(["case_id", "form"]):
        if form not in _METRIC:
            continue
        rows = g[(g["protocol"] == "prob") & (g["metric"] == _METRIC[form])]
        crit = rows["value"]
        names = list(dict.fromkeys(str(c) for c in rows["criterion"] if c)) if "criterion" in rows else []
        tp = g[(g["protocol"] == "prob") & (g["metric"] == "target_prob")]["value"]
        ta = g[(g["protocol"] == "token_acc") & (g["metric"] == _METRIC[form])]["value"]
        out[(cid, form)] = {"success": float(crit.mean()) if len(crit) else None,
                            "criterion": ",".join(names) or None,
                            "target_prob": float(tp.mean()) if len(tp) else None,
                            "token_acc": float(ta.mean()) if len(ta) else None,
                            "n": int(max(len(crit), len(tp), len(ta)))}
    return out


def key_geometry(ws, reqs, layer: int, upd=None) -> dict[str, dict[str, Any]]:
    """Per request: cosine of its question / instruction key to its declarative key (first prompt of each
    form, :func:`geomprobe.probes.form_keys`) and its nearest other-subject key.

    The collision cosine compares the key columns the closed form wrote at (``upd.keys[layer]``: the mean over
    the context-prefixed edit prompts), not the bare declarative keys: on models without a BOS token a subject
    at position 0 gives a first-token key that is nearly the same for every subject (SmolLM2: cosine 0.99),
    which would flag every pair as near-duplicates."""
    from ..probes import cosine_matrix, form_keys

    def make():
        K, index = form_keys(ws.lm, reqs, [layer], FORMS)
        S = cosine_matrix(K[:, 0])
        out: dict[str, dict[str, Any]] = {}
        decl = index[index["form"] == "declarative"]
        for r in reqs:
            rows = index[index["case_id"] == r.case_id]
            d = rows[rows["form"] == "declarative"]["row"]
            rec: dict[str, Any] = {"key_cosine": {}, "collision_subject": None, "collision_cosine": None}
            if len(d):
                di = int(d.iloc[0])
                for form in ("question", "instruction"):
                    f = rows[rows["form"] == form]["row"]
                    if len(f):
                        rec["key_cosine"][form] = float(S[di, int(f.iloc[0])])
                others = decl[decl["subject"] != r.subject]
                if upd is not None and layer in upd.keys:
                    _collision_from_columns(rec, r, upd, layer)
                elif len(others):
                    cos = S[di, torch.tensor(others["row"].to_numpy())]
                    j = int(cos.argmax())
                    rec["collision_subject"] = str(others["subject"].iloc[j])
                    rec["collision_cosine"] = float(cos[j])
            out[r.case_id] = rec
        return out

    return ws.memo(("report-keys", layer, case_key(reqs), None if upd is None else upd.editor), make)


def _collision_from_columns(rec: dict[str, Any], r, upd, layer: int) -> None:
    """Nearest other-subject column of ``upd.keys[layer]`` to the column holding request ``r``."""
    K = upd.keys[layer].double()  # (m, n_cols)
    members = upd.value.members if upd.value is not None else tuple((i,) for i in range(K.shape[1]))
    subj = [upd.requests[m[0]].subject for m in members]
    mine = [c for c, m in enumerate(members) if any(upd.requests[i].case_id == r.case_id for i in m)]
    others = [c for c, s in enumerate(subj) if s != r.subject]
    if not mine or not others:
        return
    Kn = K / K.norm(dim=0, keepdim=True).clamp_min(1e-12)
    cos = Kn[:, others].T @ Kn[:, mine[0]]
    j = int(cos.argmax())
    rec["collision_subject"] = subj[others[j]]
    rec["collision_cosine"] = float(cos[j])


def conflicts(ws, reqs, upd, mode: str) -> dict[str, float | None]:
    """Mean gradient-conflict score per subject with two or more relations in the batch (step 0).

    Merged editors (``joint``, ``hki``): the update's recorded gradients; per-request editors: computed
    afresh at the start of a joint optimisation of the same requests (:func:`probes.gradient_conflict`).
    """
    from ..probes import gradient_conflict

    count: dict[str, int] = {}
    for r in reqs:
        count[r.subject] = count.get(r.subject, 0) + 1
    multi = [r for r in reqs if count[r.subject] >= 2]
    if not multi:
        return {}
    layer = upd.layers[-1]
    try:
        if mode in ("joint", "hki") and upd.value is not None and upd.value.relation_grads:
            table = gradient_conflict(update=upd)
        else:
            from ..editors import ValueConfig

            vc = ValueConfig(**upd.hparams["value"])
            table = ws.memo(("report-conflict", case_key(multi), layer, repr(vc)),
                            lambda: gradient_conflict(ws.lm, multi, layer, config=vc))
    except GeomprobeError as e:  # e.g. a zero gradient: the conflict is undefined, say so in the log
        ws.log(f"  gradient conflict not measurable ({e})")
        return {}
    if table.empty:
        return {}
    first = table[table["step"] == table["step"].min()]
    return {s: float(g["value"].mean()) for s, g in first.groupby("subject")}


def _column_of(upd, case_id: str) -> int | None:
    """Column of the update's keys that holds request ``case_id`` (its own, or its subject's when merged)."""
    n_cols = next(iter(upd.keys.values())).shape[1]
    members = upd.value.members if upd.value is not None else tuple((i,) for i in range(n_cols))
    for c, m in enumerate(members):
        if any(upd.requests[i].case_id == case_id for i in m):
            return c
    return None


def key_writes(ws, reqs, upd, rule: str) -> dict[str, dict[str, float | None]]:
    """Per request: ``kck`` = kᵀC⁻¹k of its key column at the last edit layer (covariance rule only: MEMIT
    writes the share ``s/(1+s)`` of R along it, ``s = kᵀC⁻¹k / λ``) and ``key_norm`` = ‖k‖, and
    ``value_norm_rel`` = ‖δ‖/‖h‖ of its optimised value (the clamp bounds it)."""
    layer = upd.layers[-1]
    out: dict[str, dict[str, float | None]] = {}
    K = upd.keys.get(layer)
    cols = {r.case_id: _column_of(upd, r.case_id) if K is not None else None for r in reqs}
    W = None
    if rule == "covariance" and K is not None:
        C = ws.covariance([layer])[layer].double().cpu()
        try:
            W = torch.linalg.solve(C, K.double())
        except RuntimeError as e:  # singular C: λ cannot be proposed from it, say so in the log
            ws.log(f"  kᵀC⁻¹k not measurable ({e})")
    val = upd.value
    for r in reqs:
        c = cols[r.case_id]
        rec: dict[str, float | None] = {"kck": None, "key_norm": None, "value_norm_rel": None}
        if c is not None:
            k = K[:, c].double()
            rec["key_norm"] = float(k.norm())
            if W is not None:
                rec["kck"] = float(k @ W[:, c])
            if val is not None and c < val.delta.shape[1]:
                rec["value_norm_rel"] = float(val.delta[:, c].norm() / val.h[:, c].norm().clamp_min(1e-12))
        out[r.case_id] = rec
    return out


def _other_subjects(lm, reqs) -> list[str]:
    """Subjects to swap into a request's prompt: the batch's, then the toy world's (toy models) or the
    built-in same-subject set's."""
    subjects = list(dict.fromkeys(r.subject for r in reqs))
    try:
        if lm.name.startswith("toy-"):
            from ..toy.world import toy_world

            subjects += list(toy_world(0).subjects)
        else:
            from ..data import load_requests

            subjects += [r.subject for r in load_requests("same-subject")]
    except GeomprobeError:
        pass
    return list(dict.fromkeys(subjects))


def switch_peaks(ws, reqs, wanted) -> dict[str, dict[str, float | int | None]]:
    """Per request in ``wanted`` (case ids): the layer where :func:`geomprobe.probes.subject_switch_rate` peaks
    on the request's own prompt template, with its own subject and :data:`SWITCH_SUBJECTS` others swapped in
    (``switch_layer``, ``switch_rate``; None when no swap changes the prediction)."""
    from ..probes import subject_switch_rate

    lm = ws.lm
    pool = _other_subjects(lm, reqs)
    out: dict[str, dict[str, float | int | None]] = {}
    for r in reqs:
        if r.case_id not in wanted:
            continue

        def make(r=r):
            others = [s for s in pool if s != r.subject][:SWITCH_SUBJECTS]
            batch = [r] + [replace(r, subject=s, case_id=f"{r.case_id}~{j}", queries=(),
                           paraphrases=(), neighborhood=())
                           for j, s in enumerate(others)]
            try:
                df = subject_switch_rate(lm, batch, max_pairs=len(batch))
            except GeomprobeError as e:
                ws.log(f"  subject switch rate not measurable for {request_label(r.subject, r.relation)} ({e})")
                return {"switch_layer": None, "switch_rate": None}
            if df.empty or int(df["n_differ"].max()) == 0 or float(df["value"].max()) <= 0:
                return {"switch_layer": None, "switch_rate": None}
            best = df.loc[df["value"].idxmax()]
            return {"switch_layer": int(best["layer"]), "switch_rate": float(best["value"])}

        out[r.case_id] = ws.memo(("report-switch", r.case_id, r.subject, r.prompt), make)
    return out


def _by_form(df: pd.DataFrame, columns: dict[str, str], how: str = "mean") -> dict[tuple[str, str], dict]:
    """``{(case_id, form): {field: mean (or median) of column over the form's prompts}}``; NaN → None."""
    out: dict[tuple[str, str], dict] = {}
    if df is None or not len(df):
        return out
    cols = [c for c in columns if c in df.columns]
    agg = df.groupby(["case_id", "form"])[cols].agg(how)
    for key, row in agg.iterrows():
        out[key] = {columns[c]: (None if pd.isna(row[c]) else float(row[c])) for c in cols}
    return out


def causal_chain(ws, upd, trials: int = 10, failing: set[tuple[str, str]] | None = None,
                 curves: list | None = None, per_form: int | None = None
                 ) -> dict[tuple[str, str], dict[str, float | None]]:
    """The interventions behind a cause (:mod:`geomprobe.report.cause`), per (case_id, form): the edited model's
    written share of δ and drift at the last edit layer (:func:`~geomprobe.probes.edit_drift`), δ patched into the
    unedited and the edited model and the δ-scaling crossing (:func:`~geomprobe.probes.patch_transfer`, criterion
    ``auto``: beats target_true where there is one, else P > 0.5), the tolerance along −δ̂ and along the edited
    model's miss ``v_form − δ`` with the miss's length (:func:`~geomprobe.probes.directional_tolerance`, medians),
    and ρ on the form's own prompts (median).

    ``failing``: the (case_id, form) pairs whose isotropic ρ per form is measured (the costly search, 10 noise
    trials per radius; no cause reads it, the report shows it beside the paper's ρ); None measures every pair.
    ``curves``: a list that receives the δ-scaling curve (:func:`~geomprobe.probes.delta_scaling` rows).
    ``per_form``: the patches and directional searches run on the first that many prompts of each form (None: all;
    the written share and drift, one batched read, always on all).
    """
    from ..probes import directional_tolerance, edit_drift, tolerance_radius
    from ..probes.transfer import transfer_tests

    lm = ws.lm
    drift = edit_drift(lm, upd, forms=FORMS)
    drift = drift[drift["layer"] == upd.layers[-1]]
    patch, curve = transfer_tests(lm, upd, forms=FORMS, criterion="auto", per_form=per_form)
    if curves is not None:
        curves.append(curve)
    along = directional_tolerance(lm, upd, directions=("-delta", "drift"), forms=FORMS, criterion="auto",
                                  per_form=per_form)
    rhos = []
    for form in FORMS:
        idx = [i for i, r in enumerate(upd.requests) if failing is None or (r.case_id, form) in failing]
        if idx:
            rhos.append(tolerance_radius(lm, upd, trials=trials, forms=(form,), requests=idx))
    rho = pd.concat(rhos, ignore_index=True) if rhos else None
    out: dict[tuple[str, str], dict] = {}
    parts = (_by_form(drift, {"written_share": "written_share", "drift_norm": "drift_norm",
                              "cumulative_drift": "cumulative_drift"}),
             _by_form(patch, {"patched_success": "patched_success",
                              "edited_patched_success": "edited_patched_success"}),
             _by_form(patch, {"crossing_scale": "crossing_scale"}, "median"),
             _by_form(rho, {"rho_form": "rho_form"}, "median"),
             _by_form(along, {"rho_along_delta": "rho_along_delta", "rho_along_drift": "rho_along_drift",
                              "miss_norm": "miss_norm"}, "median"))
    for part in parts:
        for key, vals in part.items():
            out.setdefault(key, {}).update(vals)
    return out


def measure(ws, reqs, name: str, overrides: dict | None = None, run: Run | None = None,
            rho_forms: str = "failing", per_form: int | None = None) -> dict[str, Any]:
    """Everything :func:`diagnose` reports for one editor: ``{measurements, verdicts, metrics, edit, update,
    editor_rule, editor_mode, imported}`` (records typed: :class:`Measurement`, :class:`Verdict`).  ``run`` makes
    the verdicts carry their remedy command lines.

    ``name`` may also be an update registered with :meth:`Workspace.register_update
    <geomprobe.workspace.Workspace.register_update>` (e.g. an edit imported from saved weights): it is measured as
    given.  For an *imported* edit the rule and mode are unknown (``editor_rule`` None, ``editor_mode``
    ``"imported"``), ρ is measured around the δ = z − h the edited model delivers, and what needs the editor's
    settings (counterfactual rules, gradient conflict, value settings, remedy command lines) is not measured and is
    listed in ``imported["not_available"]`` (:data:`~geomprobe.report.common.NOT_AVAILABLE`); ``run`` is ignored.

    ``rho_forms``: on which request-forms the isotropic ρ per form (``rho_form``, 10 noise trials per radius, the
    slowest measurement) runs — ``"failing"`` (default; no cause reads it), ``"all"`` or ``"none"``; ``per_form``
    limits the patches and directional searches to the first prompts of each form (:func:`causal_chain`).  The result
    also holds ``curve``: the δ-scaling curve rows of the transfer test.
    """
    overrides = dict(overrides or {})
    log = ws.log
    t0 = time.perf_counter()
    given = ws.is_given(name)
    if not given:
        log(f"{name}: edit")
    upd = ws.update(name, reqs, **overrides)
    imported = bool(getattr(upd, "is_imported", False))
    if given:
        log(f"{name}: {'imported' if imported else 'given'} edit, layers {list(upd.layers)}")
    if imported:
        rule, mode, run = None, "imported", None
    elif given:  # an EditUpdate computed by a geomprobe editor elsewhere: its own settings are in its hparams
        rule, mode, run = upd.hparams.get("rule"), upd.hparams.get("mode"), None
    else:
        ed = ws.editor(name, **overrides)
        rule, mode = ed.rule, ed.mode
    layer = upd.layers[-1]
    log(f"{name}: evaluate after the edit")
    before = _shares(evaluation(ws, reqs, None, {}))
    after = _shares(evaluation(ws, reqs, name, overrides))
    ref = _reference(ws, reqs)
    log(f"{name}: tolerance radius, activation deviation, gradient conflict, key cosines"
        + (" (imported edit: ρ around the delivered δ = z − h; no counterfactual rules, no conflict)"
           if imported else ""))
    rho = ws.tolerance(name, reqs, **overrides).reset_index(drop=True)
    dev = ws.deviation(name, ("update",) if imported else ("update", "covariance", "identity"), reqs, **overrides)
    dmean = dev.groupby(["case_id", "form", "rule"])["value"].mean()
    dk = dev[dev["rule"] == "update"].groupby(["case_id", "form"])["dk_norm"].mean()
    conf = {} if imported else conflicts(ws, reqs, upd, mode)
    geo = key_geometry(ws, reqs, layer, upd)
    writes = key_writes(ws, reqs, upd, rule)
    log(f"{name}: interventions (written share, δ patched into the unedited / edited model, δ scaling, ρ per form)")
    failing = {key for key, v in after.items() if v.get("success") is not None and v["success"] < FORM_SUCCESS}
    curves: list = []
    chain = causal_chain(ws, upd, trials=ws.settings.trials, curves=curves, per_form=per_form,
                         failing={"failing": failing, "all": None, "none": set()}[rho_forms])
    hp = upd.hparams
    vcfg = hp.get("value") or {}
    n_rel: dict[str, int] = {}
    for r in reqs:
        n_rel[r.subject] = n_rel.get(r.subject, 0) + 1

    measurements: list[Measurement] = []
    for i, r in enumerate(reqs):
        rr = rho.iloc[i]
        g = geo.get(r.case_id, {})
        true, criterion = true_target(r, ref)
        label = request_label(r.subject, r.relation)
        for form in FORMS:
            b, a = before.get((r.case_id, form), {}), after.get((r.case_id, form), {})
            if not a:  # no prompts of this form: reported as not evaluated, never dropped
                measurements.append(Measurement(
                    editor=name, editor_rule=rule, case_id=r.case_id, label=label, subject=r.subject,
                    relation=r.relation, form=form, layer=layer, n_prompts=0, criterion=None, true_target=true,
                    not_evaluated=not_evaluated_reason(r, form), n_relations=n_rel[r.subject],
                    edit_layers=tuple(int(l) for l in upd.layers), n_model_layers=ws.lm.n_layers))
                continue
            if form == "declarative":  # Δ is 0 by definition; an imported edit has no counterfactual rules
                d_u, d_c, d_i = (0.0, None, None) if imported else (0.0, 0.0, 0.0)
                amp, dkn, kc = None, 0.0, 1.0
            else:
                get = lambda rule: (float(dmean[(r.case_id, form, rule)])  # noqa: E731
                                    if (r.case_id, form, rule) in dmean.index else None)
                d_u, d_c, d_i = get("update"), get("covariance"), get("identity")
                amp = d_c / d_i if d_c is not None and d_i else None
                dkn = float(dk[(r.case_id, form)]) if (r.case_id, form) in dk.index else None
                kc = g.get("key_cosine", {}).get(form)
            measurements.append(Measurement(
                editor=name, editor_rule=rule, case_id=r.case_id, label=label,
                subject=r.subject, relation=r.relation, form=form, layer=layer, n_prompts=a.get("n"),
                criterion=a.get("criterion") or criterion, true_target=true,
                not_evaluated=None if a.get("success") is not None else
                "its success was not measured (no prob-protocol rows)",
                success_before=b.get("success"), success_after=a.get("success"),
                decl_success_after=after.get((r.case_id, "declarative"), {}).get("success"),
                target_prob_before=b.get("target_prob"), target_prob_after=a.get("target_prob"),
                token_acc_before=b.get("token_acc"), token_acc_after=a.get("token_acc"),
                rho=float(rr["value"]), rho_rel=float(rr["value_rel"]), h_norm=float(rr["h_norm"]),
                value_predicts=bool(rr["predicted"]), delta=d_u, delta_covariance=d_c,
                delta_identity=d_i, amplification=amp, dk_norm=dkn, key_cosine=kc,
                conflict=conf.get(r.subject), n_relations=n_rel[r.subject],
                collision_subject=g.get("collision_subject"), collision_cosine=g.get("collision_cosine"),
                edit_layers=tuple(int(l) for l in upd.layers), n_model_layers=ws.lm.n_layers,
                lam=hp.get("lam"), alpha=hp.get("alpha"), **writes.get(r.case_id, {}),
                value_steps=vcfg.get("steps"),
                value_steps_run=None if imported else getattr(upd.value, "steps_run", None),
                value_clamp=vcfg.get("clamp"), **chain.get((r.case_id, form), {}),
            ))
    # the switch-rate probe runs only for the requests whose verdict names it
    wanted = {m.case_id for m in measurements if set(V.fired(m)) & set(SWITCH_RULES)}
    if wanted:
        log(f"{name}: subject switch rate per layer for {len(wanted)} request(s)")
        peaks = switch_peaks(ws, reqs, wanted)
        measurements = [replace(m, **peaks[m.case_id]) if m.case_id in peaks else m for m in measurements]
    verdicts: list[Verdict] = V.judge_all(measurements, run=run)
    metrics = []
    for form in FORMS:
        for proto, key in (("prob", "success"), ("token_acc", "token_acc")):
            bs = [before[(r.case_id, form)][key] for r in reqs if before.get((r.case_id, form), {}).get(key) is not None]
            as_ = [after[(r.case_id, form)][key] for r in reqs if after.get((r.case_id, form), {}).get(key) is not None]
            metrics.append({"form": form, "protocol": proto, "before": mean(bs), "after": mean(as_), "n": len(as_)})
    val = None if imported else upd.value
    edit = {"seconds": upd.seconds, "peak_memory_mb": upd.peak_memory_mb,
            "delta_norms": {str(k): v for k, v in upd.delta_norms().items()},
            "value_steps_run": getattr(val, "steps_run", None),
            "value_loss_first": float(val.losses[0]) if val is not None and val.losses else None,
            "value_loss_last": float(val.losses[-1]) if val is not None and val.losses else None,
            "measure_seconds": time.perf_counter() - t0}
    return {"measurements": measurements, "verdicts": verdicts, "metrics": metrics, "edit": edit, "update": upd,
            "editor_rule": rule, "editor_mode": mode, "imported": imported_info(upd),
            "curve": curves[0] if curves else pd.DataFrame()}


# ---- entry point ----------------------------------------------------------------------------------------
def diagnose(model: Any, requests: Any, editor: str | None = None, out: str | Path | None = None, *,
             edited: Any = None, name: str | None = None, overrides: dict | None = None, trials: int = 10,
             device: str | None = None, dtype: str | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Diagnose one editor on ``requests`` — or an edit made elsewhere (``edited``) — : measurements, verdicts and
    (with ``out``) the reports.

    Args:
        model: built-in name, HF id, local path, or a loaded :class:`~geomprobe.LM`; with ``edited``, the
            *unedited* model the edit was made on (its weights stay bit-identical).
        requests: built-in set name, request file, or a list of :class:`~geomprobe.EditRequest`; with ``edited``,
            the requests the edit wrote.
        editor: editor name (``gp.editors.names()`` or ``revive(<name>)``); default ``memit``.  Not with ``edited``.
        out: folder for ``report.html`` (self-contained), ``report.md``, ``report.json`` and the figure PNGs.
        edited: an edit made elsewhere instead of an editor: the path of a saved model directory or a
            ``.safetensors`` / ``.pt`` / ``.bin`` file of edited weights (or ``{layer: ΔW}``), a state dict or
            ``{layer: ΔW}`` mapping in memory (read with :meth:`EditUpdate.from_weights
            <geomprobe.editors.update.EditUpdate.from_weights>`), or an already computed
            :class:`~geomprobe.editors.update.EditUpdate`.  An edit of another architecture or shape, one that
            changed nothing or other parameters than the MLP output projections, or NaN/Inf, is refused with one
            :class:`GeomprobeError` line before anything is measured.  Every probe runs on it; ρ is measured around
            the δ = z − h the edited model delivers, and what needs the editor's settings is listed under
            ``imported.not_available`` (see the module docstring).
        name: the edit's name in the report with ``edited`` (default ``"imported"``, or a given update's
            ``editor``); not an editor's name.
        overrides: editor options on top of the model's preset (``layers=``, ``lam=``, ``value_clamp=``...); not
            with ``edited`` (an edit made elsewhere brings its own layers and settings).
        trials: noise draws per radius of the tolerance probe.

    Returns:
        the report (see the module docstring; records typed), with ``files`` listing what was written.
    """
    from .render import write_diagnose

    t0 = time.perf_counter()
    overrides = dict(overrides or {})
    if edited is not None:
        if editor is not None:
            raise GeomprobeError(f"pass editor={editor!r} or edited=..., not both (compare runs editors beside an "
                                 "imported edit)")
        if overrides:
            raise GeomprobeError(f"editor options ({', '.join(overrides)}) configure an editor; an edit made "
                                 "elsewhere (edited=...) brings its own layers and settings")
        if name is None:
            name = default_name(edited)
        edits = check_edited({name: edited})
        editors: list[str] = []
    else:
        if name is not None:
            raise GeomprobeError(f"name={name!r} names an edit made elsewhere; pass it with edited=PATH")
        (name,) = check_editors([editor or "memit"])
        edits, editors = {}, [name]
    lm, reqs = load_inputs(model, requests, device, dtype, log, editors=editors, overrides=overrides)
    saved = snapshot(lm)
    ws = make_workspace(lm, reqs, lm.name, out, trials, log)
    for nm, upd in import_edits(lm, reqs, edits, log).items():  # refusals here, before anything is measured
        ws.register_update(nm, upd)
    check_unchanged(lm, saved)
    run = None if edits else Run(model=model if isinstance(model, (str, Path)) else lm.name,
                                 requests=requests_arg(requests, reqs, out), editor=name,
                                 overrides={k: plain(v) for k, v in overrides.items()}, trials=trials, device=device,
                                 dtype=dtype)
    res = measure(ws, reqs, name, overrides, run)
    check_unchanged(lm, saved)
    upd = res["update"]
    report = {
        "schema": SCHEMA, "model": model_info(lm), "editor": name, "editor_rule": res["editor_rule"],
        "editor_mode": res["editor_mode"], "overrides": {k: plain(v) for k, v in overrides.items()},
        "config": dict(upd.hparams), "run": run, "imported": res["imported"], "layers": list(upd.layers),
        "requests": [r.to_dict() for r in reqs], "forms": list(FORMS),
        "measurements": res["measurements"], "verdicts": res["verdicts"], "rules": V.rules_table(),
        "thresholds": dict(V.THRESHOLDS), "metrics": res["metrics"], "edit": res["edit"], "weights_unchanged": True,
        "wall_seconds": time.perf_counter() - t0, "created": time.strftime("%Y-%m-%d %H:%M"),
        "geomprobe_version": package_version(), "files": [],
    }
    if out is not None:
        report["files"] = write_diagnose(report, Path(out))
    return report


#: Top-level keys of the diagnose JSON report, in order.
REPORT_KEYS: tuple[str, ...] = ("schema", "model", "editor", "editor_rule", "editor_mode", "overrides", "config",
                                "run", "imported", "layers", "requests", "forms", "measurements", "verdicts", "rules",
                                "thresholds", "metrics", "edit", "weights_unchanged", "wall_seconds", "created",
                                "geomprobe_version", "files")

__all__ = ["FORMS", "REPORT_KEYS", "SCHEMA", "SWITCH_RULES", "check_editors", "diagnose", "key_writes", "measure",
           "switch_peaks"]
