"""Model access: built-in names, ArchSpecs per model type, validated loading.

``LM``, ``load_model`` and ``validate_spec`` are imported on first use (they pull in torch and transformers), so
checking a model name against :data:`BUILTIN` stays cheap.
"""

from importlib import import_module
from typing import Any

from .arch import SPECS, ArchSpec, spec_for, spec_from_template
from .builtin import BUILTIN

_LAZY = ("LM", "load_model", "validate_spec")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(".load", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ArchSpec", "SPECS", "spec_for", "spec_from_template", "BUILTIN", "LM", "load_model", "validate_spec"]
