"""Model names checked before anything loads: a built-in name, a local directory or a model hub id (no hub
retries on an obvious typo), and a model's layer count read from its ``config.json`` without loading weights.

Lives under :mod:`geomprobe.models` (the loader calls :func:`check_model` too); :mod:`geomprobe.editors.options`
re-exports it for the command line's checks.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from ..errors import ModelLoadError

def _truthy_env(*names: str) -> bool:
    return any(os.environ.get(n, "").strip().lower() not in ("", "0", "false", "no", "off") for n in names)


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an invalid repo id, or no huggingface_hub: not cached
        return False


_PROXY_ENV = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")


def _hub_reachable(timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the model hub (``HF_ENDPOINT``, default huggingface.co) opens within
    ``timeout`` seconds (name resolution included).  Behind a proxy the hub is assumed reachable."""
    import socket
    import threading
    import urllib.parse

    if any(os.environ.get(n) for n in _PROXY_ENV):
        return True
    url = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)  # name resolution ignores the socket timeout: bound it here
    return bool(result and result[0])


def _nearest_builtin(name: str) -> str:
    from ..models.builtin import BUILTIN

    near = difflib.get_close_matches(name.lower(), list(BUILTIN), n=1, cutoff=0.0)
    return near[0] if near else next(iter(BUILTIN))


def check_model(name: str) -> str:
    """A built-in name, a local directory, or a model hub id; fails at once (no hub retries) on an obvious typo
    of a built-in name, a path that is not a directory, a name that is not a hub id (``org/name``) and not in the
    hub cache, or an uncached hub id while ``HF_HUB_OFFLINE`` is set or the hub cannot be reached."""
    from ..models.builtin import BUILTIN

    builtin = ", ".join(BUILTIN)
    if name in BUILTIN:
        return name
    p = Path(name).expanduser()
    if p.is_dir():
        return name
    if name.startswith(("/", ".", "~")) or p.exists():
        raise ModelLoadError(f"{name!r} is neither a built-in model ({builtin}) nor a model directory; pass a "
                             "built-in name, a directory holding config.json, or a model hub id")
    near = difflib.get_close_matches(name.lower(), list(BUILTIN), n=1, cutoff=0.75)
    if near:
        raise ModelLoadError(f"unknown model {name!r}; did you mean {near[0]}? (built-in: {builtin}; or a model "
                             "directory or model hub id)")
    if _in_hub_cache(name):
        return name
    nearest = _nearest_builtin(name)
    if "/" not in name.strip("/"):
        raise ModelLoadError(f"unknown model {name!r}: not a built-in model, not a local directory and not a model "
                             f"hub id (those read org/name, e.g. HuggingFaceTB/SmolLM2-135M-Instruct); nearest "
                             f"built-in: {nearest} (built-in: {builtin})")
    if _truthy_env("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        raise ModelLoadError(f"model {name!r} is not built-in, not a local directory and not in the model hub cache "
                             f"(HF_HUB_OFFLINE is set); nearest built-in: {nearest}")
    if not _hub_reachable():
        raise ModelLoadError(f"model {name!r} is not built-in, not a local directory and not in the model hub cache, "
                             "and the model hub cannot be reached from here; nearest built-in: "
                             f"{nearest} (or pass a local model directory)")
    return name


#: Layer counts of built-in models whose config.json is not in the package (SmolLM2 is prepared on first use).
_BUILTIN_LAYERS = {"smollm2-135m": 30, "qwen2.5-coder-0.5b": 24}


def _layers_in_config(cfg: dict) -> int | None:
    for src in (cfg, cfg.get("text_config") or {}):
        for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
            if isinstance(src.get(key), int):
                return int(src[key])
    return None


def model_layer_count(name: str) -> int | None:
    """The model's number of decoder layers, from its ``config.json`` without loading weights: built-in models,
    local directories, and hub ids already in the hub cache; None when it cannot be known without the hub."""
    import json

    from ..models.builtin import BUILTIN, TOY_DIR

    if name in _BUILTIN_LAYERS:
        return _BUILTIN_LAYERS[name]
    if name in BUILTIN:
        path: Path | None = TOY_DIR / name / "config.json"
    else:
        p = Path(name).expanduser()
        path = p / "config.json" if p.is_dir() else None
        if path is None and not name.startswith(("/", ".", "~")):
            try:
                from huggingface_hub import try_to_load_from_cache

                hit = try_to_load_from_cache(name, "config.json")
                path = Path(hit) if isinstance(hit, str) else None
            except Exception:  # noqa: BLE001 - an invalid repo id, or no huggingface_hub: unknown
                path = None
    if path is None or not path.is_file():
        return None
    try:
        return _layers_in_config(json.loads(path.read_text("utf-8")))
    except (OSError, ValueError):
        return None
