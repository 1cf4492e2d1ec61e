"""Diagnose an edit made elsewhere: read edited weights for :meth:`EditUpdate.from_weights
<geomprobe.editors.update.EditUpdate.from_weights>`.

``EditUpdate.from_weights(lm, edited, requests)`` takes what another tool wrote —

* a **state dict** (parameter name -> tensor), full (what ``save_pretrained`` writes; a tied LM head under
  either name, a bare base model's names without the ``transformer.``/``model.`` prefix) or partial (only
  the MLP output projections, under their real names: ``model.layers.{l}.mlp.down_proj.weight``,
  ``transformer.h.{l}.mlp.c_proj.weight``...), holding the *edited* weights;
* a **path**: a model directory as ``save_pretrained`` writes it (``model.safetensors``, sharded
  ``model.safetensors.index.json``, ``pytorch_model.bin`` or its index), or one ``.safetensors`` / ``.pt`` /
  ``.bin`` file holding a state dict or a per-layer mapping.  Files are read with ``safetensors`` or
  ``torch.load(weights_only=True)``: no pickled code runs;
* a **per-layer mapping** ``{layer: ΔW}`` (int keys, or digit strings as a safetensors file must have them) of
  the *updates*, what EasyEdit's and the ROME/MEMIT scripts' delta dicts hold once multiplied out.  ΔW is
  (d_model, d_mlp), out×in, the orientation of :meth:`LM.weight <geomprobe.models.load.LM.weight>`; for a
  GPT-2 ``Conv1D`` the parameter's own in×out orientation (d_mlp, d_model) is accepted too and transposed.
  Rank-one factor pairs ``(u, v)`` are refused: multiply them out in the orientation the tool documents.

— and recovers what geomprobe's probes need:

* ``layers``: the layers whose MLP output projection changed, by exact inequality with ``lm``'s current
  (unedited) weight (a ΔW that is all zeros does not count); ``hparams["max_abs_delta"]`` holds max|ΔW|.
* ``deltas``: ΔW per layer in float32, (d_model, d_mlp) (``Conv1D`` weights transposed).  From a mapping it
  is the given ΔW (cast to float32); from edited weights it is ``W_edited − W`` in float32 — the *applied*
  change, which is all a saved model carries: a float32 ΔW added into W and rounded cannot be read back bit
  for bit.  ``hparams["reapply_exact"]`` says whether ``update.apply(lm)`` reproduces the edited weights bit
  for bit (the subtraction can round only where an entry changes sign or its magnitude more than 2×).
* ``keys``: K per layer (d_mlp, n_requests) on the **edited** model at the subject's last token of each
  request's edit prompt (:func:`read_columns`, the reads of ``Editor._column_reads``).  Default
  ``key_weighting="bare"``: the bare prompt's key (ROME's ``cur_input``) — the edit's own key weighting is
  unknown, the bare prompt is the one every editor writes at, and the toy presets' MEMIT keys are bare too;
  ``"memit"`` / ``"flat"`` average in the context-prefixed copies as MEMIT's ``compute_ks`` / ROME's
  ``compute_u`` do (the geomprobe editors' default is ``"memit"``).  A layer's key depends only on the
  layers below it, so on the edited model K_l is exactly what MEMIT reads when it solves layer l after the
  layers below are applied.
* ``h``: the unedited residual after the last changed layer at the subject's last token of the bare prompt;
  ``z``: the **edited** model's residual there (the edited weights are copied in under
  :func:`~geomprobe.editors.update.restoring` and restored bit-exactly).
* ``resids``: ``R_l = ΔW_l K_l``, the residual each layer actually writes at the keys (consistent with
  ``deltas`` and ``keys``; for a MEMIT edit it is the share of MEMIT's R that λ let through).
* ``columns``: one per request (its ``case_id``); ``hparams``: ``{"source": "imported", "origin": ...}``
  plus ``form``, ``key_weighting``, ``max_abs_delta`` and ``reapply_exact`` (no editor settings:
  ``EditUpdate.editor_config()`` gives the defaults on the update's layers); ``seconds`` 0 (the edit's cost
  is unknown).
* ``value``: no value optimisation ran, so there is no optimised δ.  In its place a stand-in
  :class:`~geomprobe.editors.value.ValueResult` (:func:`delivered_value`, ``mode == "imported"``): layer L = the
  last changed layer, one group per request, ``h`` as above and ``delta = z − h`` — **the value the edited
  model delivers at L on the bare prompt** — with no losses, no relation gradients and ``steps_run`` 0.  Every
  probe that reads ``update.value`` runs on it; the tolerance radius ρ of an imported edit is therefore measured
  around the *delivered* δ (``z − h``), not around an optimised one.  For an edit made by a value optimisation
  and a closed form, the two agree only where the closed form wrote the optimised δ exactly (e.g. a single-layer
  rank-one edit at its own key); a MEMIT edit spread over layers with λ > 0 delivers a different δ, so its ρ
  differs from the ρ of its optimised value (on the toy presets, λ = 1, the gap is below 1%).  What needs the
  editor's own settings or optimisation (the counterfactual update rules' λ / α, value re-optimisation) is not
  available for an imported edit, and ``probes.gradient_conflict(update=...)`` finds no relation gradients in it
  (an empty table); :func:`is_imported` / ``EditUpdate.is_imported`` tell such an update apart, and ``geomprobe
  diagnose`` / ``compare`` list what they did not measure for it.

Refused with one :class:`~geomprobe.errors.GeomprobeError` line: weights of another architecture or shape
(parameter names the model lacks, missing parameters of a full model, other shapes, another dtype than the
loaded model's, more or fewer layers, a ΔW of the wrong shape), NaN/Inf
(:class:`~geomprobe.errors.NumericalError`), no changed layer ("the edited weights equal the model's: nothing
to diagnose"), and **changes outside the MLP output projection weights** (their bias included): the probes
assume an edit that wrote only ``W_l`` (ROME/MEMIT/RoSE-style), so a fine-tune that moved other parameters
is refused with their names rather than diagnosed as if it had not.

:func:`save_weights` writes an update's edited projection weights under their real names (what another
tool's saved model holds for them); :func:`save_deltas` writes the ``{layer: ΔW}`` form.  Both read back.

This module imports nothing from :mod:`~geomprobe.editors.update` or :mod:`~geomprobe.editors.locate`
(``update`` imports it): ``EditUpdate.from_weights`` puts the pieces together.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from ..data.requests import EditRequest
from ..errors import GeomprobeError, NumericalError
from ..models.load import LM
from .config import EditorConfig, ValueConfig

__all__ = ["IMPORTED_MODE", "KEY_WEIGHTINGS", "EditedWeights", "delivered_value", "is_imported", "read_columns",
           "read_edit", "save_deltas", "save_weights"]

KEY_WEIGHTINGS = ("bare", "memit", "flat")
#: ``ValueResult.mode`` of an imported update's stand-in value (no optimisation mode produced it).
IMPORTED_MODE = "imported"
_SHOW = 3  # names listed in a refusal


def _names(names: Sequence[str]) -> str:
    names = list(names)
    more = f" and {len(names) - _SHOW} more" if len(names) > _SHOW else ""
    return ", ".join(names[:_SHOW]) + more


# ---- reading what was given ---------------------------------------------------------------------------
class _Source:
    """Tensors by name, read lazily (safetensors) or from memory; ``origin`` says where they came from."""

    def __init__(self, names: list, get, origin: str, config: dict | None = None):
        self.names, self._get, self.origin, self.config = names, get, origin, config

    def items(self) -> Iterator[tuple[Any, Any]]:
        for n in self.names:
            yield n, self._get(n)


def _from_mapping(d: Mapping, origin: str) -> _Source:
    return _Source(list(d.keys()), d.__getitem__, origin)


def _safetensors(files: dict[str, Path], origin: str, config: dict | None) -> _Source:
    """``files``: tensor name -> file (one file, or the shards of an index)."""
    from safetensors import safe_open

    def get(name):
        with safe_open(str(files[name]), framework="pt", device="cpu") as f:
            return f.get_tensor(name)

    return _Source(list(files), get, origin, config)


def _safetensors_names(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return list(f.keys())
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise GeomprobeError(f"cannot read {path} as safetensors ({type(e).__name__}: {str(e)[:100]}); "
                             "pass a file save_pretrained or safetensors wrote") from None


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, unsupported globals under weights_only, truncated files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise GeomprobeError(f"cannot read {path} with torch.load(weights_only=True) ({first[:120]}); pass a "
                             "state dict of tensors saved with torch.save or a .safetensors file") from None


def _index(path: Path) -> dict[str, Path]:
    try:
        weight_map = json.loads(path.read_text("utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError):
        raise GeomprobeError(f"{path} is not a sharded-checkpoint index (no weight_map); pass the model "
                             "directory save_pretrained wrote") from None
    return {k: path.parent / v for k, v in weight_map.items()}


def _open(edited: Any) -> _Source:
    if isinstance(edited, Mapping):
        return _from_mapping(edited, f"<{type(edited).__name__}>")
    if not isinstance(edited, (str, os.PathLike)):
        raise GeomprobeError(f"edited weights are a {type(edited).__name__}; pass a state dict, a {{layer: ΔW}} "
                             "mapping, or the path of a saved model / .safetensors / .pt file")
    path = Path(edited).expanduser()
    origin = str(edited)
    if path.is_dir():
        config = None
        try:
            config = json.loads((path / "config.json").read_text("utf-8"))
        except (OSError, ValueError):
            pass
        for name in ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                     "pytorch_model.bin"):
            f = path / name
            if not f.is_file():
                continue
            if name.endswith(".index.json"):
                files = _index(f)
                if name.startswith("model.safetensors"):
                    return _safetensors(files, origin, config)
                shards = {}
                for shard in sorted(set(files.values())):
                    shards.update(_as_mapping(_torch_load(shard), shard))
                return _Source(list(shards), shards.__getitem__, origin, config)
            if name.endswith(".safetensors"):
                return _safetensors({k: f for k in _safetensors_names(f)}, origin, config)
            d = _as_mapping(_torch_load(f), f)
            return _Source(list(d), d.__getitem__, origin, config)
        found = sorted(p.name for p in path.glob("*.safetensors"))
        if len(found) == 1:
            f = path / found[0]
            return _safetensors({k: f for k in _safetensors_names(f)}, origin, config)
        raise GeomprobeError(f"{path} holds no model.safetensors or pytorch_model.bin; pass the directory "
                             "save_pretrained wrote, or the weights file itself")
    if not path.is_file():
        raise GeomprobeError(f"no edited weights at {path}; pass a model directory, a .safetensors/.pt file, a "
                             "state dict or a {layer: ΔW} mapping")
    if path.name.endswith(".index.json"):
        files = _index(path)
        if all(str(v).endswith(".safetensors") for v in files.values()):
            return _safetensors(files, origin, None)
        raise GeomprobeError(f"{path}: only safetensors shards are read from an index file; pass the directory")
    if path.suffix == ".safetensors":
        return _safetensors({k: path for k in _safetensors_names(path)}, origin, None)
    d = _as_mapping(_torch_load(path), path)
    return _Source(list(d), d.__getitem__, origin)


def _as_mapping(obj: Any, path: Path) -> Mapping:
    if not isinstance(obj, Mapping):
        raise GeomprobeError(f"{path} holds a {type(obj).__name__}, not a state dict or a {{layer: ΔW}} mapping; "
                             "save the edited weights with torch.save(model.state_dict()) or save_pretrained")
    return obj


def _layer_key(k: Any) -> int | None:
    """A per-layer key: an int, or a string of digits (safetensors keys are strings)."""
    if isinstance(k, bool):
        return None
    if isinstance(k, int):
        return k
    if isinstance(k, str) and k.isdigit():
        return int(k)
    return None


# ---- checks -------------------------------------------------------------------------------------------
def _tensor(name: Any, t: Any) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise GeomprobeError(f"edited weights entry {name!r} is a {type(t).__name__}, not a tensor; pass tensors "
                             "(a multiplied-out ΔW per layer, not its rank-one factors)")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise NumericalError(f"the edited weights hold NaN/Inf in {name!r}; the edit diverged — nothing "
                             "meaningful to diagnose")
    return t


def _check_config(lm: LM, config: dict | None) -> None:
    """A saved model's config.json must name the same architecture (the tensors are checked anyway)."""
    if not config:
        return
    mine = lm.model.config
    if config.get("model_type") not in (None, mine.model_type):
        raise GeomprobeError(f"the edited model is a {config.get('model_type')!r} model but {lm.name} is "
                             f"{mine.model_type!r}; diagnose an edit of this very model")
    theirs = config.get("text_config") or config
    text = mine.get_text_config().to_dict()
    for key in ("num_hidden_layers", "n_layer", "hidden_size", "n_embd", "intermediate_size", "n_inner"):
        if theirs.get(key) is not None and text.get(key) is not None and theirs[key] != text[key]:
            raise GeomprobeError(f"the edited model has {key} = {theirs[key]} but {lm.name} has {text[key]}; "
                                 "diagnose an edit of this very model (same architecture, shapes and layers)")


