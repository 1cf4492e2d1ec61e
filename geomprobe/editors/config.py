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

#: Neutral context prefixes (MEMIT averages over context-prefixed copies of each prompt).
CONTEXTS: tuple[str, ...] = ("{}", "Here is a fact. {}", "I read this somewhere: {}", "Note that {}",
                             "As everyone knows, {}", "Answer: {}")


@dataclass(frozen=True)
class ValueConfig:
    """Hyperparameters of value optimisation (MEMIT reference defaults unless noted).

    Attributes:
        lr: Adam learning rate on ``u`` (δ = u·‖h‖/√d).
        steps: maximum optimisation steps.
        kl: weight of the KL term on ``"{subject} is a"``.
        wd: weight decay on ``‖δ‖/‖h‖²``.
        clamp: ``‖δ‖ ≤ clamp·‖h‖``.
        n_contexts: how many of :data:`CONTEXTS` prefix each prompt (1 = the bare prompt).
        early_stop: stop when every NLL term is below this value.
        hki_templates: M, templates per relation for HKI leaves.
        weiszfeld_iters: iterations of the geometric-median estimate.
        record_every: record per-relation gradients every this many steps (step 0 always).
        micro_batch: prompt rows per forward/backward (rows are independent, so this bounds memory only).
    """

    lr: float = 0.5
    steps: int = 25
    kl: float = 0.0625
    wd: float = 0.5
    clamp: float = 0.75
    n_contexts: int = 3
    early_stop: float = 0.05
    hki_templates: int = 8
    weiszfeld_iters: int = 10
    record_every: int = 5
    micro_batch: int = 32

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or not 1 <= self.n_contexts <= len(CONTEXTS):
            raise GeomprobeError(f"bad value optimisation settings (steps {self.steps}, lr {self.lr}, "
                                 f"n_contexts {self.n_contexts} of 1..{len(CONTEXTS)}); fix the editor config")

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
        alpha: α, Tikhonov weight of the isotropic and AlphaEdit systems.
        value: value optimisation settings.
        corpus / n_tokens / max_len: covariance statistics (see :mod:`geomprobe.stats`).
        projection_threshold / projection_mode: AlphaEdit null-space selection.
        tau: REVIVE energy share of the dominant subspace (used by ``revive(...)``).
        seed: randomness of value optimisation.
    """

    layers: tuple[int, ...]
    lam: float = 1.5e4
    alpha: float = 1.0
    value: ValueConfig = ValueConfig()
    corpus: str = "builtin"
    n_tokens: int = 100_000
    max_len: int = 128
    projection_threshold: float = 2e-2
    projection_mode: str = "absolute"
    tau: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(l) for l in self.layers))
        if not self.layers or list(self.layers) != sorted(set(self.layers)):
            raise GeomprobeError(f"edit layers {self.layers} must be distinct and increasing; fix the preset or --layers")

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
