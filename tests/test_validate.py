"""Predictive validation (geomprobe.validate): statistics against brute force, tables on synthetic records, and one
end-to-end toy run through the CLI (weights unchanged, files written)."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from geomprobe import validate as V


def _brute_auc(score, failed):
    pos = [s for s, f in zip(score, failed) if f]
    neg = [s for s, f in zip(score, failed) if not f]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_equals_the_pairwise_count_with_ties_and_infinities():
    rng = np.random.default_rng(0)
    for _ in range(20):
        score = rng.integers(0, 5, 30).astype(float)
        score[rng.integers(0, 30, 3)] = np.inf
        failed = rng.random(30) < 0.4
        if failed.all() or not failed.any():
            continue
        assert V.auc(score, failed) == pytest.approx(_brute_auc(score, failed))
    assert math.isnan(V.auc(np.array([1.0, 2.0]), np.array([True, True])))  # one class: undefined


def test_best_threshold_maximises_accuracy():
    rng = np.random.default_rng(1)
    score = rng.normal(size=40)
    failed = score + rng.normal(scale=0.7, size=40) > 0
    t = V.best_threshold(score, failed)
    grid = np.linspace(score.min() - 1, score.max() + 1, 2001)
    assert V.accuracy(score, failed, t) >= max(V.accuracy(score, failed, g) for g in grid) - 1e-12


def test_subject_split_is_a_deterministic_partition():
    subs = [f"s{i}" for i in range(11)] * 3
    fit, held = V.split_subjects(subs, seed=3)
    assert fit.isdisjoint(held) and fit | held == set(subs) and len(fit) == 5
    assert V.split_subjects(subs, seed=3) == (fit, held) and V.split_subjects(subs, seed=4) != (fit, held)


def _records(n_subjects=30, seed=0):
    """Synthetic request-forms: δ patched success predicts failure perfectly; the paper's ratio is noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        for rel in range(2):
            for form in ("declarative", "question", "instruction"):
                fail = form != "declarative" and rng.random() < 0.5
                rows.append({"editor": "memit-merge" if rel else "rose", "subject": f"S{s}", "relation": f"r{rel}",
                             "form": form, "success_after": 0.0 if fail else 1.0,
                             "patched_success": 0.0 if fail else 1.0, "delta": rng.random(), "rho": 1.0,
                             "cause": "read-side" if fail else None, "cause_confirmed": True if fail else None})
    return pd.DataFrame(rows)


def test_criterion_table_scores_a_perfect_and_a_random_predictor():
    rec = _records()
    t = V.criterion_table(rec, n_boot=200)
    allrows = t[t["editor"] == "all"].set_index("criterion")
    perfect, noise = allrows.loc["δ patched loses"], allrows.loc["paper: Δ_L > ρ"]
    assert perfect["auc"] == 1.0 and perfect["auc_held_out"] == 1.0 and perfect["accuracy_natural_held_out"] == 1.0
    assert perfect["n"] == len(rec) and perfect["n_failed"] == int((rec["success_after"] < 0.5).sum())
    assert perfect["n_subjects"] == 30 and perfect["n_subjects_held_out"] == 15
    assert 0.3 < noise["auc"] < 0.7 and noise["auc_low"] <= noise["auc"] <= noise["auc_high"]
    # criteria whose inputs were not measured have n = 0 and no AUC, never a made-up number
    miss = allrows.loc["miss > ρ along the miss"]
    assert miss["n"] == 0 and math.isnan(miss["auc"])
    assert set(t["editor"]) == {"all", "memit-merge", "rose"}


def test_cause_table_shares_sum_to_one():
    rec = _records()
    rec.loc[rec.index[rec["cause"].notna()][:3], ["cause", "cause_confirmed"]] = ["unexplained", False]
    c = V.cause_table(rec, n_boot=100)
    for _, g in c[c["cause"] != "confirmed"].groupby(["editor", "form"]):
        assert g["share"].sum() == pytest.approx(1.0)
    conf = c[c["cause"] == "confirmed"]
    assert (conf["count"] == conf["n_failed"] - c[c["cause"] == "unexplained"]["count"].to_numpy()).all()


