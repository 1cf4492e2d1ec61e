"""Verdicts: why an edit works or fails on one linguistic form, decided from measurements by written rules.

A *measurement record* (:class:`~geomprobe.report.records.Measurement`, one per request and form, built by
:mod:`geomprobe.report.diagnose`) holds plain numbers; :func:`judge` turns it into a *verdict record*
(:class:`~geomprobe.report.records.Verdict`) by evaluating the rules of :data:`RULES` in order.  Nothing here
looks at a model: the verdict is a pure function of the record, the thresholds and the run's command line, so it
can be re-derived from the JSON report alone (``judge(measurement, run=Run.from_report(report))``; ``judge``
takes the JSON dict as well as the dataclass).

Measurement fields the rules read (see :data:`MEASUREMENT_FIELDS` for the full list):

* ``success_after`` / ``success_before`` — share of the form's prompts on which the edit's target wins
  after / before the edit (``prob`` protocol, length-normalised), by the record's ``criterion``
  (:data:`CRITERIA`): ``beats-true`` — ``P(target_new) > P(target_true)``; ``beats-greedy`` — a request without
  a ``target_true`` is compared with ``true_target``, the unedited model's own greedy answer taken before the
  edit; ``prob>0.5`` — neither exists: ``P(target_new) > 0.5``;
* ``not_evaluated`` — why a form could not be evaluated (e.g. its relation has no question templates), None
  when it was;
* ``decl_success_after`` — the same share on the declarative edit prompt of the request;
* ``rho`` (ρ) and ``rho_rel`` (ρ/‖h‖) — tolerance radius of the optimised value on the declarative edit
  prompt, residual-norm units at the last edit layer L; ``value_predicts`` — whether the unperturbed
  optimised value predicts the target at all under ρ's criterion (default P(target) > 0.5; ρ is 0 when it
  does not);
* ``delta`` (Δ) — ``‖ΔW_L (k_form − k_decl)‖`` of the update, mean over the form's prompts, same units as ρ
  (0 on the declarative form by definition); ``delta_covariance`` / ``delta_identity`` — Δ of the MEMIT
  covariance rule and of the isotropic rule on the same K and R; ``amplification`` — their ratio;
* ``conflict`` — mean gradient-conflict score ``1 − |cos(g_i, g_j)|`` over pairs of the subject's relations
  in the batch (None with a single relation); ``n_relations``;
* ``key_cosine`` — cosine between the form's key and the declarative key at L;
* ``collision_cosine`` / ``collision_subject`` — the largest cosine between this request's edit key (its column
  of the update's K at L: the mean over the context-prefixed edit prompts) and the column of a *different*
  subject in the batch;
* ``editor_rule`` — the update rule of the editor (``covariance``, ``identity``, ``projection``, ``rank-one``);
* ``label`` — the request as a person reads it, ``"subject · relation"`` (``case_id`` keys the records).

Measurement fields the remedies read (they name these values and turn them into command lines):

* ``edit_layers`` / ``n_model_layers`` — the run's edit layers and the model's depth;
* ``lam`` / ``alpha`` — the run's λ and α; ``kck`` — kᵀC⁻¹k of the request's key column at L (covariance rule;
  MEMIT writes the share ``s/(1+s)`` of R along the key, ``s = kᵀC⁻¹k / λ``); ``key_norm`` — ‖k‖ (the isotropic
  rule writes ``s/(1+s)`` with ``s = ‖k‖² / α``);
* ``value_steps`` / ``value_steps_run`` / ``value_clamp`` — configured and run value-optimisation steps, the
  clamp; ``value_norm_rel`` — ‖δ‖/‖h‖ of the request's optimised value (at the clamp when it equals it);
* ``switch_layer`` / ``switch_rate`` — where :func:`geomprobe.probes.subject_switch_rate` peaks on the request's
  prompt template (its subject and other subjects swapped in); measured only for requests on which a rule that
  names it fires (``not-the-drift``, ``value-not-reached``), else None.

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

These rules are the *paper's account* (Δ against ρ, the covariance amplification, the conflict).  Beside them every
failing verdict carries a ``cause`` read from interventions on the model (:mod:`geomprobe.report.cause`:
``write-side``, ``read-side``, ``magnitude``, ``interference``, ...), the intervention that confirms it
(``confirmed_by``) and the numbers it read (``cause_numbers``), so a report shows both accounts side by side.

**Missing values are never failures.**  A rule whose inputs are missing (None / NaN) does not fire: a form fails
only on a measured ``success_after`` below ``FORM_SUCCESS``, ``decl-failed`` needs a measured
``decl_success_after`` below it, ``value-not-reached`` a ``value_predicts`` that is False (not unknown).  A record
whose ``success_after`` is missing gets the single pseudo-rule ``not-evaluable`` (status ``not-evaluable``, not
ok and not failing), with the reason from ``not_evaluated``: *"not evaluated on the question form: relation
'official language' has no question templates and the request no queries of that form"*.

Remedies as commands: each rule's :class:`Fix` entries name values measured for this case, computed by
:func:`remedy_values` (``WRITE_SHARE``, ``VALUE_STEPS_FACTOR``, ``VALUE_CLAMP_FACTOR`` are named constants):

* ``value-not-reached`` — ``--set value_steps=<steps × 2> --set value_clamp=<clamp × 2>``; and ``--layers a-b``
  (as many layers as the run edits, ending where the subject switch rate peaks) when that differs from the run's;
* ``not-written`` — covariance rule: ``--set lam=<kᵀC⁻¹k / 9>``, the λ that writes 90% of R along this key
  (only when the run's λ writes less); isotropic rule: ``--set alpha=<‖k‖² / 9>``;
* ``covariance-amplifies`` — ``--editor`` the isotropic editor with the same value optimisation
  (:data:`ISOTROPIC_EDITOR`); ``conflict-collapses-rho`` — ``--editor`` the HKI editor (:data:`HKI_EDITOR`);
* ``not-the-drift`` — ``--layers a-b`` around the switch-rate peak, as above.

A fix whose values are not measured is left out and the rule's general remedy is listed instead.  Given the
run (:class:`~geomprobe.report.records.Run`), each fix with a change becomes a command line in
``remedy_commands``: ``geomprobe diagnose --model M --requests R --editor E`` with the run's ``--layers`` /
``--set`` options and the fix's change.

Every verdict record carries the rule ids that fired, the numbers they read and the remedies, and a
sentence assembled from per-rule templates, e.g. *"fails on the instruction form: Δ = 7.9 exceeds ρ = 2.6
(3.0×); the covariance term amplifies the prompt drift 11×; the isotropic update would give Δ = 1.4"*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

from .records import Fmt as _Fmt, Measurement, NA as _NA, Run, Verdict

#: Named thresholds (the verdict record lists the values used).
FORM_SUCCESS = 0.5        # share of a form's prompts on which the target must win for the form to count as ok
AMPLIFICATION = 3.0       # covariance Δ / identity Δ above this: the covariance term amplifies the drift
CONFLICT = 0.8            # mean 1 − |cos| between relation gradients above this: near-orthogonal relations
RHO_REL_SMALL = 0.1       # ρ/‖h‖ below this: a collapsed tolerance radius
COLLISION = 0.9           # key cosine to another edited subject above this: near-duplicate subjects collide
#: Named constants of the remedies.
WRITE_SHARE = 0.9         # "lower λ / α" proposes the value that writes this share of R along the request's key
VALUE_STEPS_FACTOR = 2.0  # "optimise the value longer": value_steps times this
VALUE_CLAMP_FACTOR = 2.0  # "larger clamp": value_clamp times this

THRESHOLDS: dict[str, float] = {"FORM_SUCCESS": FORM_SUCCESS, "AMPLIFICATION": AMPLIFICATION, "CONFLICT": CONFLICT,
                                "RHO_REL_SMALL": RHO_REL_SMALL, "COLLISION": COLLISION, "WRITE_SHARE": WRITE_SHARE,
                                "VALUE_STEPS_FACTOR": VALUE_STEPS_FACTOR, "VALUE_CLAMP_FACTOR": VALUE_CLAMP_FACTOR}

#: Fields of a measurement record (JSON ``measurements[i]``; :class:`~geomprobe.report.records.Measurement`).
MEASUREMENT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Measurement))
#: Fields of a verdict record (JSON ``verdicts[i]``; :class:`~geomprobe.report.records.Verdict`).
VERDICT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Verdict))

#: The success criteria a record can be decided by (``criterion``; names as in :data:`geomprobe.evaluate.CRITERIA`),
#: as the verdict sentence states them.
CRITERIA: dict[str, str] = {
    "beats-true": "the target beats the request's target_true",
    "beats-greedy": "the target beats the unedited model's own answer (no target_true in the request)",
    "prob>0.5": "P(target) > 0.5 (no target_true in the request and no usable answer of the unedited model)",
}
#: Pseudo-rule of a record whose success is not measured (no rule reads it, no verdict counts it as failing).
NOT_EVALUABLE = "not-evaluable"

_COVARIANCE_RULES = ("covariance", "projection", "rank-one")
#: The isotropic-update (IGA) editor with the same value optimisation, per covariance editor.
ISOTROPIC_EDITOR: dict[str, str] = {"memit": "rose-no-hki", "memit-merge": "rose-no-hki", "alphaedit": "rose-no-hki",
                                    "rome": "rose-no-hki", "rose-no-iga": "rose"}
#: The HKI editor with the same update rule, per update rule.
HKI_EDITOR: dict[str, str] = {"identity": "rose", "covariance": "rose-no-iga"}
_HKI_EDITORS = ("rose", "rose-no-iga")


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
    """A *measured* success below the threshold (a missing one is not a failure)."""
    s = _num(m, "success_after")
    return s is not None and s < t["FORM_SUCCESS"]


def _succeeds(m, t) -> bool:
    s = _num(m, "success_after")
    return s is not None and s >= t["FORM_SUCCESS"]


def _decl_ok(m, t) -> bool:
    s = _num(m, "decl_success_after")
    return s is not None and s >= t["FORM_SUCCESS"]


def _decl_fails(m, t) -> bool:
    s = _num(m, "decl_success_after")
    return s is not None and s < t["FORM_SUCCESS"]


def _is_false(m, key: str) -> bool:
    """``m[key]`` is measured and false (None: unknown, never read as False)."""
    v = m.get(key)
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and not bool(v)


def _is_true(m, key: str) -> bool:
    """``m[key]`` is measured and true (None / NaN: unknown)."""
    v = m.get(key)
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and bool(v)


def evaluable(m: Mapping[str, Any]) -> bool:
    """Whether the record's success was measured (else it is ``not-evaluable``)."""
    return _num(m, "success_after") is not None


