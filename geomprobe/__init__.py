"""geomprobe: geometric diagnostics of locate-then-edit knowledge editing in causal LMs.

    import geomprobe as gp
    lm = gp.load_model("smollm2-135m")
    reqs = gp.load_requests("same-subject")
    k = gp.keys(lm, prompts, subjects, layers=[4, 5, 6])   # (n_prompts, n_layers, d_mlp)
"""

from . import editors, evaluate, hooks, linalg, probes, stats
from .data import EditRequest, Query, load_requests, render
from .errors import GeomprobeError
from .keys import keys
from .models import LM, load_model
from .positions import tokenize
from .report import compare, diagnose

__version__ = "0.1.0"

__all__ = ["EditRequest", "GeomprobeError", "LM", "Query", "editors", "evaluate", "hooks", "linalg", "probes", "stats", "keys", "load_model", "load_requests",
           "render", "tokenize", "compare", "diagnose", "__version__"]
