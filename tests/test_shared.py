"""Shared-prefix evaluation (geomprobe.shared) equals plain padded batches on every tiny architecture."""

import pytest
import torch

from geomprobe import shared
from geomprobe.data.forms import render
from geomprobe.evaluate import _forced_argmax, _greedy, _prompt_ids, _score
from tiny import KINDS

# a long shared opening (as a chat template's system turn and frame), different questions after it
FRAME = "instruction : tell me in a few words , tell me the answer . question : "
QUESTIONS = ["what is the capital of france ?", "where is the eiffel tower located ?", "who works at microsoft ?",
             "what language speaks john ?", "the capital of italy is"]
TARGETS = ["paris", "paris france", "john", "the language", "rome"]


SUBJECTS = ["france", "eiffel", "microsoft", "john", "italy"]


def _prompts():
    return [render(FRAME + q.replace(s, "{}"), s, "declarative") for q, s in zip(QUESTIONS, SUBJECTS)]


def test_groups_pool_short_openings_and_prefix_of_stops_at_the_limit():
    rows = [[1, 2, 3] + [9] * 20 + [k] for k in range(3)] + [[7, 8], [7, 9, 9]]
    with shared.enabled(True):
        g = shared.groups(rows)
        assert sorted(map(sorted, g)) == [[0, 1, 2], [3, 4]]  # 23 shared tokens vs 1: pooled into a plain group
        assert shared.prefix_of(rows[:3], 100) == 23 and shared.prefix_of(rows[:3], 15) == 15
        assert shared.prefix_of(rows[:3], 5) == 0  # below MIN_PREFIX: not worth a pass
    with shared.enabled(False):
        assert shared.groups(rows) == [list(range(5))] and shared.prefix_of(rows[:3], 100) == 0


def test_narrow_models_run_plain_batches(tiny_lms):
    lm = tiny_lms["llama"]
    rows = [[1, 2, 3] + [9] * 20 + [k] for k in range(3)]
    assert lm.d_model < shared.MIN_D_MODEL and not shared.worth(lm)
    assert shared.groups(rows, lm) == [[0, 1, 2]] and shared.prefix_of(rows, 100, lm) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_teacher_forcing_and_greedy_equal_with_and_without_shared_prefix(tiny_lms, kind, monkeypatch):
    monkeypatch.setattr(shared, "MIN_D_MODEL", 0)  # the tiny models are narrow: force the shared path
    lm = tiny_lms[kind]
    prompts = _prompts()
    ids = _prompt_ids(lm.tokenizer, [p.text for p in prompts])
    assert shared.prefix_of(ids[:4], 100) >= shared.MIN_PREFIX  # the rows do share a prefix worth caching
    out = {}
    for on in (False, True):
        with shared.enabled(on), torch.no_grad():
            lp, n, hits = _score(lm, prompts, TARGETS, batch_size=3)
            greedy = _greedy(lm, ids, [3, 1, 4, 2, 3], batch_size=3)
            forced = _forced_argmax(lm, ids, [g[:2] for g in greedy], batch_size=3)
        out[on] = (lp, n, hits, greedy, forced)
    (lp0, n0, h0, g0, f0), (lp1, n1, h1, g1, f1) = out[False], out[True]
    assert n0 == n1 and h0 == h1 and g0 == g1 and f0 == f1
    assert lp1 == pytest.approx(lp0, abs=1e-4)
    assert all(x < 0 for x in lp0)  # real log-probs were compared, not zeros
