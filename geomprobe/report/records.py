"""Typed records of the reports: :class:`Measurement` (numbers), :class:`Verdict` (what the rules say about them)
and :class:`Run` (what reproduces the run on the command line).

All three are frozen dataclasses.  ``to_dict()`` gives the JSON form written to ``report.json`` (field order as
declared; tuples as lists) and ``from_dict()`` reads it back (unknown keys ignored, missing ones None), so a
report loaded from disk can be judged again: ``judge(Measurement.from_dict(d), run=Run.from_report(report))``.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field, fields
from typing import Any, Mapping


def _listify(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_listify(x) for x in v]
    if isinstance(v, dict):
        return {k: _listify(x) for k, x in v.items()}
    return v


class Record:
    """``to_dict`` / ``from_dict`` and mapping-style reads (``record["field"]``, ``record.get``) shared by the
    records."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _listify(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        if isinstance(d, cls):
            return d
        if isinstance(d, Record):
            d = d.to_dict()
        kw = {}
        for f in fields(cls):
            if f.name in d:
                v = d[f.name]
                kw[f.name] = tuple(v) if isinstance(v, list) else v
        return cls(**kw)

    def get(self, key: str, default: Any = None) -> Any:
        """Mapping-style read of a field (``default`` for an unknown name)."""
        return getattr(self, key, default) if key in self._names() else default

    def __getitem__(self, key: str) -> Any:
        """``record["field"]`` reads a field, as on the JSON dict (scripts written for either keep working)."""
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    @classmethod
    def _names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))


@dataclass(frozen=True)
class Measurement(Record):
    """One request on one linguistic form: every number the verdict rules read (meanings in
    :mod:`geomprobe.report.verdict`; None where a number is not measurable).

    ``criterion`` says how ``success_*`` were decided (:data:`geomprobe.evaluate.CRITERIA`: ``beats-true``,
    ``beats-greedy`` — against ``true_target``, the unedited model's own greedy answer, for a request without a
    ``target_true`` — or ``prob>0.5``); ``not_evaluated`` holds the reason when the form could not be evaluated
    (e.g. no question prompts for the relation); its success fields are then None."""

    editor: str | None = None
    editor_rule: str | None = None
    case_id: str | None = None
    label: str | None = None
    subject: str | None = None
    relation: str | None = None
    form: str | None = None
    layer: int | None = None
    n_prompts: int | None = None
    # how success is decided (prob protocol): beats-true | beats-greedy | prob>0.5 (geomprobe.evaluate.CRITERIA)
    criterion: str | None = None
    true_target: str | None = None
    not_evaluated: str | None = None
    success_before: float | None = None
    success_after: float | None = None
    decl_success_after: float | None = None
    target_prob_before: float | None = None
    target_prob_after: float | None = None
    token_acc_before: float | None = None
    token_acc_after: float | None = None
    rho: float | None = None
    rho_rel: float | None = None
    h_norm: float | None = None
    value_predicts: bool | None = None
    delta: float | None = None
    delta_covariance: float | None = None
    delta_identity: float | None = None
    amplification: float | None = None
    dk_norm: float | None = None
    key_cosine: float | None = None
    conflict: float | None = None
    n_relations: int | None = None
    collision_subject: str | None = None
    collision_cosine: float | None = None
    # the causal chain, from interventions (geomprobe.report.cause; means over the form's prompts at layer L)
    written_share: float | None = None           # ⟨v, δ⟩/‖δ‖², v = the edited model's change at (L, subject)
    drift_norm: float | None = None              # ‖v_form − v_decl‖: the edited model's own drift between forms
    cumulative_drift: float | None = None        # ‖Σ_l ΔW_l Δk_l‖ with edited-model keys (the paper's Δ is `delta`)
    patched_success: float | None = None         # h_form + δ patched into the unedited model: target wins
    edited_patched_success: float | None = None  # the same patch into the edited model
    crossing_scale: float | None = None          # smallest s with h_form + s·δ winning (None: none on the grid)
    rho_form: float | None = None                # ρ on the form's own prompts (median)
    rho_along_delta: float | None = None         # largest step along −δ̂ that keeps the target (median)
    rho_along_drift: float | None = None         # largest step from δ along the edited model's miss v − δ (median)
    miss_norm: float | None = None               # ‖v − δ‖: how far the edited model's change is from δ (median)
    # what the remedies name (see verdict.remedy_values)
    edit_layers: tuple[int, ...] | None = None
    n_model_layers: int | None = None
    lam: float | None = None
    alpha: float | None = None
    kck: float | None = None
    key_norm: float | None = None
    value_steps: int | None = None
    value_steps_run: int | None = None
    value_clamp: float | None = None
    value_norm_rel: float | None = None
    switch_layer: int | None = None
    switch_rate: float | None = None


