"""Built-in editors: ``gp.editors.get(name)`` returns an editor whose ``compute(lm, requests)`` gives an
:class:`EditUpdate` that can be applied and reverted bit-exactly.

Names: ``rome``, ``memit``, ``memit-merge``, ``alphaedit``, ``rose``, ``rose-no-iga``, ``rose-no-hki``, and
``revive(<name>)`` / ``revive(<name>, tau=0.8)`` wrapping any of them.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import import_module
from typing import TYPE_CHECKING, Any

from ..errors import GeomprobeError
from .config import EDITORS, MODES, RULES, EditorConfig, Mode, Rule, ValueConfig, parse_editor_name

if TYPE_CHECKING:
    from .locate import Editor

#: Names imported on first use (they pull in torch and transformers): ``from geomprobe.editors import Editor``.
_LAZY = {"Editor": "locate", "PRESETS": "presets", "preset_for": "presets", "UPDATE_RULES": "rules",
         "AppliedEdit": "update", "EditUpdate": "update", "ValueResult": "value", "optimize_values": "value"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get(name: str, config: EditorConfig | None = None, **overrides: Any) -> "Editor":
    """An editor by name.

    Args:
        name: one of :data:`EDITORS`, or ``revive(<name>[, tau=...])``.
        config: full configuration; default: the model's preset, resolved at ``compute`` time.
        overrides: fields of :class:`EditorConfig` (``layers=``, ``lam=``...) or of its value config
            prefixed ``value_`` (``value_steps=``...), applied on top of the preset.
    """
    base, wrap, tau = parse_editor_name(name)
    if wrap:
        return revive(get(base, config, **overrides), tau)
    mode, rule = EDITORS[base]
    unknown = sorted(set(overrides) - set(EditorConfig.option_names()))
    if unknown:  # fail here, not at compute time
        raise GeomprobeError(f"unknown editor option(s) {', '.join(unknown)}; use fields of EditorConfig or "
                             "ValueConfig (the latter prefixed value_)")
    from .locate import Editor

    return Editor(name=base, mode=mode, rule=rule, config=config, overrides=dict(overrides))


def revive(editor: "Editor", tau: float | None = None) -> "Editor":
    """Wrap ``editor``: each layer's ΔW loses its component in the dominant singular block of the
    pre-edit weight (energy share ``tau``, default the config's ``tau`` = 0.9)."""
    overrides = dict(editor.overrides, **({"tau": tau} if tau is not None else {}))
    return replace(editor, name=f"revive({editor.name})", revive=True, overrides=overrides)


def names() -> list[str]:
    return list(EDITORS)


__all__ = ["EDITORS", "Editor", "EditorConfig", "EditUpdate", "AppliedEdit", "MODES", "Mode", "PRESETS", "RULES", "Rule",
           "UPDATE_RULES", "ValueConfig", "ValueResult", "get", "names", "optimize_values", "parse_editor_name",
           "preset_for", "revive"]
