"""Key covariance statistics: exactness, one pass, cache, mismatch refusal, resume, caps, corpora."""

import json
import random
import shutil
import sys
import warnings

import pytest
import torch
from tiny import WORDS, save_tiny

import geomprobe as gp
from geomprobe import stats
from geomprobe.errors import CacheMismatchError, GeomprobeError
from geomprobe.hooks import read
from geomprobe.positions import tokenize
from geomprobe.stats import Corpus, KeyCovariance, bench_covariance, key_covariance


def _docs(n=12, seed=0, lo=3, hi=30):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


@pytest.fixture
def docs():
    return _docs()


@pytest.fixture
def txt(tmp_path, docs):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(docs) + "\n", "utf-8")
    return path


def _direct(lm, docs, layers, max_len=256, limit=None):
    """Keys of every real token, one document per forward (no padding), K.T @ K / n in float64."""
    keys = {l: [] for l in layers}
    for d in docs:
        b = tokenize(lm.tokenizer, [d], max_length=max_len)
        with torch.no_grad(), read(lm, layers, ("key",)) as r:
            lm.forward(b)
        for l in layers:
            keys[l].append(r["key"][l][0][b.attention_mask[0].bool()].double())
    out = {}
    for l in layers:
        K = torch.cat(keys[l])[:limit]
        out[l] = (K.T @ K / len(K), K.mean(0), len(K))
    return out


