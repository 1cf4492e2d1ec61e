"""Architecture specs as data: where the layers and the rewrite module live, per ``config.model_type``.

The rewrite module of layer ``l`` is the MLP output projection ``W_l`` (``down_proj`` / ``c_proj`` /
``fc_out`` / ``dense_4h_to_h``).  Its *input* is the key ``k`` (for gated MLPs ``act(gate(x)) * up(x)``),
its *output* the value ``v = W k + b``.  GPT-2 stores ``W`` as a ``Conv1D`` (in→out, i.e. transposed):
the layout is part of the spec and is checked against the module class, never guessed from shapes.

A user can override the spec for any model with a module-name template such as
``"model.layers.{}.mlp.down_proj"`` (see :func:`spec_from_template`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ..errors import ArchSpecError, ModelLoadError

Layout = Literal["linear", "conv1d"]


@dataclass(frozen=True)
class ArchSpec:
    """Where to find things in one architecture.  Templates take the layer index.

    Attributes:
        model_type: ``config.model_type`` this spec is for.
        layer: module name template of a decoder block, e.g. ``"model.layers.{}"``.
        rewrite: module name template of the MLP output projection (the edited matrix).
        layout: ``"linear"`` (``weight`` is out×in) or ``"conv1d"`` (``weight`` is in×out).
        final_norm: module name of the final norm before the LM head.
        post_mlp_norm: module name template of a norm applied to the MLP output before it joins
            the residual stream (Gemma2/3, OLMo2), or None.  Where set, value ≠ residual contribution.
        fused_gate_up: the MLP computes gate and up in one matrix (Phi-3); informational.
    """

    model_type: str
    layer: str
    rewrite: str
    layout: Layout = "linear"
    final_norm: str = "model.norm"
    post_mlp_norm: str | None = None
    fused_gate_up: bool = False

    def __post_init__(self) -> None:
        for name in ("layer", "rewrite"):
            if getattr(self, name).count("{}") != 1:
                raise ArchSpecError(f"ArchSpec.{name} {getattr(self, name)!r} needs exactly one '{{}}' for the layer index")
        if self.post_mlp_norm is not None and self.post_mlp_norm.count("{}") != 1:
            raise ArchSpecError("ArchSpec.post_mlp_norm needs exactly one '{}' for the layer index")
        if self.layout not in ("linear", "conv1d"):
            raise ArchSpecError(f"ArchSpec.layout {self.layout!r} must be 'linear' or 'conv1d'")

    @property
    def value_is_residual(self) -> bool:
        """True when the MLP output is added to the residual stream unchanged."""
        return self.post_mlp_norm is None

    def layer_name(self, layer: int) -> str:
        return self.layer.format(layer)

    def rewrite_name(self, layer: int) -> str:
        return self.rewrite.format(layer)


_LLAMA_LIKE = dict(layer="model.layers.{}", rewrite="model.layers.{}.mlp.down_proj")

#: Built-in specs keyed by ``config.model_type``.
SPECS: dict[str, ArchSpec] = {
    "gpt2": ArchSpec("gpt2", "transformer.h.{}", "transformer.h.{}.mlp.c_proj", "conv1d", "transformer.ln_f"),
    "gptj": ArchSpec("gptj", "transformer.h.{}", "transformer.h.{}.mlp.fc_out", "linear", "transformer.ln_f"),
    "gpt_neox": ArchSpec(
        "gpt_neox", "gpt_neox.layers.{}", "gpt_neox.layers.{}.mlp.dense_4h_to_h", "linear", "gpt_neox.final_layer_norm"
    ),
    "llama": ArchSpec("llama", **_LLAMA_LIKE),
    "mistral": ArchSpec("mistral", **_LLAMA_LIKE),
    "qwen2": ArchSpec("qwen2", **_LLAMA_LIKE),
    "qwen3": ArchSpec("qwen3", **_LLAMA_LIKE),
    "phi3": ArchSpec("phi3", **_LLAMA_LIKE, fused_gate_up=True),
    "gemma2": ArchSpec("gemma2", **_LLAMA_LIKE, post_mlp_norm="model.layers.{}.post_feedforward_layernorm"),
    "gemma3_text": ArchSpec("gemma3_text", **_LLAMA_LIKE, post_mlp_norm="model.layers.{}.post_feedforward_layernorm"),
    "olmo2": ArchSpec("olmo2", **_LLAMA_LIKE, post_mlp_norm="model.layers.{}.post_feedforward_layernorm"),
}
# Multimodal Gemma3 checkpoints report model_type "gemma3" but their text stack is a gemma3_text model
SPECS["gemma3"] = replace(
    SPECS["gemma3_text"],
    model_type="gemma3",
    layer="model.language_model.layers.{}",
    rewrite="model.language_model.layers.{}.mlp.down_proj",
    final_norm="model.language_model.norm",
    post_mlp_norm="model.language_model.layers.{}.post_feedforward_layernorm",
)


def spec_for(model_type: str) -> ArchSpec:
    """The built-in spec of ``model_type``; a one-line error naming the override otherwise."""
    try:
        return SPECS[model_type]
    except KeyError:
        raise ModelLoadError(
            f"unknown model type {model_type!r}: geomprobe has specs for {', '.join(sorted(SPECS))}; "
            "pass rewrite='<path>.{}.<mlp out proj>' (e.g. 'model.layers.{}.mlp.down_proj') to load_model"
        ) from None


def spec_from_template(model_type: str, rewrite: str, layout: Layout | None = None,
                       final_norm: str | None = None) -> ArchSpec:
    """A spec from a user's rewrite-module template, e.g. ``"model.layers.{}.mlp.down_proj"``.

    The decoder-block template is the rewrite template cut after the ``{}`` component; the layout is
    decided from the module class at load time when not given.
    """
    if rewrite.count("{}") != 1:
        raise ArchSpecError(f"rewrite template {rewrite!r} needs exactly one '{{}}' for the layer index")
    head, _ = rewrite.split("{}")
    base = SPECS.get(model_type)
    return ArchSpec(
        model_type=model_type,
        layer=head + "{}",
        rewrite=rewrite,
        layout=layout or (base.layout if base else "linear"),
        final_norm=final_norm or (base.final_norm if base else "model.norm"),
        post_mlp_norm=base.post_mlp_norm if base else None,
    )
