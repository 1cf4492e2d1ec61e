"""Verdicts: why an edit works or fails on one linguistic form, decided from measurements by written rules.

A *measurement record* (one per request and form, built by :mod:`geomprobe.report.diagnose`) holds plain
numbers; :func:`judge` turns it into a *verdict record* by evaluating the rules of :data:`RULES` in order.
Nothing here looks at a model: the verdict is a pure function of the record and the thresholds, so it can
be re-derived from the JSON report alone (``judge(measurement)``).

Measurement fields the rules read (see :data:`MEASUREMENT_FIELDS` for the full list):

* ``success_after`` / ``success_before`` — share of the form's prompts on which the edit's target wins
  after / before the edit (``prob`` protocol: ``P(target_new) > P(target_true)``, length-normalised);
* ``decl_success_after`` — the same share on the declarative edit prompt of the request;
* ``rho`` (ρ) and ``rho_rel`` (ρ/‖h‖) — tolerance radius of the optimised value on the declarative edit
  prompt, residual-norm units at the last edit layer L; ``value_predicts`` — whether the unperturbed
  optimised value predicts the target at all (ρ is 0 when it does not);
* ``delta`` (Δ) — ``‖ΔW_L (k_form − k_decl)‖`` of the update, mean over the form's prompts, same units as ρ
  (0 on the declarative form by definition); ``delta_covariance`` / ``delta_identity`` — Δ of the MEMIT
  covariance rule and of the isotropic rule on the same K and R; ``amplification`` — their ratio;
* ``conflict`` — mean gradient-conflict score ``1 − |cos(g_i, g_j)|`` over pairs of the subject's relations
  in the batch (None with a single relation); ``n_relations``;
* ``key_cosine`` — cosine between the form's key and the declarative key at L;
* ``collision_cosine`` / ``collision_subject`` — the largest cosine between this request's edit key (its column
  of the update's K at L: the mean over the context-prefixed edit prompts) and the column of a *different*
  subject in the batch;
* ``editor_rule`` — the update rule of the editor (``covariance``, ``identity``, ``projection``, ``rank-one``).

The rules, in the order they are evaluated (rule ids are stable; :data:`THRESHOLDS` holds the constants):

==========================  =====================================================================================
rule id                     fires when (on a form's record)
==========================  =====================================================================================
``ok``                      ``success_after ≥ FORM_SUCCESS``: the target wins on the form after the edit.
``already-true``            with ``ok``: ``success_before ≥ FORM_SUCCESS`` too (the model preferred the target
                            before the edit; the edit is not what made it succeed).
``value-not-reached``       the declarative form fails and ``value_predicts`` is False: the optimised value itself
                            does not predict the target.  Remedy: more value steps, a larger clamp, other layers.
``not-written``             the declarative form fails although the value predicts the target: the closed form did
                            not write the value into the weights.  Remedy: lower λ / α, more edit layers.
``decl-failed``             a question / instruction form fails because the declarative form already fails
                            (the cause is the declarative verdict).
``drift-exceeds-tolerance`` the form fails, the declarative form succeeds, ``delta > rho``: the prompt drift
                            pushes the output past the tolerance radius.
``covariance-amplifies``    the form fails and ``amplification > AMPLIFICATION`` while the editor uses the covariance
                            (or projection) rule: the covariance term amplifies Δk.  Remedy: the isotropic update
                            (IGA, ``rose`` / ``rose-no-hki``), which would give ``delta_identity``.
``conflict-collapses-rho``  the form fails, ``conflict > CONFLICT`` and ``rho_rel < RHO_REL_SMALL`` with two or more
                            relations of the subject: near-orthogonal relation gradients collapsed ρ.  Remedy: HKI
                            (``rose``).
``not-the-drift``           the form fails, the declarative form succeeds and ``delta ≤ rho``: the drift stays inside
                            the tolerance, so the failure is not the drift (the form reads the fact elsewhere).
                            Remedy: a different edit layer (``probes.subject_switch_rate``).
``near-duplicate``          any failing form with ``collision_cosine > COLLISION``: another edited subject's key is
                            nearly the same, so the two edits overwrite each other.  Remedy: edit the colliding
                            subjects in separate batches or disambiguate them in the prompt.
==========================  =====================================================================================

A failing record with none of the causal rules firing gets ``unexplained`` (no rule matches its numbers).
Every verdict record carries the rule ids that fired, the numbers they read and the remedies, and a
sentence assembled from per-rule templates, e.g. *"fails on the instruction form: Δ = 7.9 exceeds ρ = 2.6
(3.0×); the covariance term amplifies the prompt drift 11×; the isotropic update would give Δ = 1.4"*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

#: Named thresholds (the verdict record lists the values used).
FORM_SUCCESS = 0.5        # share of a form's prompts on which the target must win for the form to count as ok
AMPLIFICATION = 3.0       # covariance Δ / identity Δ above this: the covariance term amplifies the drift
CONFLICT = 0.8            # mean 1 − |cos| between relation gradients above this: near-orthogonal relations
RHO_REL_SMALL = 0.1       # ρ/‖h‖ below this: a collapsed tolerance radius
COLLISION = 0.9           # key cosine to another edited subject above this: near-duplicate subjects collide

THRESHOLDS: dict[str, float] = {"FORM_SUCCESS": FORM_SUCCESS, "AMPLIFICATION": AMPLIFICATION, "CONFLICT": CONFLICT,
                                "RHO_REL_SMALL": RHO_REL_SMALL, "COLLISION": COLLISION}

#: Fields of a measurement record (JSON ``measurements[i]``); numbers may be None where not measurable.
MEASUREMENT_FIELDS: tuple[str, ...] = (
    "editor", "editor_rule", "case_id", "subject", "relation", "form", "layer", "n_prompts",
    "success_before", "success_after", "decl_success_after", "target_prob_before", "target_prob_after",
    "token_acc_before", "token_acc_after", "rho", "rho_rel", "h_norm", "value_predicts", "delta", "delta_covariance", "delta_identity", "amplification",
    "dk_norm", "key_cosine", "conflict", "n_relations", "collision_subject", "collision_cosine",
)
#: Fields of a verdict record (JSON ``verdicts[i]``).
VERDICT_FIELDS: tuple[str, ...] = ("editor", "case_id", "subject", "relation", "form", "ok", "rules", "verdict",
                                   "remedies", "numbers", "thresholds")

_COVARIANCE_RULES = ("covariance", "projection", "rank-one")


def _num(m: Mapping[str, Any], key: str) -> float | None:
    v = m.get(key)
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _fails(m, t) -> bool:
    s = _num(m, "success_after")
    return s is None or s < t["FORM_SUCCESS"]


def _decl_ok(m, t) -> bool:
    s = _num(m, "decl_success_after")
    return s is not None and s >= t["FORM_SUCCESS"]


def _is_decl(m) -> bool:
    return m.get("form") == "declarative"


def _gt(m, a: str, b: str) -> bool:
    x, y = _num(m, a), _num(m, b)
    return x is not None and y is not None and x > y


@dataclass(frozen=True)
class Rule:
    """One verdict rule.

    Attributes:
        id: stable rule id (listed in the verdict record).
        when: the condition, in words (rendered in the docs and the report's rule table).
        fires: predicate on (measurement record, thresholds).
        says: sentence fragment, ``str.format``-ed with the record's numbers (and ``ratio``, ``n``).
        remedy: what to try, or "" when the rule names no remedy.
        numbers: the record fields the rule reads (copied into the verdict's ``numbers``).
    """

    id: str
    when: str
    fires: Callable[[Mapping[str, Any], Mapping[str, float]], bool]
    says: str
    remedy: str
    numbers: tuple[str, ...]


RULES: tuple[Rule, ...] = (
    Rule("ok", "success_after >= FORM_SUCCESS",
         lambda m, t: not _fails(m, t),
         "succeeds on the {form} form (target wins on {success_after:.0%} of its prompts)", "",
         ("success_after",)),
    Rule("already-true", "ok and success_before >= FORM_SUCCESS",
         lambda m, t: not _fails(m, t) and (_num(m, "success_before") or 0.0) >= t["FORM_SUCCESS"],
         "the target already won there before the edit ({success_before:.0%})", "", ("success_before",)),
    Rule("value-not-reached", "declarative form fails and the optimised value does not predict the target",
         lambda m, t: _fails(m, t) and _is_decl(m) and not m.get("value_predicts"),
         "the edit did not take: the optimised value itself does not predict the target (ρ = 0)",
         "optimise the value longer or with a larger clamp (value_steps, value_clamp), or edit other layers",
         ("value_predicts", "rho")),
    Rule("not-written", "declarative form fails although the optimised value predicts the target",
         lambda m, t: _fails(m, t) and _is_decl(m) and bool(m.get("value_predicts")),
         "the edit did not take: the value predicts the target (ρ = {rho:.3g}) but the update did not write it",
         "lower λ (covariance rules) or α, or spread the edit over more layers", ("value_predicts", "rho")),
    Rule("decl-failed", "a question/instruction form fails and the declarative form fails too",
         lambda m, t: _fails(m, t) and not _is_decl(m) and not _decl_ok(m, t),
         "the edit did not take on the declarative form either", "fix the declarative edit first (see its verdict)",
         ("decl_success_after",)),
    Rule("drift-exceeds-tolerance", "form fails, declarative succeeds, delta > rho",
         lambda m, t: _fails(m, t) and not _is_decl(m) and _decl_ok(m, t) and _gt(m, "delta", "rho"),
         "Δ = {delta:.3g} exceeds ρ = {rho:.3g} ({ratio_text})", "", ("delta", "rho")),
    Rule("covariance-amplifies", "form fails, amplification > AMPLIFICATION, editor uses the covariance",
         lambda m, t: (_fails(m, t) and not _is_decl(m) and m.get("editor_rule") in _COVARIANCE_RULES
                       and (_num(m, "amplification") or 0.0) > t["AMPLIFICATION"]),
         "the covariance term amplifies the prompt drift {amplification:.0f}×; the isotropic update would give "
         "Δ = {delta_identity:.3g}",
         "use the isotropic update (IGA: rose, or rose-no-hki)", ("amplification", "delta_covariance",
                                                                  "delta_identity")),
    Rule("conflict-collapses-rho", "form fails, conflict > CONFLICT, rho_rel < RHO_REL_SMALL, >= 2 relations",
         lambda m, t: (_fails(m, t) and (m.get("n_relations") or 0) >= 2
                       and (_num(m, "conflict") or 0.0) > t["CONFLICT"]
                       and (_num(m, "rho_rel") if _num(m, "rho_rel") is not None else 1.0) < t["RHO_REL_SMALL"]),
         "the subject's {n_relations} relations are near-orthogonal (conflict {conflict:.2f}), which collapsed ρ "
         "(ρ/‖h‖ = {rho_rel:.2g})",
         "optimise the subject's value with HKI (rose, rose-no-iga)", ("conflict", "n_relations", "rho_rel")),
    Rule("not-the-drift", "form fails, declarative succeeds, delta <= rho",
         lambda m, t: (_fails(m, t) and not _is_decl(m) and _decl_ok(m, t) and _num(m, "delta") is not None
                       and _num(m, "rho") is not None and not _gt(m, "delta", "rho")),
         "Δ = {delta:.3g} stays within ρ = {rho:.3g}, so the failure is not the drift (key cosine to the "
         "declarative key {key_cosine:.2f})",
         "edit a different layer (see probes.subject_switch_rate for where the form reads the subject)",
         ("delta", "rho", "key_cosine")),
    Rule("near-duplicate", "form fails and collision_cosine > COLLISION",
         lambda m, t: _fails(m, t) and (_num(m, "collision_cosine") or 0.0) > t["COLLISION"],
         "a near-duplicate subject collides ({collision_subject!s}, key cosine {collision_cosine:.2f})",
         "edit the colliding subjects in separate batches, or disambiguate them in the prompt",
         ("collision_subject", "collision_cosine")),
)

RULE_IDS: tuple[str, ...] = tuple(r.id for r in RULES) + ("unexplained",)
_BY_ID = {r.id: r for r in RULES}


class _Fmt(dict):
    """Format mapping: None / missing numbers print as 'n/a' under any format spec."""

    def __missing__(self, key):
        return _NA()


class _NA:
    def __format__(self, spec):
        return "n/a"

    def __str__(self):
        return "n/a"


def _fmt_values(m: Mapping[str, Any]) -> _Fmt:
    vals = _Fmt()
    for k, v in m.items():
        vals[k] = _NA() if v is None or (isinstance(v, float) and math.isnan(v)) else v
    d, r = _num(m, "delta"), _num(m, "rho")
    vals["ratio"] = d / r if d is not None and r else (math.inf if d else _NA())
    vals["ratio_text"] = (f"{d / r:.1f}×" if d is not None and r else
                          "ρ collapsed to 0: any drift leaves the target's region" if d else "n/a")
    return vals


def fired(measurement: Mapping[str, Any], thresholds: Mapping[str, float] | None = None) -> list[str]:
    """Ids of the rules that fire on ``measurement``, in :data:`RULES` order (``["unexplained"]`` when a
    failing record matches no causal rule)."""
    t = {**THRESHOLDS, **(thresholds or {})}
    ids = [r.id for r in RULES if r.fires(measurement, t)]
    if not ids:
        ids = ["unexplained"]
    return ids


def judge(measurement: Mapping[str, Any], thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The verdict record of one measurement record (fields :data:`VERDICT_FIELDS`).

    ``verdict`` is ``"<ok|fails> on the <form> form: <fragments of the fired rules joined by '; '>"``.
    """
    t = {**THRESHOLDS, **(thresholds or {})}
    ids = fired(measurement, t)
    ok = "ok" in ids
    vals = _fmt_values(measurement)
    form = measurement.get("form", "?")
    parts, remedies, numbers = [], [], {}
    for rid in ids:
        if rid == "unexplained":
            parts.append("no rule explains the failure from these measurements")
            continue
        rule = _BY_ID[rid]
        if rid == "ok":
            continue
        parts.append(rule.says.format_map(vals))
        if rule.remedy and rule.remedy not in remedies:
            remedies.append(rule.remedy)
        for k in rule.numbers:
            numbers[k] = measurement.get(k)
    for k in _BY_ID["ok"].numbers:
        numbers[k] = measurement.get(k)
    if ok:
        head = _BY_ID["ok"].says.format_map(vals)
        sentence = head + ("; " + "; ".join(parts) if parts else "")
    else:
        sentence = f"fails on the {form} form: " + "; ".join(parts)
    return {"editor": measurement.get("editor"), "case_id": measurement.get("case_id"),
            "subject": measurement.get("subject"), "relation": measurement.get("relation"), "form": form, "ok": ok,
            "rules": ids, "verdict": sentence, "remedies": remedies, "numbers": numbers, "thresholds": dict(t)}


def judge_all(measurements, thresholds: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    return [judge(m, thresholds) for m in measurements]


def rules_table() -> list[dict[str, str]]:
    """The rules as rows ``id, when, says, remedy`` (for the reports and the docs)."""
    return [{"id": r.id, "when": r.when, "says": r.says, "remedy": r.remedy} for r in RULES]


__all__ = ["AMPLIFICATION", "COLLISION", "CONFLICT", "FORM_SUCCESS", "MEASUREMENT_FIELDS", "RHO_REL_SMALL", "RULES",
           "RULE_IDS", "Rule", "THRESHOLDS", "VERDICT_FIELDS", "fired", "judge", "judge_all", "rules_table"]
