"""known_facts (analyses/known_facts.py): true-fact recall of the unedited model, per form, with subject intervals."""

import math

import pandas as pd
import pytest

import geomprobe as gp
from geomprobe.pipeline import load_analysis
from geomprobe.workspace import QUICK, Workspace

kf = load_analysis("known_facts")


def test_facts_ask_for_the_true_answer():
    reqs = gp.load_requests("same-subject")[:6]
    facts = kf.facts(reqs)
    assert [f.target_new for f in facts] == [r.target_true for r in reqs if r.target_true]
    assert all(f.target_true is None for f in facts)


def test_recall_and_known_subjects_on_a_table():
    rows = []
    for subject, values in (("a", (1, 1)), ("b", (1, 0)), ("c", (0, 0))):
        for rel, v in zip(("r1", "r2"), values):
            rows.append({"subject": subject, "relation": rel, "form": "declarative", "protocol": "starts_with",
                         "value": float(v)})
    df = pd.DataFrame(rows)
    iv = kf.recall(df, "declarative")
    assert math.isclose(iv.estimate, 0.5) and iv.n == 6 and iv.n_clusters == 3 and iv.low < 0.5 < iv.high
    known, total = kf.known_subjects(df)
    assert known == ["a", "b"] and total == 3  # b recalls half of its facts: known at threshold 0.5
    assert kf.known_subjects(df, threshold=0.75)[0] == ["a"]


@pytest.fixture(scope="module")
def toy_table():
    ws = Workspace("toy-llama", "toy", "unused", QUICK, device="cpu", cache=False, log=lambda m: None)
    return kf.compute(ws)


def test_starts_with_is_full_token_accuracy(toy_table):
    """``starts_with`` = every answer token the teacher-forced argmax, i.e. token accuracy 1, per request."""
    df = toy_table
    key = ["subject", "relation", "form"]
    acc = df[df["protocol"] == "token_acc"].set_index(key)["value"]
    starts = df[df["protocol"] == "starts_with"].set_index(key)["value"]
    assert len(starts) == len(acc) > 0
    # one prompt per declarative request: the share of full-accuracy prompts is 0 or 1 and matches acc == 1
    decl = [k for k in starts.index if k[2] == "declarative"]
    assert all(starts[k] == float(acc[k] >= 1.0) for k in decl)
    assert set(df["form"]) == {"declarative", "question", "instruction"}
    assert 0 < kf.recall(df, "declarative").estimate <= 1  # the toy knows its own world's facts
