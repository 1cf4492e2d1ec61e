"""Load a causal LM with its tokenizer and ArchSpec, validated by one probe forward.

``load_model`` accepts a built-in name (``toy-gpt2``, ``toy-llama``, ``smollm2-135m``), a local
directory or a HuggingFace id ``org/name`` (only where a hub or a local HF cache is reachable); other names fail at
once with the nearest built-in (:func:`geomprobe.editors.options.check_model`), never after minutes of hub retries.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..errors import ArchSpecError, GeomprobeError, ModelLoadError
from ..positions import tokenize
from .arch import ArchSpec, spec_for, spec_from_template
from .builtin import BUILTIN, resolve_builtin

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class LM:
    """A loaded model: HF model + tokenizer + ArchSpec, with accessors for the rewrite modules.

    Frozen: :func:`load_model` measures everything (identity, block output arity) before building it.

    Attributes:
        model: the HF causal LM, in eval mode, parameters frozen.
        tokenizer: its fast tokenizer (pad token set).
        spec: where layers and rewrite modules live.
        name: what it was loaded from (built-in name, path or HF id).
        identity: a fingerprint of the model (name, config hash, weight checksum) for caches.
        block_tuple_len: length of the tuple a decoder block returns (0: a bare tensor); resuming a
            forward (:func:`geomprobe.hooks.resume_from`) mimics it.
    """

    model: nn.Module
    tokenizer: Any
    spec: ArchSpec
    name: str
    identity: dict = field(default_factory=dict)
    block_tuple_len: int = 0

    # ---- shape facts -------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return int(self.model.config.get_text_config().num_hidden_layers)

    @property
    def dtype(self) -> torch.dtype:
        return self.rewrite_module(0).weight.dtype

    @property
    def d_model(self) -> int:
        return self.weight(0).shape[0]

    @property
    def d_mlp(self) -> int:
        return self.weight(0).shape[1]

    # ---- modules -----------------------------------------------------------------------
    def module(self, name: str) -> nn.Module:
        try:
            return self.model.get_submodule(name)
        except AttributeError:
            raise ArchSpecError(f"module {name!r} not found in {type(self.model).__name__}; fix the ArchSpec entry "
                                f"for model_type {self.spec.model_type!r} or pass rewrite=...") from None

    def layer_module(self, layer: int) -> nn.Module:
        self._check_layer(layer)
        return self.module(self.spec.layer_name(layer))

    def rewrite_module(self, layer: int) -> nn.Module:
        self._check_layer(layer)
        return self.module(self.spec.rewrite_name(layer))

    def layer_container(self) -> tuple[nn.ModuleList, str]:
        """The ModuleList holding the decoder blocks, and its dotted name."""
        name = self.spec.layer.split(".{}")[0]
        return self.module(name), name

    def _check_layer(self, layer: int) -> None:
        n = int(self.model.config.get_text_config().num_hidden_layers)
        if not 0 <= int(layer) < n:
            raise GeomprobeError(f"layer {layer} out of range: the model has layers 0..{n - 1}")

    def device_of(self, layer: int) -> torch.device:
        """Device of layer ``layer``'s rewrite weight (differs per layer under ``device_map``)."""
        return self.rewrite_module(layer).weight.device

    @property
    def input_device(self) -> torch.device:
        """Device the input ids must be on (that of the input embedding)."""
        return self.model.get_input_embeddings().weight.device

    # ---- rewrite weights ---------------------------------------------------------------
    def weight(self, layer: int) -> torch.Tensor:
        """``W_l`` as (d_model, d_mlp), out×in — a *view* of the parameter (transposed for Conv1D)."""
        w = self.rewrite_module(layer).weight
        return w.T if self.spec.layout == "conv1d" else w

    def bias(self, layer: int) -> torch.Tensor | None:
        return getattr(self.rewrite_module(layer), "bias", None)

    def forward(self, batch: Any) -> torch.Tensor:
        """Logits (batch, seq, vocab) for a :class:`~geomprobe.positions.Batch`."""
        inputs = {k: v.to(self.input_device) for k, v in batch.inputs().items()}
        return self.model(**inputs, use_cache=False).logits


def _dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return None
    try:
        return _DTYPES[str(dtype)]
    except KeyError:
        raise GeomprobeError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16") from None