def _orient(lm: LM, param_layout: torch.Tensor) -> torch.Tensor:
    """A rewrite weight as stored in the parameter -> (d_model, d_mlp) out×in (Conv1D is in×out)."""
    return param_layout.T if lm.spec.layout == "conv1d" else param_layout


def _read_state_dict(lm: LM, src: _Source) -> tuple[dict[int, torch.Tensor], str]:
    """Edited weights by parameter name -> {layer: edited W (d_model, d_mlp), model dtype, layer device}."""
    model = lm.model
    params = model.state_dict(keep_vars=True)
    known: dict[str, torch.Tensor] = {**dict(model.named_buffers()), **params}
    ignore = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])]
    n = lm.n_layers
    weight_of = {f"{lm.spec.rewrite_name(l)}.weight": l for l in range(n)}
    rewrite_keys = set(weight_of) | {f"{lm.spec.rewrite_name(l)}.bias" for l in range(n)}

    prefix = getattr(model, "base_model_prefix", "")
    rename, unknown = {}, []
    for k in src.names:
        if k in known:
            rename[k] = k
        elif prefix and f"{prefix}.{k}" in known:
            rename[k] = f"{prefix}.{k}"  # saved from the bare base model (hub GPT-2 files: "h.0.mlp...")
        elif not any(p.search(str(k)) for p in ignore):
            unknown.append(k)
        # else: a key transformers' own loader ignores (old GPT-2 checkpoints' causal-mask buffers)
    if unknown:
        idx = [re.search(r"\.(\d+)\.", str(k)) for k in unknown]
        why = f"layers beyond its {n}" if any(i and int(i.group(1)) >= n for i in idx) else "another architecture"
        raise GeomprobeError(f"the edited weights have {len(unknown)} parameter name(s) {lm.name} does not "
                             f"({_names(map(str, unknown))}; {why}); diagnose an edit of this very model (same "
                             "architecture, shapes and number of layers)")
    targets = set(rename.values())
    partial = targets <= rewrite_keys
    if not partial:  # a full model must hold every parameter (a tied one under either of its names)
        groups: dict[int, list[str]] = {}
        for name, p in params.items():
            groups.setdefault(id(p), []).append(name)
        missing = [g[0] for g in groups.values() if not targets & set(g)]
        if missing:
            raise GeomprobeError(f"the edited model lacks {len(missing)} of {lm.name}'s parameters "
                                 f"({_names(missing)}); another architecture or fewer layers — diagnose an edit "
                                 "of this very model, or pass only the MLP output projections")

    edited: dict[int, torch.Tensor] = {}
    outside: list[str] = []
    for key, t in src.items():
        if key not in rename:
            continue  # an ignored key (e.g. GPT-2's causal-mask buffers in old checkpoints)
        name = rename[key]
        t = _tensor(key, t)
        mine = known[name]
        if tuple(t.shape) != tuple(mine.shape):
            raise GeomprobeError(f"the edited weight {name} is {tuple(t.shape)} but {lm.name}'s is "
                                 f"{tuple(mine.shape)}; another model shape — diagnose an edit of this very model")
        if t.dtype != mine.dtype:
            raise GeomprobeError(f"the edited weight {name} is {str(t.dtype).replace('torch.', '')} but "
                                 f"{lm.name} is loaded in {str(mine.dtype).replace('torch.', '')}; load the model "
                                 "in the dtype the edit was saved in (--dtype), changes are found by exact comparison")
        t = t.to(mine.device)
        if torch.equal(t, mine.detach()):
            continue
        if name in weight_of:
            edited[weight_of[name]] = _orient(lm, t)
        else:
            outside.append(name)
    if outside:
        raise GeomprobeError(f"the edit changed {len(outside)} parameter(s) besides the MLP output projection "
                             f"weights ({_names(outside)}); geomprobe's probes assume an edit that wrote only "
                             "those (ROME/MEMIT/RoSE-style), so this one cannot be diagnosed as one")
    return edited, "weights"