class Counter:
    """Counts forwards of the whole model and runs of each decoder block."""

    def __init__(self, lm):
        self.calls = 0
        self.blocks = [0] * lm.n_layers
        self.handles = [lm.model.register_forward_pre_hook(self._model)]
        for i in range(lm.n_layers):
            self.handles.append(lm.layer_module(i).register_forward_pre_hook(lambda m, a, i=i: self._block(i)))

    def _model(self, m, a):
        self.calls += 1

    def _block(self, i):
        self.blocks[i] += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def _quiet(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return key_covariance(progress=False, **kw)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_matches_direct_computation(tiny_lms, txt, docs, kind):
    lm = tiny_lms[kind]
    layers = [0, 1, 2]
    with pytest.warns(UserWarning, match="has only"):
        res = key_covariance(lm, layers, corpus=str(txt), n_tokens=10**6, batch_size=5, cache=False, progress=False)
    ref = _direct(lm, docs, layers)
    for l in layers:
        C, mean, n = ref[l]
        kc = res[l]
        assert kc.layer == l and kc.n_tokens == n
        assert kc.C.dtype == torch.float32 and kc.C.shape == (lm.d_mlp, lm.d_mlp)
        assert torch.allclose(kc.C.double(), C, rtol=1e-5, atol=1e-7 * float(C.abs().max()))
        assert torch.allclose(kc.mean.double(), mean, rtol=1e-5, atol=1e-6 * float(mean.abs().max()))
        assert kc.model == lm.identity and kc.corpus["kind"] == "txt" and kc.dtype == "float32"
    # uncentred: C is not the centred covariance
    assert not torch.allclose(res[1].C, res[1].C - torch.outer(res[1].mean, res[1].mean), atol=1e-8)


def test_one_pass_equals_per_layer_and_stops_early(tiny_lms, txt):
    lm = tiny_lms["llama"]
    with Counter(lm) as count:
        both = _quiet(lm=lm, layers=[1, 0], corpus=str(txt), n_tokens=150, batch_size=4, cache=False)
    assert list(both) == [1, 0]
    assert count.blocks[2] == 0 and count.blocks[1] == count.calls > 0  # block 2 never ran
    for l in (0, 1):
        single = _quiet(lm=lm, layers=[l], corpus=str(txt), n_tokens=150, batch_size=4, cache=False)[l]
        assert single.n_tokens == both[l].n_tokens == 150
        assert torch.allclose(single.C, both[l].C, rtol=1e-6, atol=1e-9)


def test_cache_reused_and_smaller_requests_served(tiny_lms, txt, tmp_path):
    lm = tiny_lms["gpt2"]
    kw = dict(lm=lm, layers=[0, 2], corpus=str(txt), batch_size=4, cache_dir=tmp_path / "c")
    with Counter(lm) as count:
        first = _quiet(n_tokens=100, **kw)
    assert count.calls > 0
    folder = stats.stats_dir(lm, str(txt), tmp_path / "c")
    man = json.loads((folder / "layer_2.json").read_text())
    assert man["layer"] == 2 and man["n_tokens"] == 100 and man["model"] == lm.identity and man["max_len"] == 256
    assert (folder / "layer_0.safetensors").is_file() and not (folder / "partial.safetensors").exists()
    with Counter(lm) as count:
        again = _quiet(n_tokens=100, **kw)
        smaller = _quiet(n_tokens=50, **kw)  # served by the larger cache, as is
    assert count.calls == 0
    assert torch.equal(again[2].C, first[2].C) and smaller[0].n_tokens == 100
    with Counter(lm) as count:
        more = _quiet(n_tokens=150, **kw)  # the cache holds fewer: rebuilt
    assert count.calls > 0 and more[2].n_tokens == 150
    with Counter(lm) as count:  # one layer cached, one not: only the missing one is built
        mixed = _quiet(n_tokens=150, lm=lm, layers=[0, 1], corpus=str(txt), batch_size=4, cache_dir=tmp_path / "c")
    assert count.calls > 0 and count.blocks[2] == 0
    assert torch.equal(mixed[0].C, more[0].C)


def test_cache_refused_for_another_model(tiny_lms, txt, tmp_path):
    lm = tiny_lms["llama"]
    _quiet(lm=lm, layers=[1], corpus=str(txt), n_tokens=60, cache_dir=tmp_path)
    other = gp.load_model(str(save_tiny("llama", tmp_path / "elsewhere" / "llama", seed=1)), device="cpu")
    assert stats.stats_dir(other, str(txt), tmp_path) == stats.stats_dir(lm, str(txt), tmp_path)
    with pytest.raises(CacheMismatchError) as err:
        _quiet(lm=other, layers=[1], corpus=str(txt), n_tokens=60, cache_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "another model" in msg and "delete" in msg and "cache_dir" in msg
    # the same model loaded from another path is the same model: served from the cache
    same = gp.load_model(str(save_tiny("llama", tmp_path / "copy" / "llama", seed=0)), device="cpu")
    with Counter(same) as count:
        _quiet(lm=same, layers=[1], corpus=str(txt), n_tokens=60, cache_dir=tmp_path)
    assert count.calls == 0


def test_cache_refused_for_another_corpus_dtype_and_max_len(tiny_lms, txt, tmp_path, tiny_dirs):
    lm = tiny_lms["llama"]
    _quiet(lm=lm, layers=[0], corpus=str(txt), n_tokens=60, cache_dir=tmp_path)
    changed = tmp_path / "other" / "corpus.txt"  # same name, other text: same cache folder
    changed.parent.mkdir()
    changed.write_text("\n\n".join(_docs(seed=5)), "utf-8")
    with pytest.raises(CacheMismatchError, match="another corpus") as err:
        _quiet(lm=lm, layers=[0], corpus=str(changed), n_tokens=60, cache_dir=tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(CacheMismatchError, match="max_len=256"):
        _quiet(lm=lm, layers=[0], corpus=str(txt), n_tokens=60, cache_dir=tmp_path, max_len=8)
    bf16 = gp.load_model(str(tiny_dirs["llama"]), device="cpu", dtype="bfloat16")
    fp32_dir, bf16_dir = stats.stats_dir(lm, str(txt), tmp_path), stats.stats_dir(bf16, str(txt), tmp_path)
    assert fp32_dir != bf16_dir  # two dtypes keep their statistics side by side
    shutil.copytree(fp32_dir, bf16_dir)  # a float32 cache where the bf16 model looks: refused
    with pytest.raises(CacheMismatchError, match="float32"):
        _quiet(lm=bf16, layers=[0], corpus=str(txt), n_tokens=60, cache_dir=tmp_path)


def test_resume_after_interruption(tiny_lms, txt, tmp_path, monkeypatch):
    lm = tiny_lms["llama"]
    kw = dict(lm=lm, layers=[0, 2], corpus=str(txt), n_tokens=10**6, batch_size=2, checkpoint_every=2)
    full = _quiet(cache=False, **kw)
    with Counter(lm) as count:
        _quiet(cache_dir=tmp_path / "ref", **kw)
    total_forwards = count.calls

    def boom(step, acc):
        if step == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(stats, "_on_batch", boom)
    with pytest.raises(KeyboardInterrupt):
        _quiet(cache_dir=tmp_path, **kw)
    folder = stats.stats_dir(lm, str(txt), tmp_path)
    assert (folder / "partial.safetensors").is_file() and not (folder / "layer_0.json").exists()
    monkeypatch.setattr(stats, "_on_batch", lambda step, acc: None)
    with Counter(lm) as count:
        resumed = _quiet(cache_dir=tmp_path, **kw)
    assert count.calls == total_forwards - 4  # continued after the checkpoint at batch 4
    assert not (folder / "partial.safetensors").exists()
    for l in (0, 2):
        assert resumed[l].n_tokens == full[l].n_tokens
        assert torch.allclose(resumed[l].C, full[l].C, rtol=1e-6, atol=1e-9)
        assert torch.allclose(resumed[l].mean, full[l].mean, rtol=1e-6, atol=1e-9)
    # resume=False ignores a checkpoint and starts afresh
    monkeypatch.setattr(stats, "_on_batch", boom)
    with pytest.raises(KeyboardInterrupt):
        _quiet(cache_dir=tmp_path / "b", **kw)
    monkeypatch.setattr(stats, "_on_batch", lambda step, acc: None)
    with Counter(lm) as count:
        fresh = _quiet(cache_dir=tmp_path / "b", resume=False, **kw)
    assert count.calls == total_forwards and torch.allclose(fresh[0].C, full[0].C, rtol=1e-6, atol=1e-9)


def test_n_tokens_cap(tiny_lms, txt, docs):
    lm = tiny_lms["llama"]
    res = key_covariance(lm, [1], corpus=str(txt), n_tokens=37, batch_size=1, cache=False, progress=False)[1]
    C, mean, n = _direct(lm, docs, [1], limit=37)[1]
    assert res.n_tokens == n == 37
    assert torch.allclose(res.C.double(), C, rtol=1e-5, atol=1e-7 * float(C.abs().max()))
    # batched: still exactly n_tokens (the last batch is cut)
    assert key_covariance(lm, [1], corpus=str(txt), n_tokens=37, batch_size=5, cache=False,
                          progress=False)[1].n_tokens == 37


def test_max_len_truncates_long_documents(tiny_lms, tmp_path):
    lm = tiny_lms["gpt2"]  # 128 learned positions: an untruncated 600-token document would fail
    long_doc = " ".join(random.Random(1).choice(WORDS) for _ in range(600))
    path = tmp_path / "long.txt"
    path.write_text(long_doc + "\n\nthe capital of france is paris .\n", "utf-8")
    with pytest.warns(UserWarning):
        res = key_covariance(lm, [0, 2], corpus=str(path), n_tokens=10**6, max_len=16, cache=False, progress=False)
    assert res[2].n_tokens == 16 + 7
    C, _, _ = _direct(lm, [long_doc, "the capital of france is paris ."], [2], max_len=16)[2]
    assert torch.allclose(res[2].C.double(), C, rtol=1e-5, atol=1e-7 * float(C.abs().max()))


def test_jsonl_corpus(tiny_lms, txt, docs, tmp_path):
    lm = tiny_lms["llama"]
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(docs)) + "\n", "utf-8")
    assert Corpus(str(path)).kind == "jsonl" and Corpus(str(path)).identity()["kind"] == "jsonl"
    a = key_covariance(lm, [2], corpus=str(path), n_tokens=100, cache=False, progress=False)[2]
    b = key_covariance(lm, [2], corpus=str(txt), n_tokens=100, cache=False, progress=False)[2]
    assert torch.allclose(a.C, b.C, rtol=1e-6, atol=1e-9)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "the city"}\n{"body": "x"}\n', "utf-8")
    with pytest.raises(GeomprobeError, match="line 2") as err:
        key_covariance(lm, [0], corpus=str(bad), n_tokens=100, cache=False, progress=False)
    assert "\n" not in str(err.value)


