"""One GGUF → safetensors conversion for the built-in models fetched as a GGUF (SmolLM2, Qwen2.5).

:func:`convert` dequantises a *verified* GGUF (the caller has checked its checksum) with transformers, saves an
fp32 safetensors copy and its tokenizer, reloads the copy and checks it (tokenizer class, special tokens, ids of
the probe texts, chat template; logits within 1e-5 of the GGUF-loaded model, the reference computed before the
copy loads so one model is in memory at a time; the same tying of the output matrix), and writes the manifest last
(atomic rename): a crash leaves no manifest, so the cache never looks complete.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError

MANIFEST_NAME = "geomprobe_manifest.json"
PROBE_TEXTS = (
    "The capital of France is",
    "In 1999 there were 42 cats;  x = 3.14\n\nÉtat 日本語 🤖",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
)
AGAIN = "delete the cache folder and report this with your transformers version"


def _plain_model(model):
    """Drop the GGUF quantizer from a fully dequantised model so it saves as plain safetensors."""
    packed = sorted({type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()})
    if packed:
        raise ModelLoadError(
            f"the GGUF model still holds packed modules {packed}; upgrade transformers or uninstall `kernels`"
        )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    return model


def load_gguf(gguf_path: Path):
    """Load the GGUF with transformers, dequantised to fp32.

    Returns:
        (model, tokenizer): a plain ``LlamaForCausalLM`` in fp32 and the GGUF tokenizer, pad set.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("accelerate") is None:
        raise ModelLoadError("transformers needs accelerate to read GGUF files; run `pip install accelerate`")
    folder, name = str(Path(gguf_path).parent), Path(gguf_path).name
    kwargs = {"gguf_file": name, "dtype": torch.float32}
    try:
        from transformers import GgufConfig  # transformers >= 5: keep nothing packed
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # transformers 4.x always dequantises GGUF
        pass
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = _plain_model(AutoModelForCausalLM.from_pretrained(folder, **kwargs)).float().eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def check_tokenizer(original, reloaded) -> None:
    """Raise ModelLoadError unless ``reloaded`` behaves exactly like ``original`` (class, ids, specials, chat)."""
    if type(reloaded) is not type(original):
        raise ModelLoadError(
            f"saved tokenizer reloads as {type(reloaded).__name__}, not {type(original).__name__}; "
            f"report this with your transformers version"
        )
    fix = "delete the cache folder and report this with your transformers version"
    for attr in ("bos_token", "eos_token", "pad_token", "unk_token"):
        before, after = getattr(original, attr), getattr(reloaded, attr)
        if before != after or (before is None and attr != "unk_token"):
            raise ModelLoadError(f"tokenizer {attr} is {after!r} after saving, {before!r} before; {fix}")
    for text in PROBE_TEXTS:
        if original(text).input_ids != reloaded(text).input_ids:
            raise ModelLoadError(f"saved tokenizer gives other ids for {text!r}; {fix}")
    if not reloaded.chat_template or reloaded.chat_template != original.chat_template:
        raise ModelLoadError(f"the chat template was lost when saving the tokenizer; {fix}")


def _logits(model, tokenizer) -> list:
    import torch

    with torch.no_grad():
        return [model(input_ids=tokenizer(t, return_tensors="pt").input_ids, use_cache=False).logits
                for t in PROBE_TEXTS]


def convert(fields: dict[str, Any], gguf_path: Path, out_dir: Path, model_type: str | None = None) -> dict:
    """Dequantise ``gguf_path`` into ``out_dir`` (fp32 safetensors + tokenizer), check the copy, write the manifest:
    ``fields`` (the model's own: name, source, checksum, …) plus versions, dtype, parameter count, tying, tokenizer
    class, the logit difference and the conversion time.  ``model_type``: the architecture the file must load as
    (None: any).

    Returns:
        The manifest dict (also written to ``out_dir/geomprobe_manifest.json``).
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_gguf(gguf_path)
    if model_type is not None and model.config.model_type != model_type:
        raise ModelLoadError(f"{gguf_path} loads as model_type {model.config.model_type!r}, not {model_type!r}; "
                             f"{AGAIN}")
    if not tokenizer.chat_template:
        raise ModelLoadError(f"{gguf_path} holds no chat template; delete it and let geomprobe fetch it again")
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    reference = _logits(model, tokenizer)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del model
    gc.collect()
    check_tokenizer(tokenizer, AutoTokenizer.from_pretrained(out_dir))
    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    diff = max(float((a - b).abs().max()) for a, b in zip(reference, _logits(reloaded, tokenizer)))
    if not diff <= 1e-5:
        raise ModelLoadError(f"safetensors copy differs from the GGUF model (max |logit diff| {diff:g}); {AGAIN}")
    if bool(getattr(reloaded.config, "tie_word_embeddings", False)) != tied:
        raise ModelLoadError(f"the saved model ties its output matrix differently from the GGUF; {AGAIN}")
    n_params = sum(p.numel() for p in reloaded.parameters())
    del reloaded
    manifest = {**fields, "transformers_version": transformers.__version__, "torch_version": torch.__version__,
                "dtype": "float32", "n_parameters": n_params, "tie_word_embeddings": tied,
                "tokenizer_class": type(tokenizer).__name__, "logits_max_abs_diff": diff,
                "convert_seconds": round(time.perf_counter() - start, 2), "created_unix": int(time.time())}
    tmp = out_dir / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out_dir / MANIFEST_NAME)
    return manifest


def place(convert_into, scratch: Path, target: Path, complete) -> Path:
    """Convert into ``scratch/model`` (``convert_into(staged)``; transformers' own progress bar over the GGUF tensors
    only on a terminal), then move it to ``target`` in one rename; if another process finished first
    (``complete()``), its copy stays.  A stale or incomplete ``target`` is replaced."""
    import contextlib
    import io
    import shutil

    from ..progress import is_interactive

    staged = Path(scratch) / "model"
    quiet = contextlib.redirect_stderr(io.StringIO()) if not is_interactive() else contextlib.nullcontext()
    with quiet:
        convert_into(staged)
    if complete():
        return target
    if target.exists():
        shutil.rmtree(target)
    try:
        os.replace(staged, target)
    except OSError:
        if not complete():
            raise
    return target


__all__ = ["MANIFEST_NAME", "PROBE_TEXTS", "check_tokenizer", "convert", "load_gguf", "place"]
