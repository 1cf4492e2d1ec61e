"""Model access: built-in names, ArchSpecs per model type, validated loading."""

from .arch import SPECS, ArchSpec, spec_for, spec_from_template
from .builtin import BUILTIN
from .load import LM, load_model, validate_spec

__all__ = ["ArchSpec", "SPECS", "spec_for", "spec_from_template", "BUILTIN", "LM", "load_model", "validate_spec"]
