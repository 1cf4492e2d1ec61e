"""Model loading, ArchSpecs for every supported architecture, and the W k + b = v contract."""

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM

import geomprobe as gp
from geomprobe.errors import ArchSpecError, ModelLoadError
from geomprobe.hooks import read
from geomprobe.models.arch import SPECS, ArchSpec
from geomprobe.models.load import LM
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


def _value_and_residual_increment(lm, layer):
    """The rewrite module's output v and what the MLP branch adds to the residual stream at ``layer``.

    The increment is measured by ablation: the block's output minus its output with v replaced by zeros
    (attention at the same block does not see v, so everything else stays put).
    """
    batch = tokenize(lm.tokenizer, render_pairs(PROMPTS, SUBJECTS))
    got = {}

    def layer_out(mod, args, out):
        got.setdefault("out", []).append((out[0] if isinstance(out, tuple) else out).detach())

    def value(mod, args, out):
        got["v"] = out.detach()

    def zero(mod, args, out):
        return torch.zeros_like(out)

    hooks = [lm.layer_module(layer).register_forward_hook(layer_out)]
    with torch.no_grad():
        h = lm.rewrite_module(layer).register_forward_hook(value)
        lm.forward(batch)
        h.remove()
        h = lm.rewrite_module(layer).register_forward_hook(zero)
        lm.forward(batch)
        h.remove()
    for h in hooks:
        h.remove()
    full, ablated = got["out"]
    mask = batch.attention_mask.bool()
    return got["v"][mask], (full - ablated)[mask]


@pytest.mark.parametrize("kind", KINDS)
def test_post_norm_models_say_value_is_not_residual(tiny_lms, kind):
    """``value_is_residual`` is what the model does: v joins the residual stream as is (pre-norm blocks), or
    through the post-MLP norm the spec names (Gemma 2/3), which changes it."""
    lm = tiny_lms[kind]
    for layer in (0, lm.n_layers - 1):
        v, inc = _value_and_residual_increment(lm, layer)
        assert v.shape == inc.shape and v.abs().max() > 1e-3  # the branch writes something
        if lm.spec.value_is_residual:
            torch.testing.assert_close(inc, v, rtol=1e-4, atol=1e-5)
        else:
            norm = lm.module(lm.spec.post_mlp_norm.format(layer))
            with torch.no_grad():
                torch.testing.assert_close(inc, norm(v), rtol=1e-4, atol=1e-5)
            assert (inc - v).norm() > 0.1 * v.norm(), "the post-MLP norm left v unchanged"
    assert lm.spec.value_is_residual == (kind not in ("gemma2", "gemma3_text"))
    mlp = lm.layer_module(0).mlp
    assert lm.spec.fused_gate_up == hasattr(mlp, "gate_up_proj")


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


def _acc_devices(lm, layers, txt, monkeypatch):
    """The devices of the key-statistics accumulators after the first batch: {layer: {device types}}."""
    seen = {}

    class Seen(Exception):
        pass

    def spy(step, acc):
        seen.update({l: {acc.kk[l].device.type, acc.k[l].device.type} for l in layers})
        raise Seen  # stop here: a 'meta' accumulator holds no numbers to hand back

    with monkeypatch.context() as m, pytest.raises(Seen):
        m.setattr(gp.stats, "_on_batch", spy)
        gp.stats.key_covariance(lm, layers, corpus=str(txt), n_tokens=10**6, batch_size=2, cache=False,
                                progress=False)
    return seen


def test_device_map_keeps_tensors_on_layer_devices(tiny_dirs, tmp_path, monkeypatch):
    """Under a device map each layer's tensors live on that layer's device.

    One CPU gives every layer the same device, so a second device is simulated: ``device_of`` reports
    ``meta`` (shapes, no numbers) for layer 2.  Per-layer state created on the input device or the CPU
    instead of ``lm.device_of(layer)`` shows up as a CPU tensor there.  The real multi-GPU run is
    ``test_device_map_across_two_gpus``.
    """
    pytest.importorskip("accelerate")
    lm = gp.load_model(str(tiny_dirs["llama"]), device_map="cpu")
    assert all(lm.device_of(l) == lm.weight(l).device for l in range(lm.n_layers))
    k = gp.keys(lm, PROMPTS, SUBJECTS, [0, 2])  # keys are handed back on the CPU whatever the device map
    assert k.shape == (3, 2, lm.d_mlp) and k.dtype == torch.float32 and k.device.type == "cpu"
    ref = gp.keys(gp.load_model(str(tiny_dirs["llama"]), device="cpu"), PROMPTS, SUBJECTS, [0, 2])
    torch.testing.assert_close(k, ref)

    txt = tmp_path / "corpus.txt"
    txt.write_text("\n\n".join(PROMPTS * 2), "utf-8")
    assert _acc_devices(lm, [0, 2], txt, monkeypatch) == {0: {"cpu"}, 2: {"cpu"}}
    real = LM.device_of
    monkeypatch.setattr(LM, "device_of", lambda self, l: torch.device("meta") if self is lm and l == 2
                        else real(self, l))
    assert lm.device_of(2).type == "meta" and lm.device_of(0).type == "cpu"
    # the key statistics accumulate every layer's sums where that layer lives
    assert _acc_devices(lm, [0, 2], txt, monkeypatch) == {0: {"cpu"}, 2: {"meta"}}


@pytest.mark.gpu
def test_device_map_across_two_gpus(tiny_dirs, tmp_path):
    """A real split: layers 0-1 on cuda:0, layer 2 and the head on cuda:1."""
    pytest.importorskip("accelerate")
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    dmap = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.layers.0": 0, "model.layers.1": 0,
            "model.layers.2": 1, "model.norm": 1, "lm_head": 1}
    lm = gp.load_model(str(tiny_dirs["llama"]), device_map=dmap)
    assert lm.device_of(0) == torch.device("cuda:0") and lm.device_of(2) == torch.device("cuda:1")
    cpu = gp.load_model(str(tiny_dirs["llama"]), device="cpu")
    k = gp.keys(lm, PROMPTS, SUBJECTS, [0, 2])
    assert k.device.type == "cpu"
    torch.testing.assert_close(k, gp.keys(cpu, PROMPTS, SUBJECTS, [0, 2]), rtol=1e-4, atol=1e-5)
    txt = tmp_path / "corpus.txt"
    txt.write_text("\n\n".join(PROMPTS * 2), "utf-8")
    kw = dict(corpus=str(txt), n_tokens=10**6, cache=False, progress=False)
    with pytest.warns(UserWarning):
        split = gp.stats.key_covariance(lm, [0, 2], **kw)
    with pytest.warns(UserWarning):
        ref = gp.stats.key_covariance(cpu, [0, 2], **kw)
    for l in (0, 2):
        torch.testing.assert_close(split[l].C, ref[l].C, rtol=1e-3, atol=1e-5)
    reqs = gp.load_requests("same-subject")[:2]
    upd = gp.editors.get("memit", config=gp.editors.preset_for(lm).with_(layers=(0, 2), n_tokens=200,
                                                                         corpus=str(txt))).compute(lm, reqs)
    for l in upd.layers:
        assert upd.deltas[l].device == lm.device_of(l) and torch.isfinite(upd.deltas[l]).all()