def _resolve_device(device: Any) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GeomprobeError("CUDA was asked for but torch sees no GPU; pass --device cpu")
    return device


def load_model(name_or_path: str, dtype: Any = None, device: Any = None, device_map: Any = None,
               rewrite: str | ArchSpec | None = None, tokenizer: Any = None, validate: bool = True) -> LM:
    """Load a causal LM for editing and probing.

    Args:
        name_or_path: built-in name (see ``geomprobe models``), local directory, or HF id.
        dtype: torch dtype or name; default float32 on CPU and the checkpoint's dtype on CUDA.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available.
        device_map: passed to ``from_pretrained`` (accelerate); overrides ``device``.
        rewrite: module-name template of the rewrite module, e.g. ``"model.layers.{}.mlp.down_proj"``,
            for architectures geomprobe has no spec for (or to override one), or a whole :class:`ArchSpec`.
        tokenizer: a tokenizer object (or directory) to use instead of the one ``AutoTokenizer`` picks
            (transformers 5 forces e.g. ``Qwen2Tokenizer`` for ``model_type=qwen2`` whatever was saved).
        validate: run the probe forward that checks ``W k + b ≈ v`` at the first and last layer.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    if str(name_or_path) not in BUILTIN and not Path(str(name_or_path)).expanduser().is_dir():
        from .names import check_model

        check_model(str(name_or_path))  # a typo or an unreachable hub fails here, not after minutes of retries
    path, source = resolve_builtin(name_or_path)
    torch_dtype = _dtype(dtype)
    kwargs: dict[str, Any] = {}
    if device_map is not None:
        kwargs["device_map"] = device_map
        target = None
    else:
        target = _resolve_device(device)
        if torch_dtype is None and target.type == "cpu":
            torch_dtype = torch.float32
    kwargs["dtype"] = torch_dtype if torch_dtype is not None else "auto"
    local = Path(path).is_dir()
    if not local and (str(path).startswith(("/", ".", "~")) or Path(path).exists()):
        raise ModelLoadError(
            f"{name_or_path!r} is neither a built-in model ({', '.join(BUILTIN)}) nor a model directory; "
            "pass a built-in name, a directory holding config.json, or an HF id"
        )
    try:
        if tokenizer is None or isinstance(tokenizer, (str, Path)):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer or path, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=local, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"cannot load {name_or_path!r} ({first[:160]}); check the name/path or load it "
                             "where the model hub or a local copy is reachable") from None
    if target is not None:
        model.to(target)
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model_type = model.config.model_type
    if isinstance(rewrite, ArchSpec):
        spec = rewrite
    else:
        spec = spec_from_template(model_type, rewrite) if rewrite else spec_for(model_type)
    # a provisional view for the checks below; the LM handed out is built once everything is measured
    probe = LM(model=model, tokenizer=tokenizer, spec=spec, name=str(name_or_path))
    _check_layout(probe)
    identity = _identity(probe, source)
    tuple_len = validate_spec(probe) if validate else _block_tuple_len(probe)
    return LM(model=model, tokenizer=tokenizer, spec=spec, name=str(name_or_path), identity=identity,
              block_tuple_len=tuple_len)


def _check_layout(lm: LM) -> None:
    """The spec's layout must match the module class (Conv1D is in→out; never guessed from shapes)."""
    mod = lm.rewrite_module(0)
    is_conv = isinstance(mod, Conv1D)
    if lm.spec.layout == "conv1d" and not is_conv:
        raise ArchSpecError(f"ArchSpec layout 'conv1d' for {lm.spec.model_type!r} but {lm.spec.rewrite_name(0)} is "
                            f"{type(mod).__name__}; set layout='linear'")
    if lm.spec.layout == "linear" and not isinstance(mod, nn.Linear):
        if is_conv:
            raise ArchSpecError(f"{lm.spec.rewrite_name(0)} is a transformers Conv1D (in→out) but the ArchSpec says "
                                "'linear'; set layout='conv1d'")
        raise ArchSpecError(f"{lm.spec.rewrite_name(0)} is {type(mod).__name__}, not a Linear; point the ArchSpec "
                            "rewrite template at the MLP output projection")


