"""Editor options from the command line, parsed and validated before any model loads.

``--set KEY=VALUE`` keys are the fields of :class:`~geomprobe.editors.EditorConfig` and, prefixed ``value_``,
of :class:`~geomprobe.editors.ValueConfig`; values are parsed by the field's type (int, float, str, bool,
tuple of ints).  Every problem is a one-line :class:`~geomprobe.errors.GeomprobeError` naming the key,
what was expected and an example; an unknown key names the nearest valid ones.

The same module checks the other CLI inputs that can be checked without a model: ``--layers`` syntax and
range (:func:`check_layers`, against the layer count in the model's ``config.json``, read without loading
weights), editor names, ``--requests`` (a built-in set or an existing file), what each editor needs of the
requests (:func:`check_requests_for`: HKI's template pools) and ``--model`` (a built-in name, a local directory,
or a model hub id ``org/name`` that is cached or whose hub can be reached — never minutes of hub retries).
Every error is one line and names the nearest valid choice.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import GeomprobeError, RequestFormatError
from ..models.names import check_model, model_layer_count
from .config import VALUE_CHOICES

#: Options whose string values come from a fixed set.
CHOICES: dict[str, tuple[str, ...]] = {"projection_mode": ("absolute", "relative", "energy"),
                                       "revive_mode": ("two-sided", "block"),
                                       **{f"value_{k}": v for k, v in VALUE_CHOICES.items()}}

#: One line per value optimisation mode and update rule (see :mod:`geomprobe.editors.locate`).
MODE_TEXT = {
    "per-request": "one target value per request",
    "joint": "one target per subject, optimised jointly over its requests",
    "hki": "one target per subject from HKI (geometric median over M templates' leaves)",
}
RULE_TEXT = {
    "covariance": "ΔW = R Kᵀ(λC + KKᵀ)⁻¹ spread over the edit layers (MEMIT)",
    "identity": "isotropic ΔW = R Kᵀ(αI + KKᵀ)⁻¹ (IGA)",
    "projection": "ΔW restricted to the null space of C and earlier keys (AlphaEdit)",
    "rank-one": "rank-one update at the last edit layer, requests one after another (ROME)",
}
REVIVE_TEXT = ("revive(<editor>[, tau=0.9]) wraps any editor: removes the part of each layer's ΔW in the dominant "
               "singular subspace of the pre-edit weight (energy share tau)")


@dataclass(frozen=True)
class Option:
    """One ``--set`` key: its type hint, default and docstring line."""

    key: str
    type: Any
    default: Any
    doc: str = ""

    @property
    def type_name(self) -> str:
        return type_name(self.type)

    @property
    def default_text(self) -> str:
        if self.default is MISSING:
            return "model preset"
        if isinstance(self.default, tuple):
            return ",".join(str(x) for x in self.default)
        return str(self.default)

    @property
    def example(self) -> str:
        if self.default is MISSING or isinstance(self.default, tuple):
            return f"{self.key}=3,4,5"
        if self.key in CHOICES:
            return f"{self.key}={CHOICES[self.key][0]}"
        return f"{self.key}={self.default_text}"


def type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        inner = args[0].__name__ if args and isinstance(args[0], type) else "value"
        return f"{inner}s"
    return getattr(hint, "__name__", str(hint))


def _field_docs(cls: type) -> dict[str, str]:
    """``name: text`` lines of the ``Attributes:`` section (``a / b: text`` documents both)."""
    docs: dict[str, str] = {}
    text = cls.__doc__ or ""
    if "Attributes:" not in text:
        return docs
    key = None
    for line in text.split("Attributes:", 1)[1].splitlines():
        m = re.match(r"^\s{4,}([\w /]+?):\s+(.*)$", line)
        if m and all(re.fullmatch(r"\w+", k.strip()) for k in m.group(1).split("/")):
            names = [k.strip() for k in m.group(1).split("/")]
            for k in names:
                docs[k] = m.group(2).strip()
            key = names
        elif key and line.strip():
            for k in key:
                docs[k] += " " + line.strip()
    return {k: re.sub(r":\w+:`~?([^`]+)`", r"\1", v).replace("``", "") for k, v in docs.items()}


def _options_of(cls: type, prefix: str = "") -> list[Option]:
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            continue  # EditorConfig.value: set its fields as value_<field>
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)  # type: ignore[misc]
        out.append(Option(prefix + f.name, hints[f.name], default, docs.get(f.name, "")))
    return out


def editor_options() -> dict[str, Option]:
    """Every ``--set`` key: EditorConfig fields, then ValueConfig fields prefixed ``value_``."""
    from .config import EditorConfig, ValueConfig

    return {o.key: o for o in (*_options_of(EditorConfig), *_options_of(ValueConfig, "value_"))}


def describe_editor(name: str) -> str:
    from .config import EDITORS

    mode, rule = EDITORS[name]
    return f"values: {MODE_TEXT.get(mode, mode)}; update: {RULE_TEXT.get(rule, rule)}"


# ---- parsing ---------------------------------------------------------------------------------------------

def parse_layers(text: str | None, flag: str = "--layers") -> tuple[int, ...] | None:
    """``"3,4,5"``, ``"3-7"`` or a mix (``"1,3-5"``) → increasing distinct layer indices; None/"" → None."""
    if text is None or not str(text).strip():
        return None
    out: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            lo, sep, hi = part.partition("-")
            if sep:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise GeomprobeError(f"{flag} {text!r} is not a list like 4,5,6 or a range like 4-8") from None
    if out != sorted(set(out)):
        raise GeomprobeError(f"{flag} {text!r}: layers must be distinct and increasing, e.g. 4,5,6 or 4-8")
    return tuple(out)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_value(opt: Option, text: str) -> Any:
    """``text`` as ``opt``'s type; one-line error naming the key, the type and an example."""
    hint, raw = opt.type, text.strip()

    def bad(what: str) -> GeomprobeError:
        return GeomprobeError(f"--set {opt.key}={text!r}: {opt.key} takes {what}, e.g. --set {opt.example}")

    if typing.get_origin(hint) is tuple:
        if not raw:
            raise bad("a list of ints like 3,4,5 or 3-7")
        return parse_layers(raw, flag=f"--set {opt.key}")
    if hint is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise bad("true or false")
    if hint is int:
        try:
            return int(raw)
        except ValueError:
            try:
                f = float(raw)
            except ValueError:
                raise bad("an int") from None
            if f.is_integer():
                return int(f)
            raise bad("an int") from None
    if hint is float:
        try:
            v = float(raw)
        except ValueError:
            raise bad("a float") from None
        if not math.isfinite(v):
            raise bad("a finite float")
        return v
    if hint is str:
        if not raw:
            raise bad("a non-empty string")
        if opt.key in CHOICES and raw not in CHOICES[opt.key]:
            raise bad("one of " + ", ".join(CHOICES[opt.key]))
        return raw
    raise bad(type_name(hint))  # pragma: no cover - a field type this parser does not know


