"""One prompt pass for every continuation and the greedy answer (geomprobe.prompt_pass) equals separate plain
forwards on every tiny architecture, with and without the shared chat-template prefix."""

import pytest
import torch

from geomprobe import prompt_pass, shared
from geomprobe.evaluate import _prompt_ids
from geomprobe.prompt_pass import Plan
from test_shared import _prompts
from tiny import KINDS

CONTS = [" paris", " the capital", " rome"]


def _alone(lm, prompt, tokens):
    """Summed log-prob and argmax of ``tokens`` after ``prompt``: one unpadded forward of the whole row."""
    row = torch.tensor([list(prompt) + list(tokens)])
    logits = lm.model(input_ids=row).logits[0, len(prompt) - 1:-1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None]).sum()
    return float(lp), logits.argmax(-1).tolist()


def _greedy_alone(lm, prompt, n):
    row = list(prompt)
    for _ in range(n):
        row.append(int(lm.model(input_ids=torch.tensor([row])).logits[0, -1].argmax()))
    return row[len(prompt):]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("on", [False, True])
def test_plan_equals_separate_forwards(tiny_lms, kind, on, monkeypatch):
    monkeypatch.setattr(shared, "MIN_D_MODEL", 0)  # the tiny models are narrow: allow the shared path
    lm = tiny_lms[kind]
    tok = lm.tokenizer
    prompts = _prompt_ids(tok, [p.text for p in _prompts()])
    conts = [tok(c, add_special_tokens=False)["input_ids"] for c in CONTS]
    assert sorted(len(c) for c in conts)[0] == 1 and max(len(c) for c in conts) > 1  # one- and many-token targets
    passes = []
    real = shared.forward
    monkeypatch.setattr(shared, "forward", lambda *a, **k: passes.append(len(a[2])) or real(*a, **k))
    plan = Plan()
    jobs = [(k, c, plan.score(p, c)) for k, p in enumerate(prompts) for c in conts]
    jobs.append((0, conts[1], plan.score(prompts[0], conts[1])))  # the same job twice
    n_new = [3, 0, 4, 1, 2]
    gen = [plan.generate(p, n) for p, n in zip(prompts, n_new)]
    with shared.enabled(on), torch.no_grad():
        scored, answers = plan.run(lm, batch_size=2)
        assert sum(passes) == len(prompts)  # every prompt ran exactly once for 3 targets and its answer
        for k, c, j in jobs:
            lp, arg = _alone(lm, prompts[k], c)
            s = scored[j]
            assert s.logp == pytest.approx(lp, abs=1e-4) and s.logp < 0
            assert list(s.argmax) == arg and s.n == len(c) and s.hits == sum(a == b for a, b in zip(arg, c))
        for k, n in enumerate(n_new):
            assert answers[gen[k]] == _greedy_alone(lm, prompts[k], n)


@pytest.mark.parametrize("kind", ["gpt2", "gemma2"])
def test_narrow_model_scores_whole_rows_with_the_same_results(tiny_lms, kind, monkeypatch):
    """Below shared.MIN_D_MODEL every job is one padded row (prompt + continuation) and only greedy answers run a
    prompt pass; the results are those of separate forwards."""
    lm = tiny_lms[kind]
    assert lm.d_model < shared.MIN_D_MODEL
    tok = lm.tokenizer
    prompts = _prompt_ids(tok, [p.text for p in _prompts()])[:3]
    conts = [tok(c, add_special_tokens=False)["input_ids"] for c in CONTS]
    rows = []
    real = shared.forward
    monkeypatch.setattr(shared, "forward", lambda *a, **k: rows.append((len(a[2]), a[4])) or real(*a, **k))
    plan = Plan()
    jobs = [(k, c, plan.score(p, c)) for k, p in enumerate(prompts) for c in conts]
    gen = plan.generate(prompts[1], 3)
    with torch.no_grad():
        scored, answers = plan.run(lm, batch_size=4)
    assert sum(n for n, side in rows if side == "right") == len(jobs)
    assert sum(n for n, side in rows if side == "left") == 1
    for k, c, j in jobs:
        lp, arg = _alone(lm, prompts[k], c)
        assert scored[j].logp == pytest.approx(lp, abs=1e-4) and list(scored[j].argmax) == arg
    assert answers[gen] == _greedy_alone(lm, prompts[1], 3)


def test_plan_refuses_empty_rows_and_runs_nothing_when_empty(tiny_lms):
    plan = Plan()
    with pytest.raises(ValueError):
        plan.score([1, 2], [])
    with pytest.raises(ValueError):
        plan.generate([], 2)
    assert plan.run(tiny_lms["llama"]) == ([], [])
    assert prompt_pass.chunks([3, 1, 2], 2) == [[1, 2], [0]]


def test_disabled_runs_each_job_alone_with_the_same_results(tiny_lms, monkeypatch):
    monkeypatch.setattr(shared, "MIN_D_MODEL", 0)  # the prompt-pass path, not the narrow models' whole rows
    lm = tiny_lms["llama"]
    prompts = _prompt_ids(lm.tokenizer, [p.text for p in _prompts()])[:2]
    passes = []
    real = shared.forward
    monkeypatch.setattr(shared, "forward", lambda *a, **k: passes.append(len(a[2])) or real(*a, **k))
    results = {}
    for on in (True, False):
        plan = Plan()
        for p in prompts:
            plan.score(p, [5, 6])
            plan.score(p, [7])
            plan.generate(p, 2)
        passes.clear()
        with prompt_pass.enabled(on), torch.no_grad():
            results[on] = plan.run(lm, batch_size=16)
        assert sum(passes) == (2 if on else 6)  # 2 prompts; off: 4 jobs + 2 answers, each its own prompt pass
    (s1, a1), (s0, a0) = results[True], results[False]
    assert a1 == a0 and [s.argmax for s in s1] == [s.argmax for s in s0]
    assert [s.logp for s in s1] == pytest.approx([s.logp for s in s0], abs=1e-5)
