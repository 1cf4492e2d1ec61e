"""Editors: every editor raises target probability on the toy worlds; exact apply/revert; sequential editing."""

import pytest
import torch

import geomprobe as gp
from geomprobe.data.forms import render
from geomprobe.editors import EDITORS, EditorConfig
from geomprobe.errors import GeomprobeError, NumericalError
from geomprobe.scoring import target_logprob, with_targets


@pytest.fixture(scope="module")
def toy():
    return gp.load_model("toy-llama", device="cpu")


@pytest.fixture(scope="module")
def toy_requests():
    reqs = gp.load_requests("toy")
    by_subject = {}
    for r in reqs:
        by_subject.setdefault(r.subject, []).append(r)
    multi = [rs for rs in by_subject.values() if len(rs) >= 2]
    return [r for rs in multi[:2] for r in rs[:2]]  # 2 subjects x 2 relations


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GEOMPROBE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _logp(lm, reqs):
    tb = with_targets(lm.tokenizer, [render(r.prompt, r.subject, "declarative") for r in reqs],
                      [r.target_new for r in reqs])
    with torch.no_grad():
        return target_logprob(lm.forward(tb.batch), tb.labels)


def _cfg(toy):
    from geomprobe.editors.presets import preset_for

    return preset_for(toy).with_(n_tokens=4000, value_steps=15)


@pytest.mark.parametrize("name", list(EDITORS) + ["revive(memit)"])
def test_editor_raises_target_probability_and_restores_weights(toy, toy_requests, name):
    before_w = {l: toy.weight(l).detach().clone() for l in range(toy.n_layers)}
    before = _logp(toy, toy_requests)
    upd = gp.editors.get(name, config=_cfg(toy)).compute(toy, toy_requests)
    for l in range(toy.n_layers):  # compute leaves the weights alone
        assert torch.equal(toy.weight(l), before_w[l])
    with upd.applied(toy):
        after = _logp(toy, toy_requests)
    assert (after > before).float().mean() >= 0.75, (name, before, after)
    assert after.mean() > before.mean() + 1.0
    for l in range(toy.n_layers):  # bit-exact restore
        assert torch.equal(toy.weight(l), before_w[l])
    assert upd.seconds > 0 and set(upd.deltas) == set(upd.layers)
    K = upd.keys[upd.layers[-1]]
    assert K.shape[0] == toy.d_mlp and K.shape[1] == len(upd.columns)


def test_merged_editors_use_one_column_per_subject(toy, toy_requests):
    upd = gp.editors.get("rose-no-hki", config=_cfg(toy)).compute(toy, toy_requests)
    assert len(upd.columns) == len({r.subject for r in toy_requests})
    upd2 = gp.editors.get("memit", config=_cfg(toy).with_(value_steps=2)).compute(toy, toy_requests)
    assert len(upd2.columns) == len(toy_requests)


def test_applied_restores_bit_exactly_after_an_exception(toy, toy_requests):
    before = {l: toy.weight(l).detach().clone() for l in range(toy.n_layers)}
    upd = gp.editors.get("rose-no-hki", config=_cfg(toy).with_(value_steps=3)).compute(toy, toy_requests)
    with pytest.raises(RuntimeError):
        with upd.applied(toy):
            assert not torch.equal(toy.weight(upd.layers[0]), before[upd.layers[0]])
            raise RuntimeError("boom")
    for l in range(toy.n_layers):
        assert torch.equal(toy.weight(l), before[l])


def test_sequential_editing_alphaedit_accumulates_keys(toy, toy_requests):
    cfg = _cfg(toy).with_(value_steps=5, projection_mode="relative", projection_threshold=1e-2)
    ed = gp.editors.get("alphaedit", config=cfg)
    before = {l: toy.weight(l).detach().clone() for l in range(toy.n_layers)}
    history, handles = [], []
    try:
        for chunk in (toy_requests[:2], toy_requests[2:]):
            upd = ed.compute(toy, chunk, history=history)
            handles.append(upd.apply(toy))
            history.append(upd)
        # with the first batch's keys in K_p, the second update disturbs them less than without
        l = history[1].layers[-1]
        K1 = history[0].keys[l]
        alone = ed.compute(toy, toy_requests[2:])
        with_hist = (history[1].deltas[l] @ K1).norm() / history[1].deltas[l].norm()
        without = (alone.deltas[l] @ K1).norm() / alone.deltas[l].norm()
        assert with_hist < 0.5 * without, (with_hist, without)
    finally:
        for h in reversed(handles):
            h.revert()
    for l in range(toy.n_layers):
        assert torch.equal(toy.weight(l), before[l])


def test_bad_inputs_raise_clear_errors(toy, toy_requests):
    with pytest.raises(GeomprobeError, match="unknown editor"):
        gp.editors.get("memmit")
    with pytest.raises(GeomprobeError, match="no requests"):
        gp.editors.get("rose").compute(toy, [])
    with pytest.raises(GeomprobeError, match="layer"):
        gp.editors.get("rose", config=EditorConfig(layers=(1, 99))).compute(toy, toy_requests)
    with pytest.raises(NumericalError):  # λ = 0 and a rank-deficient KKᵀ: singular system, no NaN weights
        gp.editors.get("memit", config=_cfg(toy).with_(lam=0.0, value_steps=2)).compute(toy, toy_requests)