def test_select_requests_takes_the_first_relations_of_subjects_with_several():
    import geomprobe as gp

    reqs = gp.load_requests("same-subject")
    got = V.select_requests(reqs, subjects=5, relations=2)
    subs = list(dict.fromkeys(r.subject for r in got))
    assert len(subs) == 5 and len(got) == 10
    assert all(sum(r.subject == s for r in got) == 2 for s in subs)
    assert len(V.select_requests(reqs, subjects=5, relations=None)) > 10


def test_validate_cli_on_the_toy_world(tmp_path, capsys):
    """End to end: every request-form measured under two editors, the files written, weights unchanged (the
    command checks them itself and would raise)."""
    from geomprobe.cli import main

    out = tmp_path / "val"
    code = main(["validate", "--model", "toy-llama", "--requests", "toy", "--subjects", "4", "--chunk", "2",
                 "--editors", "memit-merge,rose", "--out", str(out), "-q"])
    assert code == 0
    text = capsys.readouterr().out
    assert "| criterion |" in text and "confirmed" in text
    rec = pd.read_csv(out / "validation_records.csv")
    assert set(rec["editor"]) == {"memit-merge", "rose"}
    assert set(rec["form"]) == {"declarative", "question", "instruction"}
    assert {"written_share", "patched_success", "miss_norm", "rho_along_drift", "cause"} <= set(rec.columns)
    assert (out / "why_forms_fail.png").stat().st_size > 10_000 and (out / "validation_auc.md").exists()
    again = V.from_files(out, n_boot=50)  # a stopped run is scored from its files
    assert len(again["table"]) == len(V.CRITERIA) * 3


def test_validate_rejects_an_unknown_editor(capsys):
    from geomprobe.cli import main

    assert main(["validate", "--model", "toy-llama", "--requests", "toy", "--editors", "memmit"]) == 2
    assert "unknown editor" in capsys.readouterr().err


def test_like_for_like_rows_compare_the_miss_with_its_own_tolerance():
    from geomprobe.tables import CUMULATIVE, MISS, tidy_like_for_like

    rec = pd.DataFrame([
        {"editor": "memit-merge", "editor_rule": "covariance", "form": f, "case_id": "c", "subject": "S",
         "relation": "r", "miss_norm": m, "rho_along_drift": t, "cumulative_drift": 5.0, "rho_along_delta": 4.0,
         "success_after": s}
        for f, m, t, s in (("declarative", 1.0, 9.0, 1.0), ("question", 3.0, 2.0, 0.0), ("instruction", 2.0, 2.0, 1.0))
    ] + [{"editor": "rose-no-hki", "editor_rule": "identity", "form": "question", "case_id": "c", "subject": "S",
          "relation": "r", "miss_norm": 1.0, "rho_along_drift": float("nan"), "cumulative_drift": 1.0,
          "rho_along_delta": 4.0, "success_after": 1.0}])
    rows = tidy_like_for_like(rec, "m")
    miss = rows[rows["metric"] == MISS]
    assert list(miss["form"]) == ["question", "instruction", "question"]  # the declarative form has no drift
    assert list(miss["safe"].iloc[:2]) == [0.0, 1.0]  # 3 > 2 beyond; 2 ≤ 2 within
    assert math.isnan(miss["safe"].iloc[2]) and not miss["predicted"].iloc[2]  # no tolerance: not a verdict
    cum = rows[rows["metric"] == CUMULATIVE]
    assert list(cum["safe"]) == [0.0, 0.0, 1.0] and set(rows["model"]) == {"m"}


def test_claim2_table_reads_both_footings():
    rec = _records(10)
    rec["editor_rule"] = "covariance"
    rec["delta_covariance"], rec["delta_identity"] = 3.0, 0.5
    rec["miss_norm"], rec["rho_along_drift"] = 1.0, 2.0
    iso = rec[rec["editor"] == "memit-merge"].assign(editor="rose-no-hki", miss_norm=5.0)
    c = V.claim2_table(pd.concat([rec, iso], ignore_index=True), n_boot=50).set_index(["footing", "rule"])
    assert c.loc[("paper", "covariance"), "beyond"] == 1.0 and c.loc[("paper", "identity"), "beyond"] == 0.0
    assert c.loc[("like-for-like", "covariance"), "beyond"] == 0.0
    assert c.loc[("like-for-like", "identity"), "beyond"] == 1.0
    assert c.loc[("like-for-like", "identity"), "n"] == 20  # question + instruction of 10 subjects