def _is_decl(m) -> bool:
    return m.get("form") == "declarative"


def _gt(m, a: str, b: str) -> bool:
    x, y = _num(m, a), _num(m, b)
    return x is not None and y is not None and x > y


def _floor_sig(x: float, digits: int = 3) -> float:
    """``x`` rounded *down* to ``digits`` significant digits (a proposed λ must not overshoot the share)."""
    if x <= 0 or not math.isfinite(x):
        return x
    e = math.floor(math.log10(x)) - digits + 1
    nudge = 1 + 1e-9  # 45 · 0.1 / 0.9 is 4.999…: keep it 5
    return math.floor(x / 10 ** e * nudge) * 10 ** e if e >= 0 else math.floor(x * 10 ** -e * nudge) / 10 ** -e


def _switch_layers(m: Mapping[str, Any]) -> tuple[int, ...] | None:
    """As many edit layers as the run used, ending at the layer where the subject switch rate peaks (or, when
    that is the run's own window, starting there); None when unmeasured or no different window fits."""
    peak, edit, n_model = m.get("switch_layer"), m.get("edit_layers"), m.get("n_model_layers")
    if peak is None or not edit:
        return None
    n, peak = len(edit), int(peak)
    top = int(n_model) - 1 if n_model else max(peak, max(edit))
    a = max(0, peak - n + 1)
    for lo in (a, peak):
        window = tuple(range(lo, min(lo + n - 1, top) + 1))
        if window and window != tuple(edit):
            return window
    return None