@dataclass(frozen=True)
class Verdict(Record):
    """The verdict on one :class:`Measurement` (built by :func:`geomprobe.report.verdict.judge`)."""

    editor: str | None
    case_id: str | None
    label: str | None
    subject: str | None
    relation: str | None
    form: str | None
    ok: bool
    rules: tuple[str, ...]
    verdict: str
    remedies: tuple[str, ...]
    remedy_commands: tuple[str, ...]
    numbers: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    #: ``ok``, ``fails`` or ``not-evaluable`` (success unknown: the form has no prompts, or no success measure)
    status: str = ""
    #: the success criterion the record was decided by (see :class:`Measurement`)
    criterion: str | None = None
    #: the cause the interventions show (:mod:`geomprobe.report.cause`; None when the form does not fail), what it
    #: says with its numbers, the intervention that confirms it, its remedy and the numbers it read
    cause: str | None = None
    cause_text: str = ""
    confirmed_by: str = ""
    cause_remedy: str = ""
    cause_numbers: dict[str, Any] = field(default_factory=dict)
    cause_confirmed: bool | None = None  # the cause's defining intervention was measured (cause.confirmed)

    def __post_init__(self) -> None:
        if not self.status:
            object.__setattr__(self, "status", "ok" if self.ok else "fails")


class Fmt(dict):
    """Format mapping for verdict and cause sentences: None / missing numbers print as 'n/a' under any spec."""

    def __missing__(self, key):
        return NA()


class NA:
    def __format__(self, spec):
        return "n/a"

    def __str__(self):
        return "n/a"


def request_label(subject: Any, relation: Any) -> str:
    """How a person reads a request: ``"Canada · capital"``."""
    return f"{subject} · {relation}"


def _set_text(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return ",".join(_set_text(x) for x in v)
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    return str(v)


def layers_text(layers: Any) -> str:
    """``--layers`` text: ``a-b`` for a contiguous run, else ``a,b,c``."""
    ls = [int(x) for x in (layers if isinstance(layers, (list, tuple)) else [layers])]
    if len(ls) > 1 and ls == list(range(ls[0], ls[-1] + 1)):
        return f"{ls[0]}-{ls[-1]}"
    return ",".join(str(x) for x in ls)


@dataclass(frozen=True)
class Run(Record):
    """What reproduces a ``geomprobe diagnose`` run on the command line.

    Attributes:
        model: model name as given (or the loaded model's name).
        requests: the request file or built-in set name as given (a list of requests is written to
            ``<out>/requests.json`` and that path is used).
        editor: editor name.
        overrides: the run's ``--set`` options and ``layers`` (``--layers``), as passed to the editor.
        trials / device / dtype: the other options (printed when not the default).
    """

    model: str
    requests: str
    editor: str
    overrides: dict[str, Any] = field(default_factory=dict)
    trials: int = 10
    device: str | None = None
    dtype: str | None = None

    def command(self, editor: str | None = None, layers: Any = None, **sets: Any) -> str:
        """``geomprobe diagnose ...`` reproducing the run, with ``editor`` / ``layers`` / ``--set`` changes."""
        over = dict(self.overrides)
        if layers is not None:
            over["layers"] = layers
        over.update(sets)
        argv = ["geomprobe", "diagnose", "--model", str(self.model), "--requests", str(self.requests),
                "--editor", editor or self.editor]
        if over.get("layers") is not None:
            argv += ["--layers", layers_text(over["layers"])]
        for k, v in over.items():
            if k != "layers":
                argv += ["--set", f"{k}={_set_text(v)}"]
        if self.trials != 10:
            argv += ["--trials", str(self.trials)]
        for opt, v in (("--device", self.device), ("--dtype", self.dtype)):
            if v:
                argv += [opt, str(v)]
        return shlex.join(argv)

    @classmethod
    def from_report(cls, report: Mapping[str, Any], editor: str | None = None) -> "Run":
        """The run of a diagnose / compare report (``report["run"]``), for ``editor`` when given."""
        r = report["run"]
        run = r if isinstance(r, Run) else cls.from_dict(r)
        return run if editor is None else cls(**{**run.__dict__, "editor": editor})


__all__ = ["Measurement", "Record", "Run", "Verdict", "layers_text", "request_label"]