def _read_deltas(lm: LM, src: _Source) -> dict[int, torch.Tensor]:
    """{layer: ΔW} -> {layer: ΔW (d_model, d_mlp) float32 on the layer's device}, zero ΔWs dropped."""
    d, m, n = lm.d_model, lm.d_mlp, lm.n_layers
    out: dict[int, torch.Tensor] = {}
    for key, t in src.items():
        layer = _layer_key(key)
        if not 0 <= layer < n:
            raise GeomprobeError(f"a ΔW for layer {layer} but {lm.name} has layers 0..{n - 1}; pass the updates of "
                                 "an edit of this very model")
        t = _tensor(key, t)
        if not t.is_floating_point():
            raise GeomprobeError(f"the ΔW of layer {layer} is {t.dtype}, not floating point; pass float updates")
        if tuple(t.shape) == (d, m):
            delta = t
        elif lm.spec.layout == "conv1d" and d != m and tuple(t.shape) == (m, d):
            delta = t.T  # the Conv1D parameter's own in×out orientation
        else:
            raise GeomprobeError(f"the ΔW of layer {layer} is {tuple(t.shape)}, not (d_model, d_mlp) = ({d}, {m}) "
                                 f"of {lm.spec.rewrite_name(layer)}; pass updates of this very model, out×in")
        if bool((delta != 0).any()):
            out[layer] = delta.to(lm.device_of(layer), torch.float32).contiguous()
    return out


