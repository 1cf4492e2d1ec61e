"""geomprobe.claims: each claim's verdict follows its interval rule, on synthetic CSV tables."""

import numpy as np
import pandas as pd
import pytest

from geomprobe import claims
from geomprobe.pipeline import claims_section


def _radii(shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(6):
        for r in range(4):
            iso = 1.0 + 0.1 * rng.standard_normal()
            for editor, v in (("memit", iso), ("memit-merge", iso + shift + 0.02 * rng.standard_normal())):
                rows.append({"editor": editor, "case_id": f"s{s}-r{r}", "subject": f"s{s}", "metric": "tolerance_radius",
                             "value_rel": v})
    return pd.DataFrame(rows)


def test_claim1_holds_only_when_joint_is_smaller():
    assert claims.rho_joint_vs_isolated(_radii(-0.5))[1] == "holds"
    assert claims.rho_joint_vs_isolated(_radii(+0.5))[1] == "does not hold"
    assert claims.rho_joint_vs_isolated(_radii(0.0))[1] == "not decided"  # the interval straddles 0
    assert claims.rho_joint_vs_isolated(_radii(-0.5).query("editor == 'memit'"))[1] == "not measured"


def _keys(same: float, diff: float) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for s in range(5):
        for pair, mean in (("same-subject", same), ("different-subject", diff)):
            for _ in range(4):
                rows.append({"layer": 7, "edit_layer": 7, "metric": "key_cosine", "centred": False, "pair": pair,
                             "subject_a": f"s{s}", "value": mean + 0.01 * rng.standard_normal()})
    return pd.DataFrame(rows)


def test_claim4_needs_separation_and_a_factor_of_two():
    assert claims.key_separation(_keys(0.9, 0.05))[1] == "holds"
    assert claims.key_separation(_keys(0.9, 0.6))[1].startswith("does not hold (separated")
    assert claims.key_separation(_keys(0.3, 0.6))[1] == "does not hold"


def test_claim3_orthogonality_threshold():
    def grads(cos):
        return pd.DataFrame([{"step": 0, "metric": "gradient_conflict", "subject": f"s{s}", "cosine": cos + 0.01 * k}
                             for s in range(5) for k in range(3)])
    assert claims.gradient_orthogonality(grads(0.05))[1] == "holds"
    assert claims.gradient_orthogonality(grads(0.6))[1] == "does not hold"


def test_claim5_reads_the_paired_difference():
    base = {"protocol": "gen", "form": "instruction", "metric": "efficacy", "n_requests": 16, "n_subjects": 4}
    df = pd.DataFrame([{**base, "editor": "rose", "value": 60.0, "low": 40.0, "high": 80.0, "diff": 20.0,
                        "diff_low": 5.0, "diff_high": 35.0, "n_paired": 16, "n_paired_subjects": 4},
                       {**base, "editor": "memit-merge", "value": 40.0, "low": 20.0, "high": 60.0}])
    assert claims.rose_vs_merge(df)[1] == "holds"
    df.loc[0, ["diff_low", "diff_high"]] = [-5.0, 35.0]
    assert claims.rose_vs_merge(df)[1] == "not decided"
    assert claims.rose_vs_merge(df.drop(columns=["diff", "diff_low", "diff_high"]))[1] == "not decided (no interval)"


def test_side_by_side_reads_model_subfolders(tmp_path):
    (tmp_path / "qwen").mkdir()
    (tmp_path / "qwen" / "run.json").write_text('{"run": {"model": "qwen-x"}}')
    _radii(-0.5).to_csv(tmp_path / "fig02a_tolerance_radius.csv", index=False)
    _radii(+0.5).to_csv(tmp_path / "qwen" / "fig02a_tolerance_radius.csv", index=False)
    lines = claims_section(tmp_path, {"model": "main-model"})
    table = [l for l in lines if l.startswith("| 1.")][0]
    assert "| main-model | qwen-x |" in "\n".join(lines)
    assert table.count("**holds**") == 1 and "**does not hold**" in table
    assert "(qwen/fig02a_tolerance_radius.png)" in table
    assert sum("not measured" in l for l in lines if l.startswith("| ")) == 4  # claims 2-5: no CSVs
    assert claims_section(tmp_path, {"model": "toy", "quick": True}) == []
