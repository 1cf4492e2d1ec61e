"""Tiny random models of every supported architecture, built locally (no hub), for mechanics tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from geomprobe.data.forms import render
from geomprobe.editors.update import EditUpdate
from geomprobe.editors.value import ValueResult
from geomprobe.hooks import read
from geomprobe.positions import tokenize

WORDS = ("the capital of is paris france berlin germany rome italy question : answer ? . , what where "
         "who tell me instruction in a few words located city country speaks language eiffel tower "
         "apple iphone 11 16 microsoft windows 10 john lives works at").split()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", "\n", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = transformers.convert_slow_tokenizer.normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


def _cfg(kind: str, vocab: int):
    common = dict(vocab_size=vocab, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    llama_like = dict(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=48, max_position_embeddings=128, **common)
    if kind == "gpt2":
        return transformers.GPT2Config(n_layer=3, n_embd=32, n_head=4, n_positions=128, **common)
    if kind == "gptj":
        return transformers.GPTJConfig(n_layer=3, n_embd=32, n_head=4, n_positions=128, rotary_dim=4, **common)
    if kind == "gpt_neox":
        return transformers.GPTNeoXConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=4,
                                          intermediate_size=48, max_position_embeddings=128, **common)
    if kind == "llama":
        return transformers.LlamaConfig(**llama_like)
    if kind == "mistral":
        return transformers.MistralConfig(**llama_like)
    if kind == "qwen2":
        return transformers.Qwen2Config(**llama_like)
    if kind == "qwen3":
        return transformers.Qwen3Config(head_dim=8, **llama_like)
    if kind == "phi3":
        return transformers.Phi3Config(**llama_like)
    if kind == "gemma2":
        return transformers.Gemma2Config(head_dim=8, **llama_like)
    if kind == "gemma3_text":
        return transformers.Gemma3TextConfig(head_dim=8, **llama_like)
    raise ValueError(kind)


KINDS = ("gpt2", "gptj", "gpt_neox", "llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text")


def save_tiny(kind: str, out: Path, seed: int = 0) -> Path:
    """Build and save a tiny random model of ``kind`` with the tiny tokenizer; returns the directory."""
    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    model = AutoModelForCausalLM.from_config(_cfg(kind, len(tok)))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def fact_update(lm, reqs, layer):
    """An EditUpdate with δ = 0 whose 'targets' are the model's own answers."""
    reqs = tuple(replace(r, target_new=r.target_true) for r in reqs)
    batch = tokenize(lm.tokenizer, [render(r.prompt, r.subject, "declarative") for r in reqs])
    with torch.no_grad(), read(lm, [layer], ("resid",), positions=batch.subject_last) as rd:
        lm.forward(batch)
    h = rd["resid"][layer].float().T.contiguous()
    n = len(reqs)
    value = ValueResult(layer, tuple(r.case_id for r in reqs), tuple((i,) for i in range(n)), h, torch.zeros_like(h),
                        (0.0,), {}, 0, 0.0)
    zero = torch.zeros(lm.d_model, lm.d_mlp)
    return EditUpdate("facts", (layer,), {layer: zero}, {layer: torch.zeros(lm.d_mlp, n)}, {layer: torch.zeros_like(h)},
                      value.z, h, value.groups, reqs, value=value, model=dict(lm.identity))
