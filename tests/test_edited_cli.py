"""``geomprobe diagnose --edited PATH`` and ``geomprobe compare --edited NAME=PATH`` on toy-llama: an edit made
elsewhere (here: a geomprobe edit saved as another tool would save it) is imported and measured like an editor's;
bad input and edits that cannot be diagnosed are refused with one line, exit 2, the model's weights untouched."""

import json

import pytest
import torch

import geomprobe as gp
import geomprobe.models as models
from geomprobe.cli import main
from geomprobe.editors.imported import save_deltas, save_weights
from geomprobe.workspace import Workspace

OCC = {"case_id": "b-occ", "subject": "Blorptang", "relation": "occupation", "prompt": "The occupation of {} is",
       "target_new": "sailor", "target_true": "pilot"}
LABEL = "Blorptang · occupation"
#: the edit the tests import: rose-no-hki (isotropic rule, no covariance) with the toy preset; on this request it
#: succeeds on every form (tests/test_report.py), so the imported edit must too
EDITOR = "rose-no-hki"


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _snapshot(lm):
    return {k: v.detach().clone() for k, v in lm.model.state_dict().items()}


def _unchanged(lm, snap):
    now = lm.model.state_dict()
    return set(now) == set(snap) and all(torch.equal(now[k], snap[k]) for k in snap)


@pytest.fixture(scope="module")
def toy():
    return gp.load_model("toy-llama", device="cpu")


@pytest.fixture(scope="module")
def saved(toy, tmp_path_factory):
    """The request file, and the edit saved as edited weights (a directory) and as {layer: ΔW} (a file)."""
    d = tmp_path_factory.mktemp("edited")
    reqs_file = d / "occ.json"
    reqs_file.write_text(json.dumps({"requests": [OCC]}))
    reqs = list(gp.load_requests(str(reqs_file)))
    upd = gp.editors.get(EDITOR, config=gp.editors.preset_for(toy)).compute(toy, reqs)
    return {"requests": reqs_file, "weights": save_weights(upd, toy, d / "edited-model").parent,
            "deltas": save_deltas(upd, d / "deltas.safetensors"), "update": upd}


@pytest.fixture
def same_model(toy, monkeypatch):
    """The CLI loads the test's toy-llama object, so its weights can be compared after the command."""
    monkeypatch.setattr(models, "load_model", lambda *a, **k: toy)
    return toy


def test_cli_diagnose_edited_writes_the_imported_edits_report(capsys, saved, same_model, tmp_path):
    snap = _snapshot(same_model)
    code, out, err = _run(capsys, "diagnose", "--model", "toy-llama", "--requests", str(saved["requests"]),
                          "--edited", str(saved["weights"]), "--name", "mine", "--trials", "4",
                          "--out", str(tmp_path))
    assert code == 0, err
    assert _unchanged(same_model, snap)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["editor"] == "mine" and data["editor_mode"] == "imported" and data["editor_rule"] is None
    assert data["imported"]["origin"] == str(saved["weights"]) and data["imported"]["form"] == "weights"
    assert data["run"] is None and data["weights_unchanged"] is True
    assert data["layers"] == list(saved["update"].layers)
    assert [(m["editor"], m["form"]) for m in data["measurements"]] == [
        ("mine", f) for f in ("declarative", "question", "instruction")]
    for m in data["measurements"]:
        assert m["rho"] is not None and m["rho"] > 0 and m["success_after"] == 1.0  # the edit takes on every form
        assert m["delta_covariance"] is None and m["conflict"] is None  # not available for an imported edit
    assert all(v["ok"] and v["rules"] == ["ok"] for v in data["verdicts"])
    assert "imported edit mine" in out and LABEL in out and "not available for an imported edit" in out
    assert "not available for an imported edit" in (tmp_path / "report.md").read_text()


def test_cli_compare_edited_adds_the_imported_edits_rows(capsys, saved, same_model, tmp_path):
    snap = _snapshot(same_model)
    code, out, err = _run(capsys, "compare", "--model", "toy-llama", "--requests", str(saved["requests"]),
                          "--editors", EDITOR, "--edited", f"mine={saved['deltas']}",
                          "--edited", f"dir={saved['weights']}", "--trials", "4", "--out", str(tmp_path))
    assert code == 0, err
    assert _unchanged(same_model, snap)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["editors"] == [EDITOR, "mine", "dir"]
    assert data["edited"] == {"mine": str(saved["deltas"]), "dir": str(saved["weights"])}
    assert [(t["editor"], t["form"]) for t in data["table"]] == [
        (e, f) for e in (EDITOR, "mine", "dir") for f in ("declarative", "question", "instruction")]
    rows = {(t["editor"], t["form"]): t for t in data["table"]}
    for form in ("declarative", "question", "instruction"):
        ed, mine, d = rows[(EDITOR, form)], rows[("mine", form)], rows[("dir", form)]
        # the same edited weights (ΔW bit-exact from the deltas file; from the saved weights the applied change
        # W_edited − W, which re-applies bit for bit but differs from the float32 ΔW by rounding)
        assert ed["success_after"] == mine["success_after"] == d["success_after"] == 1.0
        assert mine["delta_median"] == pytest.approx(ed["delta_median"], rel=1e-6, abs=1e-9)
        assert d["delta_median"] == pytest.approx(mine["delta_median"], rel=1e-4, abs=1e-6)
        assert mine["rho_median"] > 0 and mine["edit_seconds"] == 0.0
    assert data["per_editor"][EDITOR]["imported"] is None
    assert data["per_editor"]["mine"]["imported"]["form"] == "deltas"
    assert data["per_editor"]["dir"]["imported"]["form"] == "weights"
    assert "mine: imported edit mine" in out and "not available for an imported edit" in out


