"""Small per-model JSON caches of model-written text (context prefixes, rewritten templates).

``<cache root>/<kind>/<model slug>.json`` holds ``{"identity": {...}, "<section>": {entry: value}}``; a file of
another model (identity differs), torn or unreadable, counts as empty.  Writes are atomic; a read-only cache only
costs a regeneration next time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["identity_of", "load", "store"]


def identity_of(lm: Any) -> dict[str, Any]:
    """What makes model-written text reusable: the model's name, type, config and weights checksums."""
    return {k: lm.identity.get(k) for k in ("name", "model_type", "config_sha", "weight_checksum")}


def _path(lm: Any, kind: str, cache_dir: Any) -> Path:
    from .stats import cache_root, model_slug

    return cache_root(cache_dir) / kind / f"{model_slug(lm)}.json"


def load(lm: Any, kind: str, section: str, cache_dir: Any = None) -> dict[str, Any]:
    """The ``section`` entries cached for ``lm`` under ``kind`` ({} when none or of another model)."""
    try:
        saved = json.loads(_path(lm, kind, cache_dir).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict) or saved.get("identity") != identity_of(lm):
        return {}
    got = saved.get(section, {})
    return got if isinstance(got, dict) else {}


def store(lm: Any, kind: str, section: str, entry: str, value: Any, cache_dir: Any = None) -> None:
    """Add ``entry: value`` to the ``section`` of ``lm``'s cache file (atomic write; errors are ignored)."""
    from .stats import _write_json

    entries = dict(load(lm, kind, section, cache_dir), **{entry: value})
    try:
        _write_json(_path(lm, kind, cache_dir), {"identity": identity_of(lm), section: entries})
    except OSError:
        pass