def remedy_values(m: Mapping[str, Any], t: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The concrete values the remedies propose, derived from the record's numbers (None: not measurable).

    * ``lam_share`` — share of R the covariance rule writes along the request's key, ``s/(1+s)`` with
      ``s = kᵀC⁻¹k / λ`` (single-key closed form); ``lam_target`` — the λ that writes ``WRITE_SHARE`` of it,
      ``kᵀC⁻¹k (1 − WRITE_SHARE) / WRITE_SHARE`` (= kᵀC⁻¹k / 9 for 90%), rounded down to 3 digits; None when the
      run's λ already writes that much or the rule is not the covariance rule;
    * ``alpha_share`` / ``alpha_target`` — the same for the isotropic rule with ``s = ‖k‖² / α``;
    * ``value_steps_more`` / ``value_clamp_more`` — ``value_steps × VALUE_STEPS_FACTOR``,
      ``value_clamp × VALUE_CLAMP_FACTOR``;
    * ``switch_layers`` — edit layers around the peak of ``probes.subject_switch_rate`` (:func:`_switch_layers`);
    * ``isotropic_editor`` / ``hki_editor`` — the editor to switch to (:data:`ISOTROPIC_EDITOR`, :data:`HKI_EDITOR`).
    """
    t = {**THRESHOLDS, **(t or {})}
    p = t["WRITE_SHARE"]
    out: dict[str, Any] = {k: None for k in ("lam_share", "lam_target", "alpha_share", "alpha_target",
                                             "value_steps_more", "value_clamp_more", "switch_layers",
                                             "isotropic_editor", "hki_editor")}
    rule, editor = m.get("editor_rule"), m.get("editor")
    kck, lam = _num(m, "kck"), _num(m, "lam")
    if rule == "covariance" and kck is not None and kck > 0 and lam:
        s = kck / lam
        out["lam_share"] = s / (1 + s)
        target = _floor_sig(kck * (1 - p) / p)
        out["lam_target"] = target if target < lam else None
    kn, alpha = _num(m, "key_norm"), _num(m, "alpha")
    if rule == "identity" and kn and alpha:
        s = kn ** 2 / alpha
        out["alpha_share"] = s / (1 + s)
        target = _floor_sig(kn ** 2 * (1 - p) / p)
        out["alpha_target"] = target if target < alpha else None
    steps, clamp = m.get("value_steps"), _num(m, "value_clamp")
    if steps:
        out["value_steps_more"] = int(math.ceil(int(steps) * t["VALUE_STEPS_FACTOR"]))
    if clamp:
        out["value_clamp_more"] = round(clamp * t["VALUE_CLAMP_FACTOR"], 4)
    sl = _switch_layers(m)
    out["switch_layers"] = sl
    out["switch_layers_text"] = (f"{sl[0]}-{sl[-1]}" if len(sl) > 1 else str(sl[0])) if sl else None
    if rule in _COVARIANCE_RULES and editor:
        out["isotropic_editor"] = ISOTROPIC_EDITOR.get(str(editor), "rose")
    if editor and editor not in _HKI_EDITORS:
        out["hki_editor"] = HKI_EDITOR.get(str(rule), "rose")
    return out


@dataclass(frozen=True)
class Fix:
    """A concrete remedy: a sentence naming measured values, and the command-line change that tries it.

    Attributes:
        says: sentence, ``str.format``-ed with the record's numbers and :func:`remedy_values`.
        needs: the values it names; the fix applies only when every one of them is measured (not None).
        editor: name of a :func:`remedy_values` entry to pass as ``--editor``, or "".
        layers: name of a :func:`remedy_values` entry to pass as ``--layers``, or "".
        sets: ``(option, value name)`` pairs passed as ``--set option=<value>``.
        numbers: the record fields it reads (copied into the verdict's ``numbers`` with :attr:`needs`).
    """

    says: str
    needs: tuple[str, ...]
    editor: str = ""
    layers: str = ""
    sets: tuple[tuple[str, str], ...] = ()
    numbers: tuple[str, ...] = ()

    def applies(self, vals: Mapping[str, Any]) -> bool:
        return all(vals.get(k) is not None for k in self.needs)

    def command(self, vals: Mapping[str, Any], run: Run) -> str | None:
        if not (self.editor or self.layers or self.sets):
            return None
        return run.command(editor=vals[self.editor] if self.editor else None,
                           layers=vals[self.layers] if self.layers else None,
                           **{opt: vals[name] for opt, name in self.sets})


@dataclass(frozen=True)
class Rule:
    """One verdict rule.

    Attributes:
        id: stable rule id (listed in the verdict record).
        when: the condition, in words (rendered in the docs and the report's rule table).
        fires: predicate on (measurement record, thresholds).
        says: sentence fragment, ``str.format``-ed with the record's numbers (and ``ratio``, ``n``).
        remedy: what to try, in general ("" when the rule names no remedy); listed when no :attr:`fixes` applies.
        numbers: the record fields the rule reads (copied into the verdict's ``numbers``).
        fixes: concrete remedies with their command lines (:class:`Fix`), each used when its values are measured.
    """

    id: str
    when: str
    fires: Callable[[Mapping[str, Any], Mapping[str, float]], bool]
    says: str
    remedy: str
    numbers: tuple[str, ...]
    fixes: tuple[Fix, ...] = ()


_SWITCH_FIX = Fix("edit layers {switch_layers_text} (the subject switch rate peaks at layer {switch_layer}: "
                  "{switch_rate:.0%} of swapped subjects switch the answer; the run edited {edit_layers_text})",
                  ("switch_layers", "switch_layer"), layers="switch_layers",
                  numbers=("switch_rate", "edit_layers", "n_model_layers"))

RULES: tuple[Rule, ...] = (
    Rule("ok", "success_after >= FORM_SUCCESS",
         lambda m, t: _succeeds(m, t),
         "succeeds on the {form} form ({wins_text})", "",
         ("success_after",)),
    Rule("already-true", "ok and success_before >= FORM_SUCCESS",
         lambda m, t: _succeeds(m, t) and (_num(m, "success_before") or 0.0) >= t["FORM_SUCCESS"],
         "the target already won there before the edit ({success_before:.0%})", "", ("success_before",)),
    Rule("value-not-reached", "declarative form fails and the optimised value does not predict the target",
         lambda m, t: _fails(m, t) and _is_decl(m) and _is_false(m, "value_predicts"),
         "the edit did not take: the optimised value itself does not predict the target (ρ = 0)",
         "optimise the value longer or with a larger clamp (value_steps, value_clamp), or edit other layers",
         ("value_predicts", "rho"),
         (Fix("optimise the value longer and with a larger clamp: value_steps {value_steps} → {value_steps_more} "
              "(ran {value_steps_run} steps), value_clamp {value_clamp} → {value_clamp_more} "
              "(‖δ‖/‖h‖ = {value_norm_rel:.2f})", ("value_steps_more", "value_clamp_more"),
              sets=(("value_steps", "value_steps_more"), ("value_clamp", "value_clamp_more")),
              numbers=("value_steps", "value_steps_run", "value_clamp", "value_norm_rel")),
          _SWITCH_FIX)),
    Rule("not-written", "declarative form fails although the optimised value predicts the target",
         lambda m, t: _fails(m, t) and _is_decl(m) and _is_true(m, "value_predicts"),
         "the edit did not take: the value predicts the target (ρ = {rho:.3g}) but the update did not write it",
         "lower λ (covariance rules) or α, or spread the edit over more layers", ("value_predicts", "rho"),
         (Fix("lower λ: λ = {lam:g} writes {lam_share:.0%} of R along this key (kᵀC⁻¹k = {kck:.4g}); "
              "λ = {lam_target:.3g} writes {WRITE_SHARE:.0%}", ("lam_target",), sets=(("lam", "lam_target"),),
              numbers=("lam", "kck", "lam_share")),
          Fix("lower α: α = {alpha:g} writes {alpha_share:.0%} of R along this key (‖k‖² = {key_norm_sq:.3g}); "
              "α = {alpha_target:.3g} writes {WRITE_SHARE:.0%}", ("alpha_target",),
              sets=(("alpha", "alpha_target"),), numbers=("alpha", "key_norm", "alpha_share")))),
    Rule("decl-failed", "a question/instruction form fails and the declarative form fails too",
         lambda m, t: _fails(m, t) and not _is_decl(m) and _decl_fails(m, t),
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
                                                                  "delta_identity"),
         (Fix("use the isotropic update (IGA): {isotropic_editor} would give Δ = {delta_identity:.3g} instead of "
              "{delta_covariance:.3g}", ("isotropic_editor",), editor="isotropic_editor"),)),
    Rule("conflict-collapses-rho", "form fails, conflict > CONFLICT, rho_rel < RHO_REL_SMALL, >= 2 relations",
         lambda m, t: (_fails(m, t) and (m.get("n_relations") or 0) >= 2
                       and (_num(m, "conflict") or 0.0) > t["CONFLICT"]
                       and (_num(m, "rho_rel") if _num(m, "rho_rel") is not None else 1.0) < t["RHO_REL_SMALL"]),
         "the subject's {n_relations} relations are near-orthogonal (conflict {conflict:.2f}), which collapsed ρ "
         "(ρ/‖h‖ = {rho_rel:.2g})",
         "optimise the subject's value with HKI (rose, rose-no-iga)", ("conflict", "n_relations", "rho_rel"),
         (Fix("optimise the subject's value with HKI: {hki_editor} (conflict {conflict:.2f} between its "
              "{n_relations} relations)", ("hki_editor",), editor="hki_editor"),)),
    Rule("not-the-drift", "form fails, declarative succeeds, delta <= rho",
         lambda m, t: (_fails(m, t) and not _is_decl(m) and _decl_ok(m, t) and _num(m, "delta") is not None
                       and _num(m, "rho") is not None and not _gt(m, "delta", "rho")),
         "Δ = {delta:.3g} stays within ρ = {rho:.3g}, so the failure is not the drift (key cosine to the "
         "declarative key {key_cosine:.2f})",
         "edit a different layer (see probes.subject_switch_rate for where the form reads the subject)",
         ("delta", "rho", "key_cosine"), (_SWITCH_FIX,)),
    Rule("near-duplicate", "form fails and collision_cosine > COLLISION",
         lambda m, t: _fails(m, t) and (_num(m, "collision_cosine") or 0.0) > t["COLLISION"],
         "a near-duplicate subject collides ({collision_subject!s}, key cosine {collision_cosine:.2f})",
         "edit the colliding subjects in separate batches, or disambiguate them in the prompt",
         ("collision_subject", "collision_cosine"),
         (Fix("edit {subject} and {collision_subject} in separate batches (key cosine {collision_cosine:.2f}), or "
              "disambiguate them in the prompt", ("collision_subject",)),)),
)

RULE_IDS: tuple[str, ...] = tuple(r.id for r in RULES) + ("unexplained", NOT_EVALUABLE)
_BY_ID = {r.id: r for r in RULES}


def _mapping(measurement: Measurement | Mapping[str, Any]) -> Mapping[str, Any]:
    return measurement.to_dict() if isinstance(measurement, Measurement) else measurement


def _fmt_values(m: Mapping[str, Any], extra: Mapping[str, Any] = ()) -> _Fmt:
    vals = _Fmt()
    for k, v in {**m, **dict(extra)}.items():
        vals[k] = _NA() if v is None or (isinstance(v, float) and math.isnan(v)) else v
    d, r = _num(m, "delta"), _num(m, "rho")
    vals["ratio"] = d / r if d is not None and r else (math.inf if d else _NA())
    vals["ratio_text"] = (f"{d / r:.1f}×" if d is not None and r else
                          "ρ collapsed to 0: any drift leaves the target's region" if d else "n/a")
    kn = _num(m, "key_norm")
    vals["key_norm_sq"] = kn ** 2 if kn is not None else _NA()
    el = m.get("edit_layers")
    vals["edit_layers_text"] = (f"{el[0]}-{el[-1]}" if len(el) > 1 else str(el[0])) if el else _NA()
    vals["wins_text"] = wins_text(m)
    return vals


def wins_text(m: Mapping[str, Any], key: str = "success_after") -> str:
    """``target wins on 100% of its prompts``, worded by the record's criterion (:data:`CRITERIA`)."""
    s = _num(m, key)
    share = "n/a" if s is None else f"{s:.0%}"
    crit, true = m.get("criterion"), m.get("true_target")
    if crit == "beats-greedy":
        answer = f" {true!r}" if true else ""
        return f"target beats the unedited model's own answer{answer} on {share} of its prompts; no target_true"
    if crit == "prob>0.5":
        return f"P(target) > 0.5 on {share} of its prompts; no target_true to compare with"
    return f"target wins on {share} of its prompts"


def not_evaluated_reason(m: Mapping[str, Any]) -> str:
    """Why a record is ``not-evaluable`` (its ``not_evaluated`` text, else the missing measurement)."""
    return str(m.get("not_evaluated") or "its success was not measured (success_after is missing)")


def fired(measurement: Measurement | Mapping[str, Any], thresholds: Mapping[str, float] | None = None) -> list[str]:
    """Ids of the rules that fire on ``measurement``, in :data:`RULES` order (``["unexplained"]`` when a
    failing record matches no causal rule)."""
    m = _mapping(measurement)
    t = {**THRESHOLDS, **(thresholds or {})}
    if not evaluable(m):
        return [NOT_EVALUABLE]
    ids = [r.id for r in RULES if r.fires(m, t)]
    if not ids:
        ids = ["unexplained"]
    return ids


def judge(measurement: Measurement | Mapping[str, Any], thresholds: Mapping[str, float] | None = None,
          run: Run | None = None) -> Verdict:
    """The verdict on one measurement record (a :class:`Measurement` or its JSON dict).

    ``verdict`` is ``"succeeds on the <form> form (<wins>)[; <fragments>]"`` or ``"fails on the <form> form:
    <fragments of the fired rules joined by '; '>"`` (the criterion in parentheses after the form when it is not
    the request's target_true), or ``"not evaluated on the <form> form: <reason>"`` for a record whose success
    was not measured (status ``not-evaluable``; ``ok`` is False but nothing counts it as a failure).
    ``remedies`` name the values measured for this case (:class:`Fix`, falling back to the rule's general
    remedy); with ``run`` (the :class:`~geomprobe.report.records.Run` that produced the record),
    ``remedy_commands`` holds the ``geomprobe diagnose`` command line of each remedy that has one, the run's own
    options with the remedy's change.  A pure function of its arguments.
    """
    m = _mapping(measurement)
    t = {**THRESHOLDS, **(thresholds or {})}
    ids = fired(m, t)
    label = m.get("label") or (f"{m.get('subject')} · {m.get('relation')}" if m.get("subject") is not None else None)
    if ids == [NOT_EVALUABLE]:
        form = m.get("form") or "?"
        return Verdict(editor=m.get("editor"), case_id=m.get("case_id"), label=label, subject=m.get("subject"),
                       relation=m.get("relation"), form=form, ok=False, rules=(NOT_EVALUABLE,),
                       verdict=f"not evaluated on the {form} form: {not_evaluated_reason(m)}", remedies=(),
                       remedy_commands=(), numbers={"success_after": None, "n_prompts": m.get("n_prompts")},
                       thresholds=dict(t), status=NOT_EVALUABLE, criterion=m.get("criterion"))
    ok = "ok" in ids
    rv = remedy_values(m, t)
    vals = _fmt_values(m, {**rv, **t})
    known = {**m, **rv}
    form = m.get("form") or "?"
    parts, remedies, commands, numbers = [], [], [], {}
    for rid in ids:
        if rid == "unexplained":
            parts.append("no rule explains the failure from these measurements")
            continue
        rule = _BY_ID[rid]
        if rid == "ok":
            continue
        parts.append(rule.says.format_map(vals))
        for k in rule.numbers:
            numbers[k] = m.get(k)
        fixes = [f for f in rule.fixes if f.applies(known)]
        if not fixes and rule.remedy and rule.remedy not in remedies:
            remedies.append(rule.remedy)
        for f in fixes:
            text = f.says.format_map(vals)
            if text not in remedies:
                remedies.append(text)
            for k in (*f.needs, *f.numbers):
                numbers[k] = known.get(k)
            cmd = f.command(rv, run) if run is not None else None
            if cmd and cmd not in commands:
                commands.append(cmd)
    for k in _BY_ID["ok"].numbers:
        numbers[k] = m.get(k)
    numbers = {k: (list(v) if isinstance(v, tuple) else v) for k, v in numbers.items()}
    if ok:
        head = _BY_ID["ok"].says.format_map(vals)
        sentence = head + ("; " + "; ".join(parts) if parts else "")
    else:
        crit = "" if m.get("criterion") in (None, "beats-true") else f" ({wins_text(m)})"
        sentence = f"fails on the {form} form{crit}: " + "; ".join(parts)
    for k in ("criterion", "true_target"):
        if m.get(k) is not None:
            numbers[k] = m.get(k)
    from .cause import explain

    why = explain(m)
    return Verdict(editor=m.get("editor"), case_id=m.get("case_id"), label=label, subject=m.get("subject"),
                   relation=m.get("relation"), form=form, ok=ok, rules=tuple(ids), verdict=sentence,
                   remedies=tuple(remedies), remedy_commands=tuple(commands), numbers=numbers, thresholds=dict(t),
                   status="ok" if ok else "fails", criterion=m.get("criterion"), **why)


def judge_all(measurements, thresholds: Mapping[str, float] | None = None, run: Run | None = None) -> list[Verdict]:
    return [judge(m, thresholds, run) for m in measurements]


def rules_table() -> list[dict[str, str]]:
    """The rules as rows ``id, when, says, remedy`` (for the reports and the docs)."""
    return [{"id": r.id, "when": r.when, "says": r.says, "remedy": r.remedy} for r in RULES]


__all__ = ["AMPLIFICATION", "COLLISION", "CONFLICT", "CRITERIA", "FORM_SUCCESS", "NOT_EVALUABLE", "evaluable",
           "not_evaluated_reason", "wins_text", "Fix", "HKI_EDITOR", "ISOTROPIC_EDITOR",
           "MEASUREMENT_FIELDS", "Measurement", "RHO_REL_SMALL", "RULES", "RULE_IDS", "Rule", "Run", "THRESHOLDS",
           "VALUE_CLAMP_FACTOR", "VALUE_STEPS_FACTOR", "VERDICT_FIELDS", "Verdict", "WRITE_SHARE", "fired", "judge",
           "judge_all", "remedy_values", "rules_table"]