@pytest.mark.parametrize("mode", ["joint", "hki"])
def test_length_sorted_micro_batches_change_nothing(toy, toy_requests, mode):
    from dataclasses import replace

    from geomprobe.editors.value import optimize_values

    cfg = replace(_cfg(toy).value, steps=4, early_stop=0.0)
    whole = optimize_values(toy, toy_requests, 1, mode, replace(cfg, micro_batch=10_000))  # one padded batch
    small = optimize_values(toy, toy_requests, 1, mode, replace(cfg, micro_batch=3))  # sorted, trimmed chunks
    assert float((whole.delta - small.delta).norm() / whole.delta.norm()) < 1e-4  # float32 rounding only
    assert whole.losses == pytest.approx(small.losses, rel=1e-4)


def test_mis_shaped_updates_and_value_results_are_refused():
    from geomprobe.editors import EditUpdate, ValueResult
    from geomprobe.data.requests import EditRequest

    d, m, n, layer = 6, 10, 2, 1
    req = EditRequest("france", "capital", "the capital of {} is", "rome", "paris")
    h = torch.zeros(d, n)

    def value(**kw):
        args = dict(layer=layer, groups=("a", "b"), members=((0,), (1,)), h=h, delta=torch.zeros(d, n), losses=(0.0,),
                    relation_grads={}, steps_run=1, seconds=0.0)
        return ValueResult(**{**args, **kw})

    def update(**kw):
        args = dict(editor="x", layers=(layer,), deltas={layer: torch.zeros(d, m)}, keys={layer: torch.zeros(m, n)},
                    resids={layer: torch.zeros(d, n)}, z=h, h=h, columns=("a", "b"), requests=(req, req))
        return EditUpdate(**{**args, **kw})

    value(), update()  # well-shaped ones pass
    bad_values = [dict(members=((0,),)), dict(delta=torch.zeros(d, n + 1)), dict(h=torch.zeros(d + 1, n)),
                  dict(h=torch.zeros(d))]
    for kw in bad_values:
        with pytest.raises(GeomprobeError, match="ValueResult") as e:
            value(**kw)
        assert "\n" not in str(e.value)
    bad_updates = [dict(keys={layer: torch.zeros(m, n + 1)}), dict(resids={layer: torch.zeros(d + 1, n)}),
                   dict(z=torch.zeros(d, n + 1)), dict(h=torch.zeros(d + 1, n)), dict(columns=("a",)),
                   dict(deltas={layer: torch.zeros(d, m + 1)}), dict(keys={})]
    for kw in bad_updates:
        with pytest.raises(GeomprobeError, match="EditUpdate") as e:
            update(**kw)
        assert "\n" not in str(e.value)


def test_editor_config_round_trips_through_hparams(toy, toy_requests):
    cfg = _cfg(toy).with_(value_steps=2, lam=3.0, alpha=0.5, projection_mode="relative")
    assert EditorConfig.from_dict(cfg.as_dict()) == cfg
    upd = gp.editors.get("memit", config=cfg).compute(toy, toy_requests[:1])
    assert upd.editor_config() == cfg
    with pytest.raises(GeomprobeError, match="unknown"):
        EditorConfig.from_dict({**cfg.as_dict(), "lamda": 1.0})
    with pytest.raises(GeomprobeError, match="unknown editor option"):
        gp.editors.get("memit", value_stpes=3)


def test_update_rule_registry_is_what_editors_and_counterfactuals_solve_with(toy):
    from geomprobe.editors import EDITORS, RULES, UPDATE_RULES, rules
    from geomprobe.probes.deviation import counterfactual_delta

    assert set(RULES) == set(UPDATE_RULES) and {rule for _, rule in EDITORS.values()} <= set(RULES)
    g = torch.Generator().manual_seed(0)
    R, K = torch.randn(8, 3, generator=g), torch.randn(12, 3, generator=g)
    Q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g))
    C = Q @ torch.diag(torch.tensor([1.0] * 8 + [1e-4] * 4)) @ Q.T  # positive definite, 4 near-null directions
    cfg = EditorConfig(layers=(0,), lam=2.0, alpha=0.7)
    for rule in ("covariance", "identity", "projection"):
        assert torch.equal(counterfactual_delta(rule, R, K, cfg, C), rules.solve(rule, R, K, cfg, C))
    assert torch.equal(rules.solve("covariance", R, K, cfg, C), gp.linalg.memit_delta(R, K, C, 2.0))
    W = torch.randn(8, 12, generator=g)
    v = W @ K[:, 0] + R[:, 0]
    assert torch.equal(rules.solve("rank-one", R[:, :1], K[:, :1], cfg, C, W=W),
                       gp.linalg.rome_delta(v, K[:, 0], W, C))
    with pytest.raises(GeomprobeError, match="unknown update rule"):
        rules.solve("ridge", R, K, cfg, C)
    with pytest.raises(GeomprobeError, match="covariance"):
        rules.solve("covariance", R, K, cfg)


def test_presets_follow_the_model_not_its_folder_name(toy, tmp_path, tiny_dirs):
    import shutil

    from geomprobe.editors.presets import PRESETS, preset_for, preset_key

    assert preset_key(toy) == "toy-llama" and preset_for(toy) == PRESETS["toy-llama"]
    copy = shutil.copytree(gp.models.builtin.TOY_DIR / "toy-llama", tmp_path / "my-own-copy")
    lm = gp.load_model(str(copy), device="cpu")
    assert preset_key(lm) == "toy-llama" and preset_for(lm) == PRESETS["toy-llama"]
    impostor = shutil.copytree(tiny_dirs["llama"], tmp_path / "smollm2-135m")
    other = gp.load_model(str(impostor), device="cpu")
    assert preset_key(other) is None and preset_for(other) not in PRESETS.values()
