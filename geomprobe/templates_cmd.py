"""``geomprobe templates``: write the template pools of a request file's relations for a person to review.

For every relation of the requests (every template of zsRE/LoCoMo, whose relation changes per record) the file
holds the pool geomprobe would use: the training pool (HKI's leaves: declarative, question and instruction
templates) and the disjoint held-out questions (the question/instruction evaluation forms), with where it comes
from (``origin``):

* ``builtin`` — geomprobe's pools (its own relations, CounterFact's P-ids, S2RKE's YAGO ids);
* ``user``    — pools already registered (the request file's ``"templates"``, an earlier ``--templates``);
* ``rule``    — derived from the relation's template by :mod:`geomprobe.data.derive`;
* ``model``   — written by ``--model`` (:mod:`geomprobe.data.rewrite`) for templates no rule covers;
* ``fallback``— generic frames (``"What is the answer to: {} attended ... ...?"``): no rule applies and no model
  was given, or the model's questions did not validate.  Review these first.

The file loads back with :func:`geomprobe.data.forms.load_templates_file` (``--templates FILE``), edited or not.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from .data.derive import resolve_pools
from .data.forms import pool_key

#: The file's ``"format"`` field.
FORMAT = "geomprobe-templates"

HOW_TO_USE = ("Template pools per relation (\"{}\" = the subject). \"train\": [form, template] pairs an editor may "
              "optimise on (HKI); \"eval_questions\": held-out questions for the question/instruction evaluation "
              "forms, never trained on. Check the pools whose origin is \"fallback\" or \"model\", edit freely (keep "
              "one {} per template and the two pools disjoint), then pass this file with --templates. \"origin\", "
              "\"relation\", \"template\" and \"requests\" are informational.")


def run(requests: Any, out_path: str | Path, lm: Any = None, *, cache_dir: Any = None) -> dict[str, Any]:
    """Write the pools of every relation of ``requests`` to ``out_path`` (JSON).

    Args:
        requests: :class:`~geomprobe.data.requests.EditRequest` objects, or a request file / built-in set name.
        out_path: the JSON file to write (its folder is created).
        lm: a loaded :class:`~geomprobe.models.LM` (an instruction-tuned model) to rewrite the templates no rule
            covers; without it they get fallback pools.
        cache_dir: cache root of the model's rewrites (``<cache>/templates/<model>.json``).

    Returns:
        ``{"out": path, "model": name or None, "requests": n, "pools": {key: origin}, "origins": {origin: count}}``.
    """
    if isinstance(requests, (str, Path)):
        from .data import load_requests

        requests = load_requests(str(requests))
    reqs = list(requests)
    pools, _ = resolve_pools(reqs, lm, cache_dir=cache_dir, fallback=True)
    counts = Counter(pool_key(r.relation, r.prompt) for r in reqs)
    relation_of = {pool_key(r.relation, r.prompt): r.relation for r in reqs}
    entries = {}
    for key, pool in pools.items():
        d = pool.to_dict()
        entries[key] = {"relation": relation_of[key], "template": pool.declarative, "origin": d.pop("origin"),
                        "requests": counts[key], **d}
    doc = {"format": FORMAT, "version": 1, "model": getattr(lm, "name", None) if lm is not None else None,
           "how_to_use": HOW_TO_USE, "templates": entries}
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", "utf-8")
    origins = Counter(e["origin"] for e in entries.values())
    return {"out": str(out), "model": doc["model"], "requests": len(reqs),
            "pools": {k: e["origin"] for k, e in entries.items()}, "origins": dict(origins)}


def summary(result: dict[str, Any]) -> str:
    """A few lines for the CLI: where the file is and how many pools of each origin it holds."""
    o = result["origins"]
    parts = ", ".join(f"{n} {k}" for k, n in sorted(o.items()))
    lines = [f"wrote {len(result['pools'])} template pools for {result['requests']} requests to {result['out']} "
             f"({parts})"]
    todo = [k for k, v in result["pools"].items() if v in ("fallback", "model")]
    if todo:
        lines.append(f"review the {len(todo)} model/fallback pools (e.g. {todo[0]!r}), then pass --templates "
                     f"{result['out']}")
    return "\n".join(lines)

