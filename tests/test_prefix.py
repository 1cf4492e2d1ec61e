"""Prefix caching (geomprobe.prefix) equals the full forward on every tiny architecture, under left padding."""

from dataclasses import replace

import pytest
import torch

import geomprobe as gp
from geomprobe import prefix
from geomprobe.data.forms import render
from geomprobe.editors.config import ValueConfig
from geomprobe.editors.value import optimize_values
from geomprobe.hooks import active_hooks, add_to_residual
from geomprobe.positions import tokenize
from tiny import KINDS

# rows of different lengths and subject positions: left padding, injection columns 0..seq-1 apart
PROMPTS = [("the capital of {} is", "france"), ("{} is a", "paris"),
           ("what is the capital city of the country {} ?", "france"), ("{}", "rome")]
LAYER = 1


def _batch(lm):
    return tokenize(lm.tokenizer, [render(t, s, "declarative") for t, s in PROMPTS], padding_side="left")


@pytest.mark.parametrize("kind", KINDS)
def test_suffix_forward_equals_full_forward(tiny_lms, kind):
    lm = tiny_lms[kind]
    b = _batch(lm)
    vec = torch.randn(len(PROMPTS), lm.d_model, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad(), add_to_residual(lm, LAYER, b.subject_last, vec):
        full = lm.forward(b)
    sfx = prefix.prepare(lm, b, LAYER, b.subject_last)
    assert sfx.start == int(b.subject_last.min()) and sfx.start > 0  # something is cached
    with torch.no_grad():
        part = prefix.run(lm, sfx, add=vec)
    real = b.attention_mask[:, sfx.start:].bool()
    torch.testing.assert_close(part[real], full[:, sfx.start:][real], atol=1e-5, rtol=1e-5)
    # the perturbation matters (the comparison could fail): without it the logits differ
    with torch.no_grad():
        plain = prefix.run(lm, sfx)
    assert (plain[real] - part[real]).abs().max() > 1e-3
    assert active_hooks(lm.model) == 0


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2", "gemma2", "phi3"])
def test_suffix_gradient_and_head_columns_equal_full(tiny_lms, kind):
    lm = tiny_lms[kind]
    b = _batch(lm)
    vec = torch.randn(len(PROMPTS), lm.d_model, generator=torch.Generator().manual_seed(1))
    last = b.input_ids.shape[1] - 1

    v1 = vec.clone().requires_grad_(True)
    with add_to_residual(lm, LAYER, b.subject_last, v1):
        full = lm.forward(b)[:, last]
    (g_full,) = torch.autograd.grad(full.logsumexp(-1).sum(), v1)

    sfx = prefix.prepare(lm, b, LAYER, b.subject_last)
    v2 = vec.clone().requires_grad_(True)
    head = torch.full((len(PROMPTS), 1), last - sfx.start)
    part = prefix.run(lm, sfx, add=v2, head=head)[:, 0]
    (g_part,) = torch.autograd.grad(part.logsumexp(-1).sum(), v2)
    torch.testing.assert_close(part, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_part, g_full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_prepare_many_equals_prepare_alone(tiny_lms, kind):
    """One padded forward for many one-row prompts cuts out each prompt's own Suffix: same prefix states, same
    residual, and the same perturbed logits as preparing each prompt alone."""
    lm = tiny_lms[kind]
    rows = [tokenize(lm.tokenizer, [render(t, s, "declarative")]) for t, s in PROMPTS]
    many = prefix.prepare_many(lm, rows, LAYER, [b.subject_last for b in rows])
    vec = torch.randn(1, lm.d_model, generator=torch.Generator().manual_seed(3)) * 3
    for b, got in zip(rows, many):
        alone = prefix.prepare(lm, b, LAYER, b.subject_last)
        assert got.start == alone.start and int(got.inject[0]) == int(alone.inject[0])
        torch.testing.assert_close(got.hidden, alone.hidden, atol=1e-5, rtol=1e-5)
        assert len(got.kv) == len(alone.kv)
        for (k1, v1), (k2, v2) in zip(got.kv, alone.kv):
            torch.testing.assert_close(k1, k2, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(v1, v2, atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(prefix.run(lm, got, add=vec), prefix.run(lm, alone, add=vec),
                                       atol=1e-5, rtol=1e-5)
    # the rows really differ in length (left padding was exercised) and one prompt has nothing to cache
    assert len({b.input_ids.shape[1] for b in rows}) > 1 and min(s.start for s in many) == 0
    assert active_hooks(lm.model) == 0


def test_rows_expand_one_prompt(tiny_lms):
    """Repeating one prompt's rows (the tolerance probe's trials) equals running each trial alone."""
    lm = tiny_lms["llama"]
    b = tokenize(lm.tokenizer, [render("the capital of {} is", "france", "declarative")])
    sfx = prefix.prepare(lm, b, LAYER, b.subject_last)
    noise = torch.randn(3, lm.d_model, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        many = prefix.run(lm, sfx, rows=torch.zeros(3, dtype=torch.long), add=noise)
        for i in range(3):
            with add_to_residual(lm, LAYER, b.subject_last, noise[i:i + 1]):
                one = lm.forward(b)[:, sfx.start:]
            torch.testing.assert_close(many[i:i + 1], one, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["per-request", "joint"])
def test_value_optimisation_same_with_and_without_prefix_cache(tiny_lms, mode):
    lm = tiny_lms["qwen2"]
    reqs = [gp.EditRequest("france", "capital", "the capital of {} is", "rome", case_id="a"),
            gp.EditRequest("france", "language", "the language of {} is", "paris", case_id="b"),
            gp.EditRequest("rome", "capital", "what is the capital city of the country {} ?", "france", case_id="c")]
    cfg = ValueConfig(steps=4, contexts="none", ref_rms=0)
    on = optimize_values(lm, reqs, LAYER, mode, cfg)
    off = optimize_values(lm, reqs, LAYER, mode, replace(cfg, prefix_cache=False))
    assert on.delta.abs().max() > 0
    torch.testing.assert_close(on.delta, off.delta, atol=1e-5, rtol=1e-4)
    assert on.losses == pytest.approx(off.losses, rel=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_kl_anchor_cached_equals_full_forward(tiny_lms, kind):
    """The value optimisation's KL anchor ("{subject} is a", δ at the subject's last token) is the same with
    prefix caching (head at one column) as with the full forward, on rows whose subjects end at different columns
    (left padding) and with δ carrying its gradient."""
    from geomprobe.editors.value import _kl_runner

    lm = tiny_lms[kind]
    b = tokenize(lm.tokenizer, [render(t, s, "declarative") for t, s in (("{} is a", "france"),
                                                                         ("{} is a city of", "the capital of rome"))],
                 padding_side="left")
    assert int(b.subject_last.min()) != int(b.subject_last.max())
    delta = (3 * torch.randn(2, lm.d_model, generator=torch.Generator().manual_seed(0))).requires_grad_()
    cached, full = _kl_runner(lm, LAYER, b, True), _kl_runner(lm, LAYER, b, False)
    with torch.no_grad():
        torch.testing.assert_close(cached(None), full(None), atol=1e-5, rtol=1e-5)
    a, f = cached(delta), full(delta)
    assert (a - cached(None).detach()).abs().max() > 1e-3  # δ changes the anchor
    torch.testing.assert_close(a, f, atol=1e-5, rtol=1e-5)
    ga, = torch.autograd.grad(a[:, :7].sum(), delta)
    gf, = torch.autograd.grad(f[:, :7].sum(), delta)
    torch.testing.assert_close(ga, gf, atol=1e-5, rtol=1e-4)


def test_bench_interventions_times_the_same_measurement(tmp_path, monkeypatch):
    """The bench's two arms give the same causal-chain numbers (grouped prefixes are exact), the baseline prepares
    one prompt per call, the grouped arm several, and the grouping knob is restored afterwards."""
    from geomprobe import bench
    from geomprobe.probes import tolerance

    lm = gp.load_model("toy-llama", device="cpu")
    everything = gp.load_requests("toy")
    reqs = [r for r in everything if r.subject in bench._subjects(everything, 1)]
    sizes, groups = [], []
    real_many, real_group = prefix.prepare_many, prefix.prepare_group

    def record(lm_, batches, *a, **k):
        sizes.append((tolerance.PRIME_ROWS, len(batches)))
        return real_many(lm_, batches, *a, **k)

    def record_group(lm_, batches, *a, **k):
        groups.append((tolerance.GROUP_PROMPTS, len(batches)))
        return real_group(lm_, batches, *a, **k)

    monkeypatch.setattr(prefix, "prepare_many", record)
    monkeypatch.setattr(prefix, "prepare_group", record_group)
    out = bench.bench_interventions(lm, reqs, n_tokens=2_000)
    assert tolerance.PRIME_ROWS == out["grouped_rows"] == 16 and tolerance.GROUP_PROMPTS == out["grouped_prompts"]
    assert out["n_prompts"] == 3 * len(reqs) and out["same_successes"] and out["max_radius_diff_steps"] == 0
    assert out["max_prob_diff"] < 1e-4 and out["ratio"] > 0
    assert {n for rows, n in sizes if rows == 1} == {1} and max(n for rows, n in sizes if rows == 16) > 1
    assert {n for g, n in groups if g == 1} == {1} and max(n for g, n in groups if g > 1) > 1


def test_switch_rate_resumed_equals_the_full_patched_forwards(tiny_lms):
    """subject_switch_rate's resumed runs (blocks l+1.. on the columns from the subject's last token) give the
    switch rate of whole patched forwards at every layer of every tiny architecture, under left and right
    padding; some layer does switch (the comparison is not all zeros)."""
    base = gp.load_requests("same-subject")[0]
    subjects = list(dict.fromkeys(r.subject for r in gp.load_requests("same-subject")))[:12]
    reqs = [replace(base, subject=s, case_id=f"s{j}", queries=(), paraphrases=(), neighborhood=())
            for j, s in enumerate(subjects)]
    switched, differ = 0.0, 0
    for kind in KINDS:
        lm = tiny_lms[kind]
        for side in ("left", "right"):
            old, lm.tokenizer.padding_side = lm.tokenizer.padding_side, side
            try:
                fast = gp.probes.subject_switch_rate(lm, reqs, max_pairs=len(reqs))
                full = gp.probes.subject_switch_rate(lm, reqs, max_pairs=len(reqs), resume=False)
            finally:
                lm.tokenizer.padding_side = old
            differ += int(full["n_differ"].iloc[0]) > 0
            assert fast["value"].tolist() == pytest.approx(full["value"].tolist(), abs=1e-9), (kind, side, fast, full)
            switched = max(switched, float(full["value"].max()))
    assert differ >= len(KINDS) // 2 and switched > 0  # many cases compare pairs whose answers differ


@pytest.mark.parametrize("kind", KINDS)
def test_group_runs_many_prompts_as_each_runs_alone(tiny_lms, kind):
    """tolerance._Group: perturbations of prompts of different lengths (one with a rival target, one- and
    two-token targets) in one prefix-cached forward give each prompt's own hits and margins, also when the rows
    are cut into several forwards (GROUP_ROWS)."""
    from geomprobe.probes import tolerance

    lm = tiny_lms[kind]
    g = torch.Generator().manual_seed(5)
    made = []
    for n, ((t, s), target) in enumerate(zip(PROMPTS, [" paris", " a city", " rome", " the"])):
        delta = torch.randn(lm.d_model, generator=g)
        crit, rival = ("beats-true", " berlin") if n == 0 else ("argmax" if n == 2 else "prob", None)
        made.append(tolerance._Prompt(lm, render(t, s, "declarative"), target, delta, LAYER, crit, 0.5, rival))
    assert len({len(p.at) for p in made}) > 1
    group = tolerance._Group(made)
    assert group.main is not None and group.rival is not None
    items = [(m, torch.randn(3 + m, lm.d_model, generator=g) * 2) for m in (2, 0, 3, 1, 0)]
    old = tolerance.GROUP_ROWS
    try:
        for rows in (128, 7):
            tolerance.GROUP_ROWS = rows
            got = group.run(items)
            for (m, noise), (hits, margins) in zip(items, got):
                h_alone, m_alone = made[m].batched(noise)
                assert torch.equal(hits, h_alone), (kind, m)
                torch.testing.assert_close(margins, m_alone, atol=1e-4, rtol=1e-4)
    finally:
        tolerance.GROUP_ROWS = old
    for m, p in enumerate(made):
        assert group.h_norm(m) == pytest.approx(tolerance._own_h_norm(p), rel=1e-5)
    assert active_hooks(lm.model) == 0


def test_length_chunks_is_the_cheapest_cut_of_the_sorted_rows():
    """Every row once, at most ``size`` per chunk, and the cost (padded columns + overhead per chunk) equals the
    brute-force minimum over every cut of the sorted rows."""
    from itertools import combinations

    gen = torch.Generator().manual_seed(0)
    for trial in range(30):
        n, size, overhead = int(torch.randint(1, 9, (1,), generator=gen)), int(torch.randint(1, 5, (1,),
                                                                                              generator=gen)), 5
        lengths = torch.randint(1, 40, (n,), generator=gen)
        chunks = prefix.length_chunks(lengths, size, overhead)
        assert sorted(torch.cat(chunks).tolist()) == list(range(n))
        assert all(0 < len(c) <= size for c in chunks)
        cost = sum(len(c) * int(lengths[c].max()) + overhead for c in chunks)
        ln = sorted(lengths.tolist())
        best = min(sum((b - a) * ln[b - 1] + overhead for a, b in zip((0, *cuts), (*cuts, n)))
                   for k in range(n) for cuts in combinations(range(1, n), k)
                   if all(b - a <= size for a, b in zip((0, *cuts), (*cuts, n))))
        assert cost == best
    # rows of very different lengths are not padded together, even below the row limit
    assert [len(c) for c in prefix.length_chunks(torch.tensor([5, 5, 5, 5, 70, 70]), 32, 8)] == [4, 2]
