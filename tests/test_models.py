"""Model loading, ArchSpecs for every supported architecture, and the W k + b = v contract."""

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM

import geomprobe as gp
from geomprobe.errors import ArchSpecError, ModelLoadError
from geomprobe.hooks import read
from geomprobe.models.arch import SPECS, ArchSpec
from geomprobe.positions import render_pairs, tokenize
from tiny import KINDS, tiny_tokenizer

PROMPTS = ["the capital of france is", "where is the eiffel tower located ?", "john lives in rome"]
SUBJECTS = ["france", "eiffel tower", "john"]


@pytest.mark.parametrize("kind", KINDS)
def test_keys_reproduce_values_through_weights(tiny_lms, kind):
    lm = tiny_lms[kind]
    batch = tokenize(lm.tokenizer, render_pairs(PROMPTS, SUBJECTS))
    layers = list(range(lm.n_layers))
    with torch.no_grad(), read(lm, layers, ("key", "value"), positions=batch.subject_last) as r:
        lm.forward(batch)
    for layer in layers:
        k, v = r["key"][layer], r["value"][layer]
        assert k.shape == (3, lm.d_mlp) and v.shape == (3, lm.d_model)
        b = lm.bias(layer)
        pred = k @ lm.weight(layer).T + (b if b is not None else 0)
        torch.testing.assert_close(pred, v, rtol=1e-5, atol=1e-5)


def test_gpt2_weight_is_conv1d_transposed_view(tiny_lms):
    lm = tiny_lms["gpt2"]
    mod = lm.rewrite_module(1)
    assert isinstance(mod, transformers.pytorch_utils.Conv1D)
    assert lm.weight(1).shape == (lm.d_model, lm.d_mlp) == mod.weight.T.shape
    assert lm.weight(1).data_ptr() == mod.weight.data_ptr()  # a view, so edits land in the parameter


def test_post_norm_models_say_value_is_not_residual(tiny_lms):
    assert not tiny_lms["gemma2"].spec.value_is_residual
    assert tiny_lms["llama"].spec.value_is_residual
    assert SPECS["phi3"].fused_gate_up


def test_identity_fingerprint_differs_between_models(tiny_lms):
    a, b = tiny_lms["llama"].identity, tiny_lms["mistral"].identity
    assert a["config_sha"] != b["config_sha"]
    assert set(a) >= {"name", "model_type", "config_sha", "weight_checksum"}


def _tiny_bloom(tmp_path):
    tok = tiny_tokenizer()
    cfg = transformers.BloomConfig(n_layer=2, hidden_size=32, n_head=4, vocab_size=len(tok))
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return tmp_path


def test_unknown_model_type_is_one_clear_error_and_override_works(tmp_path):
    d = _tiny_bloom(tmp_path)
    with pytest.raises(ModelLoadError) as e:
        gp.load_model(str(d), device="cpu")
    msg = str(e.value)
    assert "bloom" in msg and "rewrite=" in msg and "\n" not in msg
    lm = gp.load_model(str(d), device="cpu", rewrite="transformer.h.{}.mlp.dense_4h_to_h")
    assert lm.spec.layer == "transformer.h.{}" and lm.n_layers == 2


def test_wrong_layout_or_module_is_caught(tiny_dirs):
    with pytest.raises(ArchSpecError, match="conv1d"):
        wrong = ArchSpec("gpt2", "transformer.h.{}", "transformer.h.{}.mlp.c_proj", "linear", "transformer.ln_f")
        gp.load_model(str(tiny_dirs["gpt2"]), device="cpu", rewrite=wrong)
    # pointing at a module that is not the MLP output projection fails the probe forward's W k + b = v check
    with pytest.raises(ArchSpecError):
        gp.load_model(str(tiny_dirs["llama"]), device="cpu", rewrite="model.layers.{}.mlp.up_proj")


def test_missing_directory_is_one_clear_error(tmp_path):
    with pytest.raises(ModelLoadError) as e:
        gp.load_model(str(tmp_path / "nope"), device="cpu")
    assert "\n" not in str(e.value) and "built-in" in str(e.value)


def test_archspec_rejects_malformed_templates():
    with pytest.raises(ArchSpecError):
        ArchSpec("x", layer="model.layers", rewrite="model.layers.{}.mlp.down_proj")


def test_device_map_keeps_tensors_on_layer_devices(tiny_dirs):
    pytest.importorskip("accelerate")
    lm = gp.load_model(str(tiny_dirs["llama"]), device_map="cpu")
    k = gp.keys(lm, PROMPTS, SUBJECTS, [0, 2])
    assert k.shape == (3, 2, lm.d_mlp) and k.dtype == torch.float32 and k.device.type == "cpu"
    assert lm.device_of(2) == lm.weight(2).device
