"""Hooks: exact reads, additions, overrides, early stop, resume; nothing survives an exception."""

import pytest
import torch

from geomprobe.hooks import active_hooks, add_to_residual, head_only_at, override_value, read, resume_from, stop_after
from geomprobe.positions import render_pairs, tokenize
from tiny import KINDS

PROMPTS = ["the capital of france is", "where is the eiffel tower located ?", "john lives in rome"]
SUBJECTS = ["france", "eiffel tower", "john"]


def _batch(lm):
    return tokenize(lm.tokenizer, render_pairs(PROMPTS, SUBJECTS))


def test_no_hook_survives_an_exception(tiny_lms):
    lm = tiny_lms["llama"]
    batch = _batch(lm)
    container, _ = lm.layer_container()
    blocks = list(container)
    before = active_hooks(lm.model)
    vec = torch.ones(lm.d_model)
    with pytest.raises(RuntimeError, match="boom"):
        with read(lm, [0, 1, 2], ("key", "value", "resid")), add_to_residual(lm, 1, batch.subject_last, vec), \
                override_value(lm, 2, batch.subject_last, vec), resume_from(lm, 2, torch.zeros(3, 8, lm.d_model)), \
                stop_after(lm, 2):
            assert active_hooks(lm.model) > before
            raise RuntimeError("boom")
    assert active_hooks(lm.model) == before
    assert list(container) == blocks  # skipped blocks are put back


@pytest.mark.parametrize("kind", KINDS)
def test_resume_from_reproduces_the_full_forward(tiny_lms, kind):
    lm = tiny_lms[kind]
    batch = _batch(lm)
    with torch.no_grad(), read(lm, range(lm.n_layers), ("resid",)) as r:
        full = lm.forward(batch)
    for layer in range(1, lm.n_layers + 1):
        with torch.no_grad(), resume_from(lm, layer, r["resid"][layer - 1]):
            resumed = lm.forward(batch)
        torch.testing.assert_close(resumed, full, rtol=1e-4, atol=1e-5)


def test_add_to_residual_matches_resume_and_carries_gradients(tiny_lms):
    lm = tiny_lms["gpt2"]
    batch = _batch(lm)
    layer = 1
    delta = torch.randn(3, lm.d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), read(lm, [layer], ("resid",)) as r:
        lm.forward(batch)
    h = r["resid"][layer].clone()
    h[torch.arange(3), batch.subject_last] += delta
    with torch.no_grad(), resume_from(lm, layer + 1, h):
        expected = lm.forward(batch)
    vec = delta.clone().requires_grad_(True)
    with add_to_residual(lm, layer, batch.subject_last, vec):
        got = lm.forward(batch)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    (g,) = torch.autograd.grad(got[:, -1].logsumexp(-1).sum(), vec)
    assert g.shape == vec.shape and g.abs().sum() > 0


def test_override_value_with_itself_is_identity_and_changes_otherwise(tiny_lms):
    lm = tiny_lms["llama"]
    batch = _batch(lm)
    with torch.no_grad(), read(lm, [1], ("value",), positions=batch.subject_last) as r:
        base = lm.forward(batch)
    with torch.no_grad(), override_value(lm, 1, batch.subject_last, r["value"][1]):
        same = lm.forward(batch)
    with torch.no_grad(), override_value(lm, 1, batch.subject_last, r["value"][1] + 5.0):
        other = lm.forward(batch)
    torch.testing.assert_close(same, base)
    assert (other - base).abs().max() > 1e-3


def test_stop_after_reads_the_same_keys_and_skips_later_layers(tiny_lms):
    lm = tiny_lms["gpt_neox"]
    batch = _batch(lm)
    with torch.no_grad(), read(lm, [0, 2], ("key",)) as full:
        lm.forward(batch)
    ran = []
    h = lm.layer_module(2).register_forward_hook(lambda *a: ran.append(2))
    try:
        with torch.no_grad(), read(lm, [0], ("key",)) as early, stop_after(lm, 0):
            lm.forward(batch)
    finally:
        h.remove()
    assert ran == []
    torch.testing.assert_close(early["key"][0], full["key"][0])


def test_read_rejects_unknown_kind(tiny_lms):
    with pytest.raises(ValueError):
        with read(tiny_lms["llama"], [0], ("keys",)):
            pass


@pytest.mark.parametrize("kind", KINDS)
def test_head_only_at_returns_the_full_logits_at_those_positions(tiny_lms, kind):
    lm = tiny_lms[kind]
    batch = _batch(lm)
    pos = torch.tensor([1, batch.input_ids.shape[1] - 1])
    with torch.no_grad():
        full = lm.forward(batch)
        with head_only_at(lm, pos):
            some = lm.forward(batch)
    assert some.shape == (full.shape[0], 2, full.shape[2])
    assert torch.allclose(some, full[:, pos], atol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_read_with_stop_matches_a_full_forward_and_skips_later_blocks(tiny_lms, kind):
    lm = tiny_lms[kind]
    batch = _batch(lm)
    kinds = ("key", "value", "resid")
    with torch.no_grad(), read(lm, [0, 1], kinds, positions=batch.subject_last) as full:
        lm.forward(batch)
    ran = []
    handles = [lm.layer_module(l).register_forward_hook(lambda *a, l=l: ran.append(l)) for l in range(lm.n_layers)]
    before = active_hooks(lm.model)
    try:
        with torch.no_grad(), read(lm, [1, 0], kinds, positions=batch.subject_last, stop=True) as early:
            lm.forward(batch)
            raise AssertionError("the forward should have stopped")
    finally:
        after = active_hooks(lm.model)
        for h in handles:
            h.remove()
    assert ran == [0, 1] and lm.n_layers > 2  # block 2 never ran
    assert after == before  # the stop hook is gone too
    for k in kinds:
        for l in (0, 1):
            assert torch.equal(early[k][l], full[k][l])