def suggest(key: str, keys: Sequence[str]) -> list[str]:
    """Nearest valid keys: ``lr`` → ``value_lr``; ``value_step`` → ``value_steps``; ``lamda`` → ``lam``."""
    out = [k for k in keys if k.startswith("value_") and k[6:] == key]
    out += difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    bare = {k[6:]: k for k in keys if k.startswith("value_")}
    out += [bare[k] for k in difflib.get_close_matches(key, list(bare), n=2, cutoff=0.6)]
    return list(dict.fromkeys(out))[:2]


def parse_overrides(items: Sequence[str] | None, layers: str | None = None) -> dict[str, Any]:
    """``--set KEY=VALUE`` items (plus ``--layers``) → editor overrides, validated by the config types.

    Raises:
        GeomprobeError: malformed item, unknown key (with the nearest valid keys), a value of the wrong type,
            or values the configs reject (e.g. ``value_steps=0``).
    """
    options = editor_options()
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise GeomprobeError(f"--set {item!r} is not KEY=VALUE (e.g. --set value_clamp=2 or --set lam=50)")
        if key not in options:
            if key == "value":
                hint = "set its fields as value_<field>, e.g. value_steps=40"
            else:
                near = suggest(key, list(options))
                hint = f"did you mean {' or '.join(near)}?" if near else "see `geomprobe editors` for the keys"
            raise GeomprobeError(f"--set {key}: unknown editor option; {hint} (all keys: `geomprobe editors`)")
        out[key] = parse_value(options[key], text)
    parsed_layers = parse_layers(layers)
    if parsed_layers is not None:
        out["layers"] = parsed_layers
    check_overrides(out)
    return out


def check_overrides(overrides: dict[str, Any]) -> None:
    """Build the configs with these overrides on the defaults, so their own checks run before any model loads."""
    from .config import EditorConfig, ValueConfig

    value = {k[6:]: v for k, v in overrides.items() if k.startswith("value_")}
    rest = {k: v for k, v in overrides.items() if not k.startswith("value_")}
    rest.setdefault("layers", (0,))
    try:
        EditorConfig(value=ValueConfig(**value), **rest)
    except GeomprobeError as e:
        raise GeomprobeError(f"--set: {e}") from None
    except (TypeError, ValueError) as e:
        raise GeomprobeError(f"--set: invalid editor options ({e})") from None


# ---- other inputs ----------------------------------------------------------------------------------------