# ---- what the probes need -----------------------------------------------------------------------------
@dataclass(frozen=True)
class EditedWeights:
    """What :func:`read_edit` recovered.

    Attributes:
        layers: the changed layers, increasing.
        weights: {layer: edited W (d_model, d_mlp)} in the model dtype, on the layer's device (a view of the
            given tensor where it can be).
        deltas: {layer: ΔW (d_model, d_mlp)} float32 on the layer's device.
        origin: the path, or ``<dict>`` for an object in memory.
        form: ``"weights"`` (edited weights by parameter name) or ``"deltas"`` (``{layer: ΔW}``).
        reapply_exact: whether ``W + ΔW`` (float32, cast to the model dtype, as ``EditUpdate.apply`` adds it)
            reproduces the edited weights bit for bit at every layer.
    """

    layers: tuple[int, ...]
    weights: dict[int, torch.Tensor]
    deltas: dict[int, torch.Tensor]
    origin: str
    form: str
    reapply_exact: bool

    def hparams(self, key_weighting: str) -> dict[str, Any]:
        return {"source": "imported", "origin": self.origin, "form": self.form, "key_weighting": key_weighting,
                "max_abs_delta": {str(l): float(self.deltas[l].abs().max()) for l in self.layers},
                "reapply_exact": self.reapply_exact}


