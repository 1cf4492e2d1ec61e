"""Subject (cluster) bootstrap intervals: geomprobe.intervals, the interval columns of tables.form_scores and what
the main-results table and headline say with them (and without them, for a CSV written before them)."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from geomprobe.intervals import (Interval, cluster_bootstrap, fmt_interval, paired_difference, resample_weights,
                                 verdict)
from geomprobe.pipeline import load_analysis
from geomprobe.plots.results import results_markdown
from geomprobe.tables import form_scores, score, score_difference, score_interval


# ---------------------------------------------------------------------------------------------- the bootstrap
def test_identical_values_give_a_zero_width_interval():
    iv = cluster_bootstrap([0.5] * 12, ["a", "a", "a", "b", "b", "b", "c", "c", "c", "d", "d", "d"])
    assert iv.estimate == 0.5 and iv.low == 0.5 and iv.high == 0.5
    assert (iv.n, iv.n_clusters) == (12, 4)


def test_clusters_with_their_own_constant_values_give_an_interval_between_them():
    # each subject constant, subjects differ: the interval is the spread of resampled subject means, not 0
    iv = cluster_bootstrap([0, 0, 1, 1, 1, 1, 0, 0], list("aabbccdd"))
    assert iv.estimate == 0.5
    assert 0.0 <= iv.low < 0.5 < iv.high <= 1.0


def test_large_normal_sample_interval_contains_the_true_mean_with_the_textbook_width():
    rng = np.random.default_rng(3)
    x = rng.normal(3.0, 1.0, 800)
    iv = cluster_bootstrap(x, np.arange(800))
    assert iv.low < 3.0 < iv.high
    assert iv.low < iv.estimate < iv.high
    assert iv.width == pytest.approx(2 * 1.96 / math.sqrt(800), rel=0.2)


def test_coverage_over_repeated_samples_is_near_95_percent():
    rng = np.random.default_rng(11)
    hits = 0
    for i in range(200):
        x = rng.normal(0.0, 1.0, 60)
        iv = cluster_bootstrap(x, np.arange(60), n_boot=400, seed=i)
        hits += iv.low < 0.0 < iv.high
    assert 0.87 <= hits / 200 <= 0.99


def test_resampling_correlated_clusters_is_wider_than_resampling_rows():
    rng = np.random.default_rng(5)
    centres = rng.normal(0.0, 1.0, 10)
    values = np.repeat(centres, 20) + rng.normal(0.0, 0.05, 200)  # 20 near-identical requests per subject
    by_subject = cluster_bootstrap(values, np.repeat(np.arange(10), 20))
    by_row = cluster_bootstrap(values, np.arange(200))
    assert by_subject.estimate == pytest.approx(by_row.estimate)
    assert by_subject.width > 3 * by_row.width  # ~sqrt(20) = 4.5 times wider
    assert (by_subject.n, by_subject.n_clusters, by_row.n_clusters) == (200, 10, 200)


def test_a_single_cluster_has_an_undefined_interval_stated_not_faked():
    iv = cluster_bootstrap([0.0, 1.0, 1.0, 0.0], ["s"] * 4)
    assert iv.estimate == 0.5 and iv.n == 4 and iv.n_clusters == 1
    assert math.isnan(iv.low) and math.isnan(iv.high) and not iv.defined and not iv.excludes(0.0)
    assert fmt_interval(iv, scale=100) == "50.0% [no interval: 1 subject] (n=4, 1 subject)"
    assert "no difference claimed" in verdict(paired_difference([1, 1], [0, 0], ["s", "s"]), "A", "B")


def test_no_values_give_nan_everything_and_nan_values_are_dropped():
    iv = cluster_bootstrap([np.nan, np.nan], ["a", "b"])
    assert math.isnan(iv.estimate) and (iv.n, iv.n_clusters) == (0, 0)
    assert fmt_interval(iv) == "n/a (n=0, 0 subjects)"
    iv = cluster_bootstrap([1.0, np.nan, 3.0], ["a", "b", "c"])
    assert iv.estimate == 2.0 and (iv.n, iv.n_clusters) == (2, 2)


def test_other_statistics_and_seed_reproducibility():
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=50), np.repeat(np.arange(10), 5)
    med = cluster_bootstrap(x, c, stat=np.median)
    assert med.estimate == pytest.approx(float(np.median(x))) and med.low < med.estimate < med.high
    assert cluster_bootstrap(x, c, seed=1) == cluster_bootstrap(x, c, seed=1)
    w = resample_weights(7, n_boot=100, seed=0)
    assert w.shape == (100, 7) and (w.sum(1) == 7).all()


def test_paired_difference_resamples_subjects_once_for_both_editors():
    rng = np.random.default_rng(2)
    subjects = np.repeat(np.arange(8), 4)
    hard = rng.normal(0.0, 1.0, 8)[subjects]  # shared subject effect, large
    a = hard + 0.3 + rng.normal(0, 0.02, 32)
    b = hard + rng.normal(0, 0.02, 32)
    d = paired_difference(a, b, subjects)
    assert d.estimate == pytest.approx(a.mean() - b.mean())
    assert d.low > 0 and d.excludes(0.0) and verdict(d, "A", "B") == "A > B"
    assert verdict(paired_difference(b, a, subjects), "B", "A") == "B < A"
    # separately the two intervals overlap widely: only pairing sees the difference
    ia, ib = cluster_bootstrap(a, subjects), cluster_bootstrap(b, subjects)
    assert ia.low < ib.high
    assert d.width < 0.2 * ia.width
    # a pair with a missing value does not count
    a2 = a.copy()
    a2[0] = np.nan
    assert paired_difference(a2, b, subjects).n == 31


def test_verdict_claims_a_difference_only_when_the_interval_excludes_zero():
    assert verdict(Interval(5.0, 1.0, 9.0, 16, 4), "RoSE", "MEMIT-Merge") == "RoSE > MEMIT-Merge"
    assert verdict(Interval(-5.0, -9.0, -1.0, 16, 4), "RoSE", "MEMIT-Merge") == "RoSE < MEMIT-Merge"
    text = verdict(Interval(5.0, -1.0, 9.0, 16, 4), "RoSE", "MEMIT-Merge")
    assert "no clear difference (interval includes 0)" in text and ">" not in text
    assert "cannot be compared" in verdict(Interval(math.nan, math.nan, math.nan, 0, 0), "A", "B")


def test_fmt_interval():
    assert fmt_interval(Interval(43.75, 25.0, 62.5, 16, 4)) == "43.8% [25.0, 62.5] (n=16, 4 subjects)"
    assert fmt_interval(Interval(12.5, -6.25, 31.25, 16, 4), signed=True, n=False) == "+12.5pp [-6.2, +31.2]"
    assert fmt_interval(Interval(0.4375, 0.25, 0.625, 16, 4), scale=100, n=False) == "43.8% [25.0, 62.5]"
    # bounds unknown (an old table): no band is invented
    assert fmt_interval(Interval(43.75, math.nan, math.nan, 16, 4), n=False) == "43.8%"


# ---------------------------------------------------------------------------------------------- form_scores
def _ev(success: dict[str, dict[str, float]], protocol: str = "prob", n_per_subject: dict | None = None,
        loc: float = 1.0) -> pd.DataFrame:
    """Evaluation rows: per editor and subject, instruction efficacy (prompt 0) and paraphrase (prompt 1) both
    = ``success[editor][subject]``, locality ``loc``; ``n_per_subject`` requests per subject (default 2)."""
    rows = []
    for ed, by_subject in success.items():
        r = 0
        for subj, p in by_subject.items():
            for _ in range((n_per_subject or {}).get(subj, 2)):
                base = dict(editor=ed, case_id=f"c{r}", subject=subj, relation="rel", protocol=protocol,
                            n_prompts=1, request=r, criterion="beats-true")
                rows += [{**base, "form": "instruction", "prompt_idx": 0, "metric": "generalization", "value": p},
                         {**base, "form": "instruction", "prompt_idx": 1, "metric": "generalization", "value": p},
                         {**base, "form": "instruction", "prompt_idx": 0, "metric": "locality", "value": loc}]
                r += 1
    return pd.DataFrame(rows)


def test_form_scores_gains_interval_columns_with_the_right_counts():
    ev = _ev({"rose": {"s1": 1.0, "s2": 0.0, "s3": 1.0}, "memit-merge": {"s1": 0.0, "s2": 0.0, "s3": 1.0}},
             n_per_subject={"s1": 3, "s2": 1, "s3": 2})
    df = form_scores(ev, by=("editor",), forms=("instruction",))
    assert list(df.columns) == ["editor", "protocol", "form", "metric", "value", "n_requests", "low", "high",
                                "n_subjects"]
    eff = df[(df["editor"] == "rose") & (df["metric"] == "efficacy")].iloc[0]
    assert eff["value"] == pytest.approx(100 * 5 / 6)  # each request weighs the same: 5 of 6 requests
    assert (eff["n_requests"], eff["n_subjects"]) == (6, 3)
    assert eff["low"] <= eff["value"] <= eff["high"] and eff["low"] < eff["high"]
    loc = df[(df["editor"] == "rose") & (df["metric"] == "locality")].iloc[0]
    assert (loc["value"], loc["low"], loc["high"]) == (100.0, 100.0, 100.0)
    ov = df[(df["editor"] == "rose") & (df["metric"] == "overall")].iloc[0]
    assert ov["value"] == pytest.approx((100 * 5 / 6 * 2 + 100) / 3) and ov["n_subjects"] == 3
    assert ov["low"] <= ov["value"] <= ov["high"]
    # one subject only: the estimate stays, the interval is undefined
    one = form_scores(ev[ev["subject"] == "s1"], forms=("instruction",))
    assert one["n_subjects"].eq(1).all() and one["low"].isna().all() and one["value"].notna().all()


def test_form_scores_versus_adds_paired_differences():
    ev = _ev({"rose": {"s1": 1.0, "s2": 1.0, "s3": 1.0, "s4": 0.0},
              "memit-merge": {"s1": 0.0, "s2": 0.0, "s3": 0.0, "s4": 0.0}})
    df = form_scores(ev, by=("editor",), forms=("instruction",), versus="memit-merge")
    d = score_difference(df, "rose")
    assert d.estimate == pytest.approx(75.0) and (d.n, d.n_clusters) == (8, 4)
    assert d.low > 0 and d.high <= 100
    assert score_difference(df, "memit-merge") is None  # no difference of the reference with itself
    ov = score_difference(df, "rose", "overall")
    assert ov.estimate == pytest.approx((75.0 + 75.0 + 0.0) / 3)
    assert score_interval(df, "rose") == Interval(75.0, *df.loc[(df["editor"] == "rose") & (
        df["metric"] == "efficacy"), ["low", "high"]].iloc[0].tolist(), 8, 4)
    with pytest.raises(ValueError):
        form_scores(ev, by=("protocol",), versus="memit-merge")


# ---------------------------------------------------------------------------------------------- the main table
def _table(success: dict, protocol: str = "gen") -> pd.DataFrame:
    df = form_scores(_ev(success, protocol), by=("editor",), versus="memit-merge")
    df.insert(0, "model", "toy")
    return df


@pytest.fixture(scope="module")
def table():
    return load_analysis("table_main_results")


def test_headline_says_no_clear_difference_when_the_paired_interval_includes_zero(table):
    # RoSE ahead on two subjects, behind on two others: a mean difference > 0 whose interval includes 0
    df = _table({"rose": {"s1": 1.0, "s2": 1.0, "s3": 0.0, "s4": 1.0, "s5": 0.0},
                 "memit-merge": {"s1": 0.0, "s2": 0.0, "s3": 1.0, "s4": 1.0, "s5": 0.0}})
    assert score(df, "rose", protocol="gen") > score(df, "memit-merge", protocol="gen")
    text = table.headline(df)
    assert "no clear difference (interval includes 0)" in text
    assert "RoSE > MEMIT-Merge" not in text
    assert "n=10 requests, 5 subjects" in text and "RoSE − MEMIT-Merge +20.0pp [" in text
    plt.close(table.plot(df))


def test_headline_claims_a_difference_when_the_paired_interval_excludes_zero(table, tmp_path):
    df = _table({"rose": {"s1": 1.0, "s2": 1.0, "s3": 1.0, "s4": 1.0},
                 "memit-merge": {"s1": 0.0, "s2": 0.5, "s3": 0.0, "s4": 0.0}})
    text = table.headline(df)
    assert "→ RoSE > MEMIT-Merge" in text and "100.0% [100.0, 100.0]" in text
    path = table.write_extra(df, tmp_path)[0]
    md = open(path).read()
    assert "| rose        | 100.0 [100.0, 100.0]" in md
    assert "Δ efficacy vs memit-merge" in md and "+87.5 [" in md and "**RoSE > MEMIT-Merge**" in md
    plt.close(table.plot(df))


def test_an_old_csv_without_interval_columns_still_replots_and_claims_nothing(table, tmp_path):
    df = _table({"rose": {"s1": 1.0, "s2": 1.0, "s3": 1.0, "s4": 1.0},
                 "memit-merge": {"s1": 0.0, "s2": 0.0, "s3": 0.0, "s4": 0.0}})
    old = df[["model", "editor", "protocol", "form", "metric", "value", "n_requests"]]
    text = table.headline(old)
    assert "difference not tested" in text and "RoSE > MEMIT-Merge" not in text and "[" not in text
    assert "rose 100.0% vs memit-merge 0.0%" in text
    md = results_markdown(old)
    assert "No intervals: this CSV predates them" in md and "[" not in md.split("## ", 1)[1]
    plt.close(table.plot(old))
    table.write_extra(old, tmp_path)