def test_empty_or_missing_corpus_is_one_line_error(tiny_lms, tmp_path):
    lm = tiny_lms["llama"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n", "utf-8")
    for path, what in ((empty, "no text"), (tmp_path / "missing.txt", "not found")):
        with pytest.raises(GeomprobeError, match=what) as err:
            key_covariance(lm, [0], corpus=str(path), n_tokens=100, cache_dir=tmp_path, progress=False)
        assert "\n" not in str(err.value)


def test_datasets_name_without_datasets(tiny_lms, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(GeomprobeError, match="local .txt/.jsonl file") as err:
        key_covariance(tiny_lms["llama"], [0], corpus="wikitext:wikitext-103-raw-v1:train", n_tokens=10,
                       cache=False, progress=False)
    assert "\n" not in str(err.value)
    assert Corpus("wikitext:wikitext-103-raw-v1:train").kind == "datasets"


def test_builtin_corpus_is_deterministic(tiny_lms, tmp_path, monkeypatch):
    lm = tiny_lms["llama"]
    c = Corpus(seed=3, sample_batch=4, sample_tokens=8)

    def take(corpus, n, start=0):
        return [d for _, d in zip(range(n), corpus.documents(lm, start))]

    first, again = take(c, 30), take(c, 30)
    other = take(Corpus(seed=4, sample_batch=4, sample_tokens=8), 30)
    assert [i for i, _ in first] == list(range(30))
    first, again, other = [d for _, d in first], [d for _, d in again], [d for _, d in other]
    assert first == again and first != other
    assert c.identity()["seed"] == 3 and c.identity() != Corpus(seed=4).identity()
    fixed = stats._builtin_sentences()
    assert sum(d in fixed for d in first) == 18 and fixed[:8] == tuple(first[4:12])  # units: 4 samples + 8 sentences
    assert set(stats.SENTENCES) <= set(fixed) and len(fixed) > len(stats.SENTENCES)  # + the built-in prompts
    # starting mid-stream yields the same documents (resume skips whole sampled chunks)
    assert [d for _, d in take(c, 10, start=20)] == first[20:30]
    monkeypatch.setenv("GEOMPROBE_CACHE", str(tmp_path))
    res = key_covariance(lm, [0, 1], corpus=c, n_tokens=200, progress=False)
    assert res[0].n_tokens == 200 and res[0].corpus["kind"] == "builtin"
    assert (tmp_path / "stats" / "llama" / "builtin-seed3" / "layer_1.json").is_file()


def test_key_covariance_validation():
    with pytest.raises(ValueError, match="square"):
        KeyCovariance(0, torch.zeros(3, 4), torch.zeros(3), 10)
    with pytest.raises(ValueError, match="mean"):
        KeyCovariance(0, torch.eye(3), torch.zeros(4), 10)
    with pytest.raises(ValueError, match="non-finite"):
        KeyCovariance(0, torch.full((2, 2), float("nan")), torch.zeros(2), 10)


def test_bench_covariance(tiny_lms, txt, monkeypatch):
    """The bench times what it says: every build it times computes the same statistics as key_covariance,
    the one-pass and per-layer builds stop after their deepest layer, the 'full' baseline and the plain
    forwards run the whole model, all on the same batches.  (Timings are only checked to be measured.)"""
    lm = tiny_lms["llama"]
    ref = _quiet(lm=lm, layers=[0, 1], corpus=str(txt), n_tokens=150, batch_size=4, cache=False)
    with Counter(lm) as count:
        _quiet(lm=lm, layers=[0], corpus=str(txt), n_tokens=150, batch_size=4, cache=False)
    n_batches = count.calls
    assert n_batches > 1

    built = []

    class Recording(stats._Acc):
        def __init__(self, lm, layers):
            super().__init__(lm, layers)
            built.append(self)

    monkeypatch.setattr(stats, "_Acc", Recording)
    with Counter(lm) as count:
        out = bench_covariance(lm, [1, 0], str(txt), n_tokens=150, batch_size=4)
    assert out["n_tokens"] == 150 and out["layers"] == [0, 1]
    # warm-up [0], one pass [0, 1], per layer [0], [1] stopping early, then [0], [1] running the whole model
    assert [a.layers for a in built] == [[0], [0, 1], [0], [1], [0], [1]]
    for acc in built:
        assert acc.tokens == 150
        for l in acc.layers:
            C, mean = acc.result(l)
            assert torch.allclose(C, ref[l].C, rtol=1e-5, atol=1e-6 * float(ref[l].C.abs().max()))
            assert torch.allclose(mean, ref[l].mean, rtol=1e-5, atol=1e-6 * float(ref[l].mean.abs().max()))
    # 7 passes over the batches: 5 builds, 2 'full' per-layer builds, 1 plain forward pass; block 2 (never
    # asked for) runs only in the 3 whole-model passes, block 1 also in the two builds that include it
    assert count.calls == 7 * n_batches
    assert count.blocks == [7 * n_batches, 5 * n_batches, 3 * n_batches]
    for key in ("one_pass_s", "per_layer_s", "per_layer_full_s", "forward_s"):
        assert 0 < out[key] < float("inf"), key
    assert out["speedup"] == pytest.approx(out["per_layer_s"] / out["one_pass_s"])
    assert out["speedup_vs_full"] == pytest.approx(out["per_layer_full_s"] / out["one_pass_s"])
    assert out["forward_tok_s"] == pytest.approx(150 / out["forward_s"])