def _refused(capsys, *argv):
    code, out, err = _run(capsys, *argv)
    lines = [l for l in err.splitlines() if l.startswith("geomprobe: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err and not out, (code, err)
    return lines[0]


def test_cli_refuses_edits_that_cannot_be_diagnosed(capsys, saved, same_model, tiny_dirs, tmp_path):
    """Another architecture, a ΔW of another shape, an edit that changed nothing: one line, exit 2, no report, and
    the loaded model's weights bit-identical."""
    from safetensors.torch import save_file

    lm = same_model
    d, m = lm.d_model, lm.d_mlp
    save_file({"0": torch.ones(d, m + 1)}, str(tmp_path / "wrong-shape.safetensors"))
    save_file({f"{lm.spec.rewrite_name(1)}.weight": lm.weight(1).detach().clone()}, str(tmp_path / "same.safetensors"))
    cases = [(tiny_dirs["gpt2"], "'gpt2' model"),  # a saved model of another (tiny) architecture
             (tmp_path / "wrong-shape.safetensors", "not (d_model, d_mlp)"),
             (tmp_path / "same.safetensors", "nothing to diagnose")]
    snap = _snapshot(lm)
    for path, needle in cases:
        for argv in (["diagnose", "--edited", str(path)], ["compare", "--editors", EDITOR, "--edited", f"x={path}"]):
            line = _refused(capsys, *argv, "--model", "toy-llama", "--requests", str(saved["requests"]),
                            "--out", str(tmp_path / "o"))
            assert needle in line, (argv, line)
            assert _unchanged(lm, snap), argv
    assert not (tmp_path / "o" / "report.json").exists()


@pytest.mark.parametrize("argv, needle", [
    (["diagnose", "--edited", "/no/such/edit"], "do not exist"),
    (["diagnose", "--edited", "{deltas}", "--editor", "memit"], "exclude each other"),
    (["diagnose", "--edited", "{deltas}", "--set", "lam=2"], "brings its own layers"),
    (["diagnose", "--edited", "{deltas}", "--name", "memit"], "editor's name"),
    (["diagnose", "--name", "mine"], "pass it with --edited"),
    (["compare", "--editors", EDITOR, "--edited", "{deltas}"], "NAME=PATH"),
    (["compare", "--editors", EDITOR, "--edited", "=x"], "NAME=PATH"),
    (["compare", "--editors", EDITOR, "--edited", "rome={deltas}"], "editor's name"),
    (["compare", "--editors", EDITOR, "--edited", "a={deltas}", "--edited", "a={deltas}"], "twice"),
    (["compare", "--editors", EDITOR, "--edited", "a=/no/such/edit"], "do not exist"),
])
def test_cli_edited_bad_input_is_one_line_before_the_model_loads(capsys, saved, monkeypatch, argv, needle):
    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(models, "load_model", no_load)
    argv = [a.replace("{deltas}", str(saved["deltas"])) for a in argv]
    line = _refused(capsys, *argv, "--model", "toy-llama", "--requests", str(saved["requests"]))
    assert needle in line, line


def test_api_accepts_a_computed_update_and_refuses_bad_combinations(toy, saved):
    upd = saved["update"]
    reqs = list(gp.load_requests(str(saved["requests"])))
    imp = gp.editors.EditUpdate.from_weights(toy, saved["deltas"], reqs, name="easyedit")
    snap = _snapshot(toy)
    rep = gp.compare(toy, reqs, editors=[], edited={"easyedit": imp}, trials=3, log=lambda s: None)
    assert rep["editors"] == ["easyedit"] and rep["run"] is None and _unchanged(toy, snap)
    assert {t["editor"] for t in rep["table"]} == {"easyedit"}
    with pytest.raises(gp.GeomprobeError, match="not both"):
        gp.diagnose(toy, reqs, editor="memit", edited=saved["deltas"])
    with pytest.raises(gp.GeomprobeError, match="editor's name"):
        gp.compare(toy, reqs, editors=["rome"], edited={"rome": saved["deltas"]})
    with pytest.raises(gp.GeomprobeError, match="requests"):  # an update is measured on the requests it edited
        gp.diagnose(toy, gp.load_requests("toy")[:1], edited=imp, log=lambda s: None)
    ws = Workspace(model=toy, requests=reqs)
    ws.register_update("mine", imp)
    assert ws.update("mine") is imp and ws.is_imported("mine")
    with pytest.raises(gp.GeomprobeError, match="not available for an imported edit"):
        ws.deviation("mine", ("update", "covariance"))
    with pytest.raises(gp.GeomprobeError, match="not an editor"):
        ws.editor("mine")
    with pytest.raises(gp.GeomprobeError, match="editor's name"):
        ws.register_update("memit", imp)
    assert upd.editor == EDITOR and not upd.is_imported