def _identity(lm: LM, source: str) -> dict:
    """Model fingerprint for caches: name, model type, config hash and a checksum of layer-0 weights."""
    cfg = {k: v for k, v in lm.model.config.to_dict().items() if k not in ("_name_or_path", "name_or_path")}
    cfg_hash = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]
    w = lm.weight(0).detach().float().cpu()
    w_sum = f"{float(w.sum()):.6e}/{float(w.abs().sum()):.6e}"
    return {"name": lm.name, "source": source, "model_type": lm.spec.model_type, "n_layers": lm.n_layers,
            "d_model": lm.d_model, "d_mlp": lm.d_mlp, "config_sha": cfg_hash, "weight_checksum": w_sum}


_PROBE_TEXT = "The quick brown fox jumps over the lazy dog"


def _probe_forward(lm: LM, layers: Sequence[int], text: str) -> tuple[dict, dict, int]:
    """One forward of ``text``: keys and values of the rewrite modules at ``layers`` (full sequences), and
    the length of the tuple block 0 returns (0 for a bare tensor).

    Hooks are registered here directly (not through :mod:`geomprobe.hooks`, which builds on this module)
    and always removed.
    """
    batch = tokenize(lm.tokenizer, [text])
    keys: dict[int, torch.Tensor] = {}
    values: dict[int, torch.Tensor] = {}
    tuple_len: list[int] = []

    def on_rewrite(mod, inp, out, layer):
        keys[layer], values[layer] = inp[0].detach(), out.detach()

    handles = [lm.layer_module(0).register_forward_hook(
        lambda m, i, o: tuple_len.append(len(o) if isinstance(o, tuple) else 0))]
    try:
        for layer in layers:
            handles.append(lm.rewrite_module(layer).register_forward_hook(
                lambda m, i, o, layer=layer: on_rewrite(m, i, o, layer)))
        with torch.no_grad():
            lm.forward(batch)
    except ArchSpecError:
        raise
    except Exception as e:  # a wrong spec usually fails inside the forward
        raise ArchSpecError(f"probe forward failed for model_type {lm.spec.model_type!r} ({type(e).__name__}: "
                            f"{str(e)[:120]}); check the ArchSpec entry or pass rewrite=...") from None
    finally:
        for h in handles:
            h.remove()
    return keys, values, (tuple_len[0] if tuple_len else 0)


def _block_tuple_len(lm: LM) -> int:
    """Whether (and how long a tuple) decoder blocks return — needed to resume a forward."""
    return _probe_forward(lm, [], _PROBE_TEXT)[2]


def validate_spec(lm: LM, text: str = _PROBE_TEXT) -> int:
    """One probe forward: at the first and last layer, ``W k + b`` must reproduce the module output.

    Returns:
        the length of the tuple a decoder block returns (0: a bare tensor), needed to resume a forward;
        :func:`load_model` stores it as ``LM.block_tuple_len``.
    """
    layers = sorted({0, lm.n_layers - 1})
    keys, values, tuple_len = _probe_forward(lm, layers, text)
    reads = {"key": keys, "value": values}
    hidden = int(lm.model.config.get_text_config().hidden_size)
    if lm.d_model != hidden:
        raise ArchSpecError(f"{lm.spec.rewrite_name(0)} outputs {lm.d_model} features but the residual stream has "
                            f"{hidden}; point the ArchSpec rewrite template at the MLP output projection")
    for layer in layers:
        if layer not in reads["key"]:
            raise ArchSpecError(f"rewrite module {lm.spec.rewrite_name(layer)} did not run in the forward; "
                                "fix the ArchSpec rewrite template")
        k = reads["key"][layer].float()
        v = reads["value"][layer].float()
        w = lm.weight(layer).float()
        if k.shape[-1] != w.shape[1]:
            raise ArchSpecError(f"key width {k.shape[-1]} != W in-features {w.shape[1]} at {lm.spec.rewrite_name(layer)}; "
                                f"fix the ArchSpec layout (now {lm.spec.layout!r})")
        b = lm.bias(layer)
        pred = k.to(w.device) @ w.T + (b.float() if b is not None else 0)
        err = (pred - v.to(pred.device)).norm() / v.norm().clamp_min(1e-12)
        tol = 1e-3 if lm.dtype == torch.float32 else 3e-2
        if not torch.isfinite(err) or err > tol:
            raise ArchSpecError(f"W k + b does not reproduce the output of {lm.spec.rewrite_name(layer)} "
                                f"(relative error {float(err):.2e}); fix the ArchSpec entry (layout {lm.spec.layout!r})")
    return tuple_len
