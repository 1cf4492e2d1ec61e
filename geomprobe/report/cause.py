"""Causes from interventions: which link of the edit's causal chain breaks on a failing request-form.

The paper's account (:mod:`geomprobe.report.verdict`: Δ against ρ, the covariance amplification) compares two
numbers measured on different footings.  A *cause* instead rests on interventions on the model itself
(:mod:`geomprobe.probes.edit_drift`, :mod:`geomprobe.probes.transfer`), read from a measurement record:

* ``written_share`` — the share of δ the *edited* model actually adds at (L, subject's last token) on the form's
  prompts, ``⟨v, δ⟩/‖δ‖²`` with ``v = h^edited − h`` (mean over the form's prompts);
* ``patched_success`` — share of the form's prompts on which ``h_form + δ`` patched into the *unedited* model at
  (L, subject) makes the target win (does the value transfer to this context?);
* ``edited_patched_success`` — the same patch into the *edited* model (does delivering δ exactly rescue it?);
* ``crossing_scale`` — the smallest ``s`` in the δ-scaling grid for which ``h_form + s·δ`` wins (None: none does).

A pure function of the record, like :func:`geomprobe.report.verdict.judge`; :data:`CAUSES` in evaluation order
(thresholds: :data:`THRESHOLDS`):

======================  ===========================================================================================
cause                   the record (a failing form) shows
======================  ===========================================================================================
``declarative-failed``  a question/instruction form whose declarative form fails too: nothing to transfer yet
``value-not-reached``   the declarative form fails and δ patched into the unedited model does not win either
``write-side``          δ patched exactly wins (``patched_success`` ≥ FORM_SUCCESS) and delivering δ exactly in the
                        edited model rescues the prompt (``edited_patched_success`` ≥ FORM_SUCCESS): the edit does not
                        deliver δ for this form's key (its written share says how much it does).  Without the edited
                        patch, a written share below WRITTEN_OK stands in (not confirmed).  Remedy: the isotropic
                        update (IGA: rose, rose-no-hki), other edit layers.
``magnitude``           δ patched exactly loses, but a longer δ wins (``crossing_scale`` > 1): the value is too short
                        for this form.  Remedy: optimise the value on this form (HKI), a larger clamp.
``read-side``           δ patched exactly loses at every scale: the value does not transfer to this context.
                        Remedy: optimise the value on this form's prompts (HKI with this frame).
``interference``        δ patched exactly wins, yet the edited model fails even with δ delivered exactly at
                        (L, subject) (``edited_patched_success`` < FORM_SUCCESS): the edit's other layers and
                        positions change what reads it.  Without the edited patch, a written share ≥ WRITTEN_OK
                        stands in (not confirmed).
``near-duplicate``      another edited subject's key is nearly the same (``collision_cosine`` > COLLISION); checked
                        first, since it overrides the rest.
``unexplained``         the interventions were not measured, or none of the above fits
======================  ===========================================================================================

A cause is *confirmed* (:func:`confirmed`) when the intervention that defines it was measured on the record — the
patch that separates write-side from interference is the edited-model patch, so those two are confirmed only with
``edited_patched_success``; ``unexplained`` never is.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from .records import Fmt as _Fmt, NA as _NA

FORM_SUCCESS = 0.5   # as verdict.FORM_SUCCESS: share of a form's prompts on which the target must win
WRITTEN_OK = 0.8     # the edit "delivers" δ on a form when it writes at least this share of it there
COLLISION = 0.9      # as verdict.COLLISION

THRESHOLDS: dict[str, float] = {"FORM_SUCCESS": FORM_SUCCESS, "WRITTEN_OK": WRITTEN_OK, "COLLISION": COLLISION}
CAUSES: tuple[str, ...] = ("near-duplicate", "declarative-failed", "value-not-reached", "write-side", "magnitude",
                           "read-side", "interference", "unexplained")
#: What each cause says, ``str.format``-ed with the record's numbers (missing numbers print as n/a).
SAYS: dict[str, str] = {
    "near-duplicate": "another edited subject's key is nearly the same ({collision_subject}, cosine "
                      "{collision_cosine:.2f})",
    "declarative-failed": "the declarative form fails too ({decl_success_after:.0%}): nothing to transfer",
    "value-not-reached": "δ patched into the unedited model wins on {patched_success:.0%} of the edit prompts: the "
                         "value itself does not reach the target",
    "write-side": "δ patched exactly wins ({patched_success:.0%}) and delivering it exactly in the edited model wins "
                  "on {edited_patched_success:.0%}: the edit does not deliver δ for this key (it writes "
                  "{written_share:.0%} of it here)",
    "magnitude": "δ patched exactly wins on {patched_success:.0%}; {crossing_scale:g}×δ wins: the value is too "
                 "short for this form",
    "read-side": "δ patched exactly wins on {patched_success:.0%} and no longer δ (up to the grid's end) wins: the "
                 "value does not transfer to this context (the edit writes {written_share:.0%} of it here)",
    "interference": "δ patched exactly wins ({patched_success:.0%}), yet the edited model with δ delivered exactly "
                    "wins on {edited_patched_success:.0%} (it writes {written_share:.0%} of δ here): the edit's "
                    "other layers and positions change what reads it",
    "unexplained": "the interventions do not single out a cause",
}
#: The intervention that confirms each cause (named in the verdict).
CONFIRMED_BY: dict[str, str] = {
    "near-duplicate": "key cosine between the edited subjects",
    "declarative-failed": "the declarative form's own measurement",
    "value-not-reached": "δ patched into the unedited model at (L, subject)",
    "write-side": "δ patched into the unedited and into the edited model at (L, subject)",
    "magnitude": "the δ-scaling curve on the unedited model",
    "read-side": "δ and its multiples patched into the unedited model",
    "interference": "δ patched into the unedited and into the edited model at (L, subject)",
    "unexplained": "",
}
REMEDY: dict[str, str] = {
    "near-duplicate": "edit the colliding subjects in separate batches, or disambiguate them in the prompt",
    "declarative-failed": "fix the declarative edit first (see its cause)",
    "value-not-reached": "optimise the value longer or with a larger clamp (value_steps, value_clamp)",
    "write-side": "make the update deliver δ for this form's key: the isotropic update (IGA: rose, rose-no-hki), or "
                  "other edit layers",
    "magnitude": "optimise the value on this form too (HKI: rose) or with a larger clamp",
    "read-side": "optimise the value on this form's prompts (HKI: rose; value_hki_frame=eval)",
    "interference": "edit fewer layers, or the layer where the subject is read (probes.subject_switch_rate)",
    "unexplained": "",
}
#: The record fields a cause reads.
NUMBERS: tuple[str, ...] = ("written_share", "patched_success", "edited_patched_success", "crossing_scale",
                            "drift_norm", "cumulative_drift", "rho_form", "rho_along_delta", "rho_along_drift", "miss_norm",
                            "decl_success_after",
                            "collision_cosine")


def _num(m: Mapping[str, Any], key: str) -> float | None:
    v = m.get(key)
    try:
        v = float(v) if v is not None else None
    except (TypeError, ValueError):
        return None
    return None if v is None or math.isnan(v) else v


def cause(m: Mapping[str, Any], thresholds: Mapping[str, float] | None = None) -> str | None:
    """The cause of a failing record (None for a record that succeeds or whose success is unmeasured)."""
    t = {**THRESHOLDS, **(thresholds or {})}
    ok = t["FORM_SUCCESS"]
    s = _num(m, "success_after")
    if s is None or s >= ok:
        return None
    if (_num(m, "collision_cosine") or 0.0) > t["COLLISION"]:
        return "near-duplicate"
    decl = m.get("form") == "declarative"
    d = _num(m, "decl_success_after")
    if not decl and d is not None and d < ok:
        return "declarative-failed"
    patched, written = _num(m, "patched_success"), _num(m, "written_share")
    if patched is None:
        return "unexplained"
    if patched < ok:
        if decl:
            return "value-not-reached"
        cross = _num(m, "crossing_scale")
        return "magnitude" if cross is not None and cross > 1 else "read-side"
    rescued = _num(m, "edited_patched_success")
    if rescued is not None:
        return "write-side" if rescued >= ok else "interference"
    if written is None:
        return "unexplained"
    return "write-side" if written < t["WRITTEN_OK"] else "interference"


def confirmed(m: Mapping[str, Any], thresholds: Mapping[str, float] | None = None) -> bool | None:
    """Whether the cause of a failing record rests on its defining intervention (None: the record has no cause)."""
    c = cause(m, thresholds)
    if c is None:
        return None
    if c in ("write-side", "interference"):
        return _num(m, "edited_patched_success") is not None
    return c != "unexplained"


def explain(m: Mapping[str, Any], thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """``{cause, cause_text, confirmed_by, cause_remedy, cause_numbers, cause_confirmed}`` of a record (all
    None/empty when it does not fail)."""
    c = cause(m, thresholds)
    if c is None:
        return {"cause": None, "cause_text": "", "confirmed_by": "", "cause_remedy": "", "cause_numbers": {},
                "cause_confirmed": None}
    vals = _Fmt({k: (_NA() if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in m.items()})
    return {"cause": c, "cause_text": SAYS[c].format_map(vals), "confirmed_by": CONFIRMED_BY[c],
            "cause_remedy": REMEDY[c], "cause_numbers": {k: m.get(k) for k in NUMBERS},
            "cause_confirmed": confirmed(m, thresholds)}


__all__ = ["CAUSES", "CONFIRMED_BY", "NUMBERS", "REMEDY", "SAYS", "THRESHOLDS", "cause", "confirmed", "explain"]
