"""Built-in editors: ``gp.editors.get(name)`` returns an editor whose ``compute(lm, requests)`` gives an
:class:`EditUpdate` that can be applied and reverted bit-exactly.

Names: ``rome``, ``memit``, ``memit-merge``, ``alphaedit``, ``rose``, ``rose-no-iga``, ``rose-no-hki``, and
``revive(<name>)`` / ``revive(<name>, tau=0.8)`` wrapping any of them.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from ..errors import GeomprobeError
from .config import MODES, RULES, EditorConfig, Mode, Rule, ValueConfig
from .locate import Editor
from .presets import PRESETS, preset_for
from .rules import UPDATE_RULES
from .update import AppliedEdit, EditUpdate
from .value import ValueResult, optimize_values

#: name -> (value optimisation mode, update rule)
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


def get(name: str, config: EditorConfig | None = None, **overrides: Any) -> Editor:
    """An editor by name.

    Args:
        name: one of :data:`EDITORS`, or ``revive(<name>[, tau=...])``.
        config: full configuration; default: the model's preset, resolved at ``compute`` time.
        overrides: fields of :class:`EditorConfig` (``layers=``, ``lam=``...) or of its value config
            prefixed ``value_`` (``value_steps=``...), applied on top of the preset.
    """
    m = _REVIVE.match(name.strip())
    if m:
        inner = get(m.group(1), config, **overrides)
        tau = float(m.group(2)) if m.group(2) else None
        return revive(inner, tau)
    if name not in EDITORS:
        raise GeomprobeError(f"unknown editor {name!r}; use one of {', '.join(EDITORS)} or revive(<editor>)")
    mode, rule = EDITORS[name]
    unknown = sorted(set(overrides) - set(EditorConfig.option_names()))
    if unknown:  # fail here, not at compute time
        raise GeomprobeError(f"unknown editor option(s) {', '.join(unknown)}; use fields of EditorConfig or "
                             "ValueConfig (the latter prefixed value_)")
    return Editor(name=name, mode=mode, rule=rule, config=config, overrides=dict(overrides))


def revive(editor: Editor, tau: float | None = None) -> Editor:
    """Wrap ``editor``: each layer's ΔW loses its component in the dominant singular block of the
    pre-edit weight (energy share ``tau``, default the config's ``tau`` = 0.9)."""
    overrides = dict(editor.overrides, **({"tau": tau} if tau is not None else {}))
    return replace(editor, name=f"revive({editor.name})", revive=True, overrides=overrides)


def names() -> list[str]:
    return list(EDITORS)


__all__ = ["EDITORS", "Editor", "EditorConfig", "EditUpdate", "AppliedEdit", "MODES", "Mode", "PRESETS", "RULES", "Rule",
           "UPDATE_RULES", "ValueConfig", "ValueResult", "get", "names", "optimize_values", "preset_for", "revive"]
