"""Tolerance radius: the fast estimator agrees with the paper's procedure; seeded and reproducible."""

import pytest

import geomprobe as gp
from geomprobe.errors import GeomprobeError


@pytest.fixture(scope="module")
def edit(tmp_path_factory):
    import os

    os.environ["GEOMPROBE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    lm = gp.load_model("toy-llama", device="cpu")
    reqs = gp.load_requests("toy")[:4]
    cfg = gp.editors.preset_for(lm).with_(value_steps=20)
    upd = gp.editors.get("rose-no-hki", config=cfg).compute(lm, reqs)
    return lm, upd


def test_fast_and_reference_agree_within_one_step(edit):
    lm, upd = edit
    ref = gp.probes.tolerance_radius(lm, upd, method="reference", trials=6)
    fast = gp.probes.tolerance_radius(lm, upd, method="fast", trials=6)
    assert len(ref) == len(fast) == len(upd.requests)
    assert ref["predicted"].any(), "the optimised values should predict at least one target"
    gap = (ref["value"] - fast["value"]).abs() / ref["step"]
    assert (gap <= 1.0 + 1e-9).all(), gap.tolist()
    assert (fast["evaluations"] <= ref["evaluations"] + 4).all()


def test_radius_is_reproducible_and_seed_dependent(edit):
    lm, upd = edit
    a = gp.probes.tolerance_radius(lm, upd, trials=5, seed=3)
    b = gp.probes.tolerance_radius(lm, upd, trials=5, seed=3)
    assert a["value"].tolist() == b["value"].tolist()
    assert set(a.columns) >= {"editor", "case_id", "subject", "relation", "form", "layer", "metric", "value", "seed"}


def test_bad_arguments(edit):
    lm, upd = edit
    with pytest.raises(GeomprobeError):
        gp.probes.tolerance_radius(lm, upd, method="slow")
    with pytest.raises(GeomprobeError):
        gp.probes.tolerance_radius(lm, upd, trials=0)
    with pytest.raises(GeomprobeError):
        gp.probes.tolerance_radius(lm, upd, step=-1.0)
