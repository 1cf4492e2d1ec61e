"""geomprobe: geometric diagnostics of locate-then-edit knowledge editing in causal LMs.

    import geomprobe as gp
    lm = gp.load_model("smollm2-135m")
    reqs = gp.load_requests("same-subject")
    k = gp.keys(lm, prompts, subjects, layers=[4, 5, 6])   # (n_prompts, n_layers, d_mlp)

Names are imported on first use (PEP 562), so ``geomprobe --help`` or a bad option answers without loading torch
and transformers first.
"""

from importlib import import_module
from typing import Any

from .errors import GeomprobeError

__version__ = "0.1.0"

#: public name -> (module, attribute); attribute None: the module itself.
_LAZY: dict[str, tuple[str, str | None]] = {
    **{m: (f".{m}", None) for m in ("data", "editors", "evaluate", "hooks", "linalg", "models", "plots", "probes",
                                    "report", "stats", "tables")},
    "EditRequest": (".data", "EditRequest"), "Query": (".data", "Query"), "load_requests": (".data", "load_requests"),
    "render": (".data", "render"), "keys": (".key_reads", "keys"), "LM": (".models", "LM"),
    "load_model": (".models", "load_model"), "tokenize": (".positions", "tokenize"),
    "compare": (".report", "compare"), "diagnose": (".report", "diagnose"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'geomprobe' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = import_module(module, __name__)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = ["EditRequest", "GeomprobeError", "LM", "Query", "editors", "evaluate", "hooks", "linalg", "probes", "stats",
           "keys", "load_model", "load_requests", "render", "tokenize", "compare", "diagnose", "__version__"]