def read_edit(lm: LM, edited: Any) -> EditedWeights:
    """Read and check ``edited`` against ``lm`` (its current weights are the unedited ones); nothing is
    changed in ``lm``.  Raises a one-line :class:`GeomprobeError` for whatever cannot be diagnosed."""
    src = _open(edited)
    _check_config(lm, src.config)
    per_layer = [k for k in src.names if _layer_key(k) is not None]
    if per_layer and len(per_layer) != len(src.names):
        raise GeomprobeError("the edited weights mix layer indices and parameter names; pass either {layer: ΔW} "
                             "or a state dict of edited weights")
    if per_layer:
        deltas, form = _read_deltas(lm, src), "deltas"
        weights = {l: (lm.weight(l).detach().float() + d).to(lm.weight(l).dtype) for l, d in deltas.items()}
    else:
        weights, form = _read_state_dict(lm, src)
        deltas = {l: (w.float() - lm.weight(l).detach().float()).contiguous() for l, w in weights.items()}
    if not deltas:
        raise GeomprobeError("the edited weights equal the model's: nothing to diagnose (check that the model is "
                             "the unedited one and the weights are the edited ones)")
    layers = tuple(sorted(deltas))
    exact = all(torch.equal((lm.weight(l).detach().float() + deltas[l]).to(weights[l].dtype), weights[l])
                for l in layers)
    return EditedWeights(layers, {l: weights[l] for l in layers}, {l: deltas[l] for l in layers}, src.origin, form,
                         bool(exact))


