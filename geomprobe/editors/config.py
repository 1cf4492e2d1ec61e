"""Editor settings as data: :class:`ValueConfig`, :class:`EditorConfig` and the names of the value
optimisation modes and update rules.

This module imports nothing else from :mod:`geomprobe.editors`, so the presets, the value optimisation,
the update rules and the editors all build on it without importing one another in a circle.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, get_args

from ..errors import GeomprobeError

#: How prompts and requests share a δ in value optimisation (see :mod:`geomprobe.editors.value`).
Mode = Literal["per-request", "joint", "hki"]
#: How ΔW is solved from keys and residuals at each layer (see :mod:`geomprobe.editors.rules`).
Rule = Literal["covariance", "identity", "projection", "rank-one"]

MODES: tuple[Mode, ...] = get_args(Mode)
RULES: tuple[Rule, ...] = get_args(Rule)

#: Allowed values of the string-valued value settings.
VALUE_CHOICES: dict[str, tuple[str, ...]] = {"contexts": ("memit", "rome", "none"), "norm": ("resid", "mlp"),
                                             "hki_frame": ("eval", "held-out")}
#: ROME's own value settings (``compute_v``; ROME's GPT-2 XL / GPT-J hparams), applied to the ``rome`` editor.
ROME_VALUE: dict[str, Any] = {"steps": 20, "clamp": 4.0, "contexts": "rome", "norm": "mlp"}


@dataclass(frozen=True)
class ValueConfig:
    """Hyperparameters of value optimisation (MEMIT's ``compute_z`` defaults unless noted).

    Attributes:
        lr: Adam learning rate (MEMIT's ``v_lr`` 0.5), on ``u`` with ``δ = u · rms(h) / ref_rms``.
        steps: optimisation iterations, MEMIT's ``v_num_grad_steps``: the last one only measures the loss, so
            ``steps − 1`` updates are applied (25 for MEMIT on GPT-J, 35 in the RoSE paper, 20 for ROME).
        kl: weight of KL(P_new ‖ P_old) at the subject's last token of ``"{subject} is a"``.
        wd: weight decay on ``‖δ‖ / ‖n‖²`` (``n`` the reference vector chosen by ``norm``).
        clamp: ``‖δ‖ ≤ clamp·‖n‖`` after each step (MEMIT 0.75, ROME 4).
        contexts: context prefixes of the edit prompt (:mod:`geomprobe.editors.contexts`): ``memit`` (the bare
            prompt and 5 model-written prefixes of 10 tokens), ``rome`` (10 of 5 tokens, 10 of 10) or ``none``
            (the bare prompt only).  The NLL averages over all of them (MEMIT's ``compute_z``); keys weigh the
            bare prompt ½ and the prefixed copies ½ (``compute_ks``); ``h`` is the bare prompt's residual.
        norm: what ``‖n‖`` in ``wd`` and ``clamp`` is: ``resid`` (the residual ``h`` at L, MEMIT's
            ``target_init``) or ``mlp`` (the MLP output ``v`` at L, ROME's ``compute_v``).
        ref_rms: the step's scale reference: Adam on ``u`` with ``δ = u · rms(h) / ref_rms`` takes MEMIT's
            step (``lr`` per coordinate of ``δ``) on a model whose subject residual has RMS ``ref_rms``, and
            the same step *relative to ‖h‖* on any other.  0.7 is GPT-J's scale at MEMIT's layer 8 (‖h‖ ≈ 45,
            d = 4096; an estimate — GPT-J cannot be run offline here): Adam's first step then moves ``δ`` by
            ≈ lr·‖h‖/0.7 ≈ 0.71‖h‖, about the clamp radius, as MEMIT's ``0.5·√4096 = 32`` vs ``0.75·45`` does
            on GPT-J.  ``0`` runs Adam on ``δ`` itself (the reference's parametrisation, no scaling).
        early_stop: stop when every prompt's NLL is below this value (MEMIT stops when its total loss, NLL
            + KL + weight decay, is below 5e-2; per-prompt NLL keeps every prompt, not their mean, on target).
        hki_templates: M, leaves per relation for HKI: the edit prompt and the relation's first M − 1
            training templates (the RoSE paper: 8).
        hki_frame: ``eval`` (instruction/question leaves share the evaluation's system frame; only the
            wording is held out) or ``held-out`` (a frame evaluation never shows).
        weiszfeld_iters: iterations of the geometric-median estimate.
        record_every: record per-relation gradients every this many steps (step 0 always).
        micro_batch: prompt rows per forward/backward (rows are independent, so this bounds memory only).
        prefix_cache: re-run only the subject's last token on (blocks L+1..) at each step, the prefix's
            keys/values cached once (:mod:`geomprobe.prefix`); equal to the full forward up to float rounding.
            ``False`` re-runs blocks L+1.. on every column (``geomprobe bench`` compares the two).
    """

    lr: float = 0.5
    steps: int = 25
    kl: float = 0.0625
    wd: float = 0.5
    clamp: float = 0.75
    contexts: str = "memit"
    norm: str = "resid"
    ref_rms: float = 0.7
    early_stop: float = 0.05
    hki_templates: int = 8
    hki_frame: str = "eval"
    weiszfeld_iters: int = 10
    record_every: int = 5
    micro_batch: int = 32
    prefix_cache: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.ref_rms < 0 or self.hki_templates < 1:
            raise GeomprobeError(f"bad value optimisation settings (steps {self.steps}, lr {self.lr}, ref_rms "
                                 f"{self.ref_rms}, hki_templates {self.hki_templates}); fix the editor config")
        for name, allowed in VALUE_CHOICES.items():
            if getattr(self, name) not in allowed:
                raise GeomprobeError(f"value_{name} is {getattr(self, name)!r}; use one of {', '.join(allowed)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ValueConfig":
        """Rebuild from :func:`dataclasses.asdict` output; unknown keys are an error."""
        return cls(**_known(cls, d, "value settings"))


@dataclass(frozen=True)
class EditorConfig:
    """Everything an editor needs besides the model and the requests.

    Attributes:
        layers: edit layers (the last one is where ``z`` is optimised).
        lam: λ, weight of the covariance in ``λC + KKᵀ`` (MEMIT's mom2_update_weight).
        alpha: α, Tikhonov weight of the isotropic system ``R Kᵀ (αI + KKᵀ)⁻¹`` (RoSE's IGA; see the preset
            notes for how it was chosen).
        l2: AlphaEdit's Tikhonov weight (the reference's ``L2``, default 10).
        value: value optimisation settings.
        corpus / n_tokens / max_len: covariance statistics (see :mod:`geomprobe.stats`).
        projection_threshold / projection_mode: AlphaEdit null-space selection.
        tau: REVIVE energy share of the dominant subspace (used by ``revive(...)``).
        revive_mode: ``two-sided`` (default, REVIVE's protection of the dominant subspace:
            ``(I − U_kU_kᵀ) ΔW (I − V_kV_kᵀ)``) or ``block`` (only the ``U_kᵀ ΔW V_k`` block removed).
        seed: randomness of value optimisation.
    """

    layers: tuple[int, ...]
    lam: float = 1.5e4
    alpha: float = 1.0
    l2: float = 10.0
    value: ValueConfig = ValueConfig()
    corpus: str = "builtin"
    n_tokens: int = 100_000
    max_len: int = 128
    projection_threshold: float = 2e-2
    projection_mode: str = "absolute"
    tau: float = 0.9
    revive_mode: str = "two-sided"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(l) for l in self.layers))
        if not self.layers or list(self.layers) != sorted(set(self.layers)):
            raise GeomprobeError(f"edit layers {self.layers} must be distinct and increasing; fix the preset or --layers")
        if self.revive_mode not in ("two-sided", "block"):
            raise GeomprobeError(f"revive_mode is {self.revive_mode!r}; use two-sided or block")

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """Names ``with_`` accepts: the fields, and the value fields prefixed ``value_``."""
        own = tuple(f.name for f in fields(cls) if f.name != "value")
        return own + tuple(f"value_{f.name}" for f in fields(ValueConfig))

    def with_(self, **changes: Any) -> "EditorConfig":
        """A copy with ``changes``: fields by name, value fields prefixed ``value_`` (``value_steps=``...)."""
        unknown = sorted(set(changes) - set(self.option_names()))
        if unknown:
            raise GeomprobeError(f"unknown editor option(s) {', '.join(unknown)}; use fields of EditorConfig or "
                                 "ValueConfig (the latter prefixed value_)")
        value_changes = {k[6:]: changes.pop(k) for k in list(changes) if k.startswith("value_")}
        cfg = replace(self, **changes)
        return replace(cfg, value=replace(cfg.value, **value_changes)) if value_changes else cfg

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EditorConfig":
        """Rebuild from :meth:`as_dict` output (the nested ``value`` dict included); unknown keys are an error.
        Missing fields take their defaults."""
        kw = _known(cls, d, "editor settings")
        if isinstance(kw.get("value"), dict):
            kw["value"] = ValueConfig.from_dict(kw["value"])
        return cls(**kw)


def _known(cls: type, d: dict[str, Any], what: str) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise GeomprobeError(f"unknown {what} {', '.join(map(repr, unknown))}; use fields of {cls.__name__}")
    return dict(d)


#: Built-in editors: name -> (value optimisation mode, update rule).
EDITORS: dict[str, tuple[Mode, Rule]] = {
    "rome": ("per-request", "rank-one"),
    "memit": ("per-request", "covariance"),
    "memit-merge": ("joint", "covariance"),
    "alphaedit": ("per-request", "projection"),
    "rose": ("hki", "identity"),
    "rose-no-iga": ("hki", "covariance"),
    "rose-no-hki": ("joint", "identity"),
}

_REVIVE = re.compile(r"^revive\(\s*([\w-]+)\s*(?:,\s*tau\s*=\s*([0-9.eE+-]+)\s*)?\)$")


def parse_editor_name(name: str) -> tuple[str, bool, float | None]:
    """``"memit"`` -> ``("memit", False, None)``; ``"revive(rose, tau=0.8)"`` -> ``("rose", True, 0.8)``.

    Raises:
        GeomprobeError: not a built-in editor (nor revive of one).
    """
    m = _REVIVE.match(name.strip())
    base, revive, tau = (m.group(1), True, float(m.group(2)) if m.group(2) else None) if m else (name.strip(), False, None)
    if base not in EDITORS:
        raise GeomprobeError(f"unknown editor {name!r}; use one of {', '.join(EDITORS)} or revive(<editor>)")
    return base, revive, tau