def check_editors(names: Sequence[str] | str) -> list[str]:
    """Editor names (``memit``, ``revive(rose, tau=0.8)``...), validated; a misspelt one names the nearest."""
    from .config import EDITORS, parse_editor_name

    if isinstance(names, str):
        names = _split_editors(names)
    names = [n.strip() for n in names if n and n.strip()]
    if not names:
        raise GeomprobeError("no editor given; pass --editor NAME or --editors a,b,c (see `geomprobe editors`)")
    for n in names:
        try:
            parse_editor_name(n)
        except GeomprobeError as e:
            near = difflib.get_close_matches(n, list(EDITORS), n=1, cutoff=0.6)
            raise GeomprobeError(f"{e}" + (f"; did you mean {near[0]}?" if near else "")) from None
    return names


def _split_editors(text: str) -> list[str]:
    """Split ``a,revive(b, tau=0.8),c`` at commas outside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [s.strip() for s in out if s.strip()]


def check_requests(name_or_path: str) -> str:
    """A built-in request set or an existing file."""
    from ..data import BUILTIN_REQUESTS

    if name_or_path in BUILTIN_REQUESTS:
        return name_or_path
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return name_or_path
    if p.is_dir():
        raise RequestFormatError(f"--requests {name_or_path!r} is a directory; pass a request file or a built-in set "
                                 f"({', '.join(BUILTIN_REQUESTS)})")
    near = difflib.get_close_matches(name_or_path, list(BUILTIN_REQUESTS), n=1, cutoff=0.6)
    raise RequestFormatError(f"request file {name_or_path!r} does not exist; pass a built-in set "
                             f"({', '.join(BUILTIN_REQUESTS)}) or a path to a JSON file"
                             + (f" (did you mean {near[0]}?)" if near else ""))


def check_layers(layers: Sequence[int] | None, n_layers: int | None, model: str = "the model",
                 flag: str = "--layers") -> None:
    """Every edit layer inside ``0..n_layers-1`` (nothing to check when either is None); the error names the
    nearest valid layers."""
    if not layers or n_layers is None:
        return
    bad = [int(l) for l in layers if not 0 <= int(l) < n_layers]
    if not bad:
        return
    fixed = sorted({min(max(int(l), 0), n_layers - 1) for l in layers})
    sep = "" if flag.endswith("=") else " "
    raise GeomprobeError(f"{flag}{sep}{layers_text(list(layers))}: {model} has {n_layers} layers (0..{n_layers - 1}); "
                         f"layer {bad[0]} does not exist; did you mean {flag}{sep}{layers_text(fixed)}?")


def layers_text(layers: Sequence[int]) -> str:
    """``a-b`` for a contiguous run of layers, else ``a,b,c``."""
    ls = [int(x) for x in layers]
    if len(ls) > 1 and ls == list(range(ls[0], ls[-1] + 1)):
        return f"{ls[0]}-{ls[-1]}"
    return ",".join(str(x) for x in ls)


def hki_relations_without_pool(requests: Sequence[Any]) -> list[str]:
    """Relations of ``requests`` whose pool no template file, built-in set or rule provides: their questions and
    instructions are written by the model being edited once it loads (:mod:`geomprobe.data.rewrite`, cached)."""
    from ..data.derive import pool_for
    from ..errors import RequestFormatError as _NoPool

    out = []
    for r in requests:
        try:
            pool = pool_for(r.relation, r.prompt)
        except _NoPool:
            pool = None
        if pool is None or not pool.train:
            out.append(r.relation)
    return list(dict.fromkeys(out))


def check_requests_for(editor_name: str, requests: Sequence[Any]) -> list[str]:
    """What editor ``editor_name`` needs of ``requests``, checked before any model loads or any editor computes.

    HKI editors (``rose``, ``rose-no-iga``, and ``revive`` of them) optimise on each relation's training templates.
    Every relation gets a pool — a reviewed ``--templates`` file, the built-in pools, the rules of
    :mod:`geomprobe.data.derive`, or else the model's own rewrite once it loads — so nothing is refused here;
    the relations left to the model are returned so the caller can say so before the work starts.

    Returns:
        relations whose pools the model will write (empty for editors without HKI).
    """
    from .config import EDITORS, parse_editor_name

    base, _, _ = parse_editor_name(editor_name)
    mode, _ = EDITORS[base]
    if mode != "hki" or not requests:
        return []
    return hki_relations_without_pool(requests)


__all__ = ["CHOICES", "Option", "check_editors", "check_layers", "check_model", "check_overrides", "check_requests",
           "check_requests_for", "describe_editor", "editor_options", "hki_relations_without_pool",
           "model_layer_count", "parse_layers", "parse_overrides", "parse_value", "suggest"]