def check_requests(requests: Sequence[EditRequest], key_weighting: str) -> list[EditRequest]:
    requests = list(requests)
    if not requests:
        raise GeomprobeError("no requests given; pass the requests the edit wrote (keys are read at their subjects)")
    bad = [type(r).__name__ for r in requests if not isinstance(r, EditRequest)]
    if bad:
        raise GeomprobeError(f"requests must be EditRequest objects, got {bad[0]}; load them with gp.load_requests")
    if key_weighting not in KEY_WEIGHTINGS:
        raise GeomprobeError(f"key_weighting {key_weighting!r}; use one of {', '.join(KEY_WEIGHTINGS)}")
    return requests


def value_config(lm: LM, key_weighting: str, config: EditorConfig | None) -> ValueConfig:
    """The value settings whose context prefixes the keys average over: none for bare keys, else ``config``'s
    (default: the model's preset)."""
    if key_weighting == "bare":
        return ValueConfig(contexts="none")  # the bare prompt only: no context text is generated
    from .presets import preset_for

    return (config if config is not None else preset_for(lm)).value


def read_columns(lm: LM, requests: Sequence[EditRequest], layers: Sequence[int], key_weighting: str,
                 value: ValueConfig) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Keys {layer: (d_mlp, n_requests)} at ``layers`` and the residual (d_model, n_requests) after the last of
    them, at the subject's last token, on the current weights, in one forward (float32 CPU).

    The same reads as ``Editor._column_reads`` (one column per request; :mod:`geomprobe.editors.locate` cannot
    be imported here: it imports :mod:`~geomprobe.editors.update`, which imports this module): a request's
    prompts are its edit prompts (:func:`~geomprobe.editors.value.edit_prompts`, bare first), its key is the
    bare prompt's (``"bare"``), ½ bare + ½ the mean over the prefixed copies (``"memit"``) or the flat mean
    (``"flat"``), and its residual is the bare prompt's.
    """
    from ..hooks import read
    from ..positions import tokenize
    from .value import edit_prompts

    layers, last = sorted(layers), max(layers)
    prompts, req_of, is_bare = [], [], []
    for i, r in enumerate(requests):
        for t, p in enumerate(edit_prompts(lm, r, value)):
            prompts.append(p)
            req_of.append(i)
            is_bare.append(t == 0)
    batch = tokenize(lm.tokenizer, prompts)
    with torch.no_grad(), read(lm, layers, ("key", "resid"), positions=batch.subject_last, stop=True) as rd:
        lm.forward(batch)
    req_t, bare_t = torch.tensor(req_of), torch.tensor(is_bare)
    n = len(requests)

    def mean_by(x: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:  # (rows, dim) -> (n, dim)
        out = torch.zeros(n, x.shape[1]).index_add_(0, req_t[sel], x[sel])
        return out / torch.bincount(req_t[sel], minlength=n).clamp_min(1).float()[:, None]

    keys = {}
    for l in layers:
        k = rd["key"][l].float().cpu()
        bare = mean_by(k, bare_t)
        if key_weighting == "flat":
            k_req = mean_by(k, torch.ones_like(bare_t))
        elif key_weighting == "memit" and bool((~bare_t).any()):
            k_req = 0.5 * bare + 0.5 * mean_by(k, ~bare_t)
        else:
            k_req = bare
        keys[l] = k_req.T.contiguous()
    resid = mean_by(rd["resid"][last].float().cpu(), bare_t).T.contiguous()
    return keys, resid


def delivered_value(layer: int, columns: Sequence[str], h: torch.Tensor, z: torch.Tensor) -> Any:
    """The stand-in :class:`~geomprobe.editors.value.ValueResult` of an imported update: one group per column
    (request ``i`` in column ``i``), ``h`` the unedited residual at ``layer`` and ``delta = z − h``, the value the
    edited model delivers there on the bare prompt; no losses, no relation gradients, ``steps_run`` 0,
    ``mode`` :data:`IMPORTED_MODE`."""
    from .value import ValueResult

    h = h.float().cpu().contiguous()
    return ValueResult(layer=int(layer), groups=tuple(columns), members=tuple((i,) for i in range(len(columns))),
                       h=h, delta=(z.float().cpu() - h).contiguous(), losses=(), relation_grads={}, steps_run=0,
                       seconds=0.0, mode=IMPORTED_MODE, peak_memory_mb=0.0)  # type: ignore[arg-type]


def is_imported(update: Any) -> bool:
    """Whether ``update`` was read from edited weights (:meth:`EditUpdate.from_weights`) rather than computed by a
    geomprobe editor: no editor settings, no optimised value (its ``value`` is :func:`delivered_value`)."""
    return (getattr(update, "hparams", None) or {}).get("source") == "imported"


def column_names(requests: Sequence[EditRequest]) -> tuple[str, ...]:
    """One column per request: its ``case_id`` (as the per-request editors name them)."""
    from .value import group_names

    return tuple(group_names(requests, "per-request")[0])


# ---- writing ------------------------------------------------------------------------------------------
def _file(path: str | os.PathLike, default: str) -> Path:
    path = Path(path).expanduser()
    if path.suffix != ".safetensors":
        path = path / default
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_weights(update: Any, lm: LM, path: str | os.PathLike) -> Path:
    """Write the edited MLP output projection weights of ``update`` (an EditUpdate) applied to ``lm``, under their real
    parameter names and in the parameter's layout and dtype (what another tool's saved model holds for them),
    as safetensors: ``path`` itself when it ends in ``.safetensors``, else ``path/model.safetensors``.

    Returns:
        the file written.  ``EditUpdate.from_weights(lm, path, requests)`` reads it back.
    """
    from safetensors.torch import save_file

    update.check_model(lm)
    out = {}
    with update.applied(lm):
        for l in update.layers:
            out[f"{lm.spec.rewrite_name(l)}.weight"] = lm.rewrite_module(l).weight.detach().cpu().clone().contiguous()
    f = _file(path, "model.safetensors")
    save_file(out, str(f), metadata={"format": "pt", "geomprobe": "edited-weights", "editor": update.editor})
    return f


def save_deltas(update: Any, path: str | os.PathLike) -> Path:
    """Write ``{str(layer): ΔW}`` (float32, (d_model, d_mlp) out×in) as safetensors: ``path`` itself when it
    ends in ``.safetensors``, else ``path/deltas.safetensors``.  ``EditUpdate.from_weights`` reads it back exactly."""
    from safetensors.torch import save_file

    f = _file(path, "deltas.safetensors")
    save_file({str(l): update.deltas[l].detach().float().cpu().contiguous() for l in update.layers}, str(f),
              metadata={"format": "pt", "geomprobe": "deltas", "editor": update.editor})
    return f
