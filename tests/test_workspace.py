"""The shared workspace: its home module, and the value cache (safetensors + JSON manifest, never pickle)."""

import json
import pickle
from dataclasses import fields
from types import SimpleNamespace

import pytest
import torch

from geomprobe.editors.value import ValueResult
from geomprobe.workspace import QUICK, Settings, ValueCache, Workspace


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32) if t.dtype == torch.float32 else t


def _same(a: ValueResult, b: ValueResult) -> None:
    """Field by field, tensors bit for bit (NaN payloads and -0.0 included)."""
    for f in fields(ValueResult):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(_bits(x), _bits(y)), f.name
        elif f.name == "relation_grads":
            assert list(x) == list(y) and all(list(x[s]) == list(y[s]) for s in x)
            for s in x:
                for k in x[s]:
                    assert x[s][k].dtype == y[s][k].dtype and torch.equal(_bits(x[s][k]), _bits(y[s][k])), (s, k)
        elif f.name == "losses":
            assert json.dumps(x) == json.dumps(y) and type(y) is tuple
        else:
            assert x == y and type(x) is type(y), f.name


def _fake_lm(name="toy-llama"):
    return SimpleNamespace(name=name, identity={"name": name, "sha": "abc"}, dtype=torch.float32)


def _value(seed=0) -> ValueResult:
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(8, 3, generator=g)
    h[0, 0], h[1, 1], h[2, 2] = float("nan"), -0.0, float("inf")
    big = torch.randn(4, 8, generator=g)  # gradients as views of one storage (as the optimiser records them)
    grads = {0: {("Paris", "capital"): big[0], ("Paris", "river"): big[1]}, 5: {("Rome", "capital"): big[2]}}
    return ValueResult(layer=2, groups=("Paris", "Rome", "c3"), members=((0, 1), (2,), (3,)), h=h,
                       delta=torch.randn(8, 3, generator=g), losses=(3.25, 1 / 3, float("nan")),
                       relation_grads=grads, steps_run=6, seconds=0.123456789, mode="joint", peak_memory_mb=17.5)


def test_settings_and_workspace_live_in_geomprobe_workspace():
    import geomprobe.workspace as home

    assert Workspace.__module__ == home.__name__ and isinstance(QUICK, Settings)


def test_value_cache_round_trip_is_bit_exact(tmp_path):
    cache = ValueCache(_fake_lm(), root=tmp_path, log=lambda s: None)
    ident = {"mode": "joint", "layer": 2, "requests": [{"subject": "Paris"}]}
    v = _value()
    assert cache.save(ident, v)
    path = cache.path(ident)
    assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.tmp*"))
    _same(v, cache.load(ident))
    assert cache.load({**ident, "layer": 3}) is None  # another identity: another file, none there


def test_value_cache_never_unpickles_a_planted_file(tmp_path, monkeypatch):
    """A pickle planted under the old name (``.pt``) or the new one is never executed: the cache reads with
    safetensors and json only, logs and recomputes."""
    ran = tmp_path / "planted-code-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    def no_pickle(*a, **k):
        raise AssertionError("the value cache must not unpickle")

    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    logs = []
    cache = ValueCache(_fake_lm(), root=tmp_path, log=logs.append)
    ident = {"mode": "joint", "layer": 2}
    path = cache.path(ident)
    path.parent.mkdir(parents=True)
    for p in (path.with_suffix(".pt"), path):
        p.write_bytes(pickle.dumps(Payload()))
    assert cache.load(ident) is None  # no manifest: nothing read
    v = _value()
    man = {"format": 1, "sha": cache.sha(ident), "identity": ident}
    path.with_suffix(".json").write_text(json.dumps(man))
    assert cache.load(ident) is None and logs and "recomputing" in logs[-1]
    assert not ran.exists()
    # a good write replaces the planted file; a manifest of another identity or write is refused
    cache.save(ident, v)
    _same(v, cache.load(ident))
    good = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**good, "identity": {**ident, "layer": 9}}))
    assert cache.load(ident) is None
    path.with_suffix(".json").write_text(json.dumps({**good, "sha": "0" * 20}))
    assert cache.load(ident) is None
    assert not ran.exists()


def test_workspace_reuses_cached_values_bit_exactly(tmp_path, monkeypatch):
    import geomprobe as gp

    monkeypatch.setenv("GEOMPROBE_CACHE", str(tmp_path))
    lm = gp.load_model("toy-llama", device="cpu")
    settings = Settings(value_steps=2)
    logs = []
    ws = Workspace(lm, "toy", tmp_path, settings, log=logs.append, cache=True)
    reqs = ws.batch[:3]
    v = ws.values("joint", reqs)
    files = list((tmp_path / "values").rglob("*"))
    assert {p.suffix for p in files if p.is_file()} == {".safetensors", ".json"}

    def no_optimise(*a, **k):
        raise AssertionError("cached values must not be optimised again")

    monkeypatch.setattr("geomprobe.editors.optimize_values", no_optimise)
    logs2 = []
    again = Workspace(lm, "toy", tmp_path, settings, log=logs2.append, cache=True).values("joint", reqs)
    assert any("from cache" in line for line in logs2)
    _same(v, again)
    assert v.relation_grads  # joint mode records relation gradients; they came back too


def test_value_cache_skips_a_result_of_another_layout(tmp_path):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Other:
        layer: int

    logs = []
    cache = ValueCache(_fake_lm(), root=tmp_path, log=logs.append)
    assert cache.save({"mode": "joint"}, Other(1)) is False and "not cached" in logs[-1]
    assert not list(tmp_path.rglob("*.safetensors"))


@pytest.mark.parametrize("name", ["toy-llama", "org/model"])
def test_value_cache_folder_is_per_model(tmp_path, name):
    cache = ValueCache(_fake_lm(name), root=tmp_path)
    assert cache.folder.parent == tmp_path / "values"
