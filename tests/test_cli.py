"""CLI: bad input gives one line on stderr and exit code 2; good input works."""

import json
import time

import pytest

from geomprobe.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_models_lists_builtins(capsys):
    code, out, _ = _run(capsys, "models")
    assert code == 0 and "toy-gpt2" in out and "toy-llama" in out and "smollm2-135m" in out


@pytest.mark.parametrize("argv, needle", [
    (["edit", "--model", "/no/such/model", "--requests", "toy"], "model directory"),
    (["edit", "--model", "toy-gpt2", "--requests", "/no/such/file.json"], "does not exist"),
    (["edit", "--model", "toy-gpt2", "--requests", "toy", "--editor", "memmit"], "unknown editor"),
    (["edit", "--model", "toy-gpt2", "--requests", "toy", "--layers", "a-b"], "--layers"),
    (["bench", "--only", "nope"], "unknown bench section"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    code, _, err = _run(capsys, *argv)
    assert code == 2
    lines = [l for l in err.splitlines() if l.startswith("geomprobe: error:")]
    assert len(lines) == 1 and needle in lines[0], err


def test_malformed_and_subjectless_request_files(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = _run(capsys, "edit", "--model", "toy-gpt2", "--requests", str(bad))
    assert code == 2 and "not valid JSON" in err
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"requests": [{"subject": "Nobody", "relation": "r", "prompt": "The sky is {}",
                                                  "target_new": "green", "paraphrases": ["no subject here"]}]}))
    code, _, err = _run(capsys, "edit", "--model", "toy-gpt2", "--requests", str(missing), "--forms", "paraphrase")
    assert code == 2 and "does not occur" in err


def test_edit_runs_end_to_end_and_leaves_the_weights(capsys, tmp_path, monkeypatch):
    """`edit` evaluates the edit inside ``update.applied`` and must hand the model back bit-exactly: the rewrite
    weights of the very model object the command loaded are compared with a snapshot taken at load time."""
    import torch

    import geomprobe.models as models

    monkeypatch.setenv("GEOMPROBE_CACHE", str(tmp_path / "cache"))
    real, seen = models.load_model, {}

    def load_and_snapshot(*args, **kwargs):
        lm = real(*args, **kwargs)
        seen["lm"] = lm
        seen["weights"] = {l: lm.rewrite_module(l).weight.detach().clone() for l in range(lm.n_layers)}
        return lm

    monkeypatch.setattr(models, "load_model", load_and_snapshot)
    code, out, err = _run(capsys, "--quiet", "edit", "--model", "toy-gpt2", "--requests", "toy", "--editor",
                          "memit", "--limit", "2", "--forms", "declarative,question", "--out", str(tmp_path / "run"),
                          "--set", "n_tokens=2000")  # a small covariance sample keeps the test fast
    assert code == 0, err
    assert "| before " in out and "| after " in out and "efficacy" in out
    for f in ("metrics.csv", "summary.csv", "summary.md", "update.json"):
        assert (tmp_path / "run" / f).stat().st_size > 0
    upd = json.loads((tmp_path / "run" / "update.json").read_text())
    assert upd["editor"] == "memit" and upd["layers"] == [0, 1]
    assert all(v > 0 for v in upd["delta_norms"].values())  # an edit was computed...
    lm = seen["lm"]
    changed = [l for l, w in seen["weights"].items() if not torch.equal(lm.rewrite_module(l).weight, w)]
    assert changed == [], f"`edit` left the rewrite weights of layers {changed} modified"  # ...and not left applied
    assert "done in" not in err and "building key covariance" not in err  # --quiet


# ---- options validated before any model loads --------------------------------------------------------------

@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: the CLI must reject bad options before loading."""
    import geomprobe.models as models
    import geomprobe.models.load as load

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_model", boom)
    monkeypatch.setattr(load, "load_model", boom)


def _one_line_error(capsys, *argv, limit_s: float = 5.0) -> str:
    t0 = time.perf_counter()
    code, out, err = _run(capsys, *argv)
    elapsed = time.perf_counter() - t0
    assert code == 2, (code, err)
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("geomprobe") and "Traceback" not in err
    assert elapsed < limit_s, f"took {elapsed:.1f} s"
    return err


@pytest.mark.parametrize("argv, needles", [
    (["--set", "value_lr=abc", "diagnose", "--model", "toy-gpt2", "--requests", "toy"],
     ["value_lr", "float", "--set value_lr="]),
    (["diagnose", "--model", "toy-gpt2", "--requests", "toy", "--set", "value_lr=abc"], ["value_lr", "float"]),
    (["compare", "--model", "toy-gpt2", "--requests", "toy", "--set", "lr=0.1"], ["unknown", "value_lr"]),
    (["diagnose", "--model", "toy-gpt2", "--requests", "toy", "--set", "value_step=3"], ["value_steps"]),
    (["diagnose", "--model", "toy-gpt2", "--requests", "toy", "--set", "value_steps=2.5"], ["value_steps", "int"]),
    (["diagnose", "--model", "toy-gpt2", "--requests", "toy", "--set", "value_steps=0"], ["steps 0"]),
    (["diagnose", "--model", "toy-gpt2", "--requests", "toy", "--set", "projection_mode=up"], ["absolute"]),
    (["diagnose", "--model", "toy-gpt2", "--requests", "toy", "--set", "lam"], ["KEY=VALUE"]),
    (["diagnose", "--model", "toy-gpt2", "--requests", "toy", "--layers", "5,4"], ["--layers", "increasing"]),
    (["edit", "--model", "toy-gpt2", "--requests", "toy", "--set", "lam=x"], ["lam", "float"]),
    (["edit", "--model", "toy-gpt2", "--requests", "toy", "--forms", "decl"], ["--forms", "decl"]),
    (["diagnose", "--model", "toy-gpt2", "--requests", "toy", "--editor", "memitt"], ["unknown editor", "memit"]),
    (["compare", "--model", "toy-gpt2", "--requests", "toy", "--editors", "memit,rosee"], ["rosee", "rose"]),
    (["compare", "--model", "toy-gpt2", "--requests", "toyy"], ["does not exist", "toy"]),
    (["diagnose", "--model", "toy-gpt2", "--requests", "toy", "--trials", "0"], ["--trials"]),
    (["diagnose", "--model", "toy-gpt2", "--requests", "toy", "--trials", "x"], ["--trials"]),  # argparse: 1 line
    (["--set", "lam=1", "models"], ["--set"]),
])
def test_bad_options_fail_fast_without_loading_a_model(capsys, no_model, argv, needles):
    err = _one_line_error(capsys, *argv)
    for n in needles:
        assert n in err, err


@pytest.mark.parametrize("name", ["smollm3-135m", "SmolLM2-135", "toy-gtp2"])
def test_misspelt_model_names_the_nearest_builtin_at_once(capsys, no_model, name):
    err = _one_line_error(capsys, "diagnose", "--model", name, "--requests", "toy", limit_s=3.0)
    assert "did you mean" in err and ("smollm2-135m" in err or "toy-gpt2" in err), err


def test_unknown_hub_id_offline_fails_at_once(capsys, no_model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = _one_line_error(capsys, "edit", "--model", "nosuch-org/smollm2-135m-typo", "--requests", "toy",
                          limit_s=3.0)
    assert "HF_HUB_OFFLINE" in err and "smollm2-135m" in err, err


@pytest.mark.parametrize("argv, needles", [
    # the model's layer count comes from its config.json (or the built-in table), no weights loaded
    (["diagnose", "--model", "smollm2-135m", "--requests", "toy", "--layers", "99"],
     ["--layers 99", "30 layers (0..29)", "did you mean --layers 29?"]),
    (["compare", "--model", "toy-llama", "--requests", "toy", "--layers", "2-5"],
     ["4 layers (0..3)", "layer 4", "did you mean --layers 2-3?"]),
    (["edit", "--model", "toy-gpt2", "--requests", "toy", "--set", "layers=1,7"], ["--set layers=1,7", "0..3"]),
    (["stats", "--model", "toy-gpt2", "--layers", "12"], ["--layers 12", "did you mean --layers 3?"]),
    (["diagnose", "--model", "smollm2-135m", "--requests", "toy", "--set", "lr=abc"],
     ["unknown editor option", "did you mean value_lr?"]),
    (["diagnose", "--model", "smollm2-135m", "--requests", "toy", "--set", "value_lr=abc"], ["value_lr", "float"]),
    (["diagnose", "--model", "foo", "--requests", "toy"], ["'foo'", "not a model hub id", "nearest built-in"]),
])
def test_realistic_mistakes_fail_in_seconds_naming_the_nearest_choice(capsys, no_model, argv, needles):
    err = _one_line_error(capsys, *argv, limit_s=3.0)
    for n in needles:
        assert n in err, err


def test_uncached_hub_id_without_a_reachable_hub_fails_at_once(capsys, no_model, monkeypatch):
    import geomprobe.models.names as names

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    asked = []
    monkeypatch.setattr(names, "_hub_reachable", lambda *a, **k: asked.append(1) or False)
    err = _one_line_error(capsys, "diagnose", "--model", "someorg/smollm2-135m-typo", "--requests", "toy",
                          limit_s=3.0)
    assert asked and "cannot be reached" in err and "nearest built-in: smollm2-135m" in err, err


def test_the_python_loader_refuses_unreachable_names_at_once(monkeypatch):
    import geomprobe.models.names as names
    import geomprobe.models.load as load
    from geomprobe.errors import ModelLoadError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(names, "_hub_reachable", lambda *a, **k: False)
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError, match="did you mean smollm2-135m"):
        load.load_model("smollm2-135")  # a typo: no hub request at all
    with pytest.raises(ModelLoadError, match="nearest built-in"):
        load.load_model("foo")  # not org/name: not a hub id
    with pytest.raises(ModelLoadError, match="cannot be reached"):
        load.load_model("someorg/smollm2-135m-typo")
    assert time.perf_counter() - t0 < 3.0


def test_set_values_are_parsed_by_the_config_types():
    from geomprobe.editors.options import parse_overrides

    got = parse_overrides(["value_steps=40", "lam=1e3", "seed=7", "value_lr=0.25", "projection_mode=energy"], "2-4")
    assert got == {"value_steps": 40, "lam": 1000.0, "seed": 7, "value_lr": 0.25, "projection_mode": "energy",
                   "layers": (2, 3, 4)}
    assert type(got["value_steps"]) is int and type(got["lam"]) is float


# ---- listings and help ---------------------------------------------------------------------------------------

def test_relations_lists_builtin_pools_with_examples(capsys):
    code, out, _ = _run(capsys, "relations")
    assert code == 0
    assert "capital: 12 train templates" in out and "The capital of {} is" in out
    for form in ("declarative:", "question:", "instruction:"):
        assert form in out


def test_editors_lists_names_modes_and_options(capsys):
    from geomprobe.editors import EDITORS

    code, out, _ = _run(capsys, "editors")
    assert code == 0
    for name in EDITORS:
        assert f"  {name} " in out, name
    assert "revive(" in out
    lines = {l.split()[0]: l.split() for l in out.splitlines() if l.startswith("  ") and len(l.split()) > 2}
    assert lines["value_steps"][1:3] == ["int", "25"]
    assert lines["value_lr"][1:3] == ["float", "0.5"]
    assert lines["layers"][1] == "ints" and lines["lam"][1] == "float" and lines["projection_mode"][1] == "str"
    code, out, _ = _run(capsys, "editors", "--model", "smollm2-135m")
    assert code == 0 and "smollm2-135m preset" in out and "3,4,5,6,7" in out


@pytest.mark.parametrize("cmd", ["edit", "stats", "bench", "figures", "diagnose", "compare", "demo", "toy"])
def test_help_shows_defaults_and_explains_model_and_editor(capsys, cmd):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "default" in out
    if cmd in ("diagnose",):
        assert "(default: memit)" in out and "(default: 10)" in out and "(default: geomprobe-diagnose)" in out
        assert "see `geomprobe editors`" in out and "`geomprobe models`" in out
    if cmd == "compare":
        assert "(default: memit,memit-merge,alphaedit,rose)" in out


# ---- progress ------------------------------------------------------------------------------------------------

def test_progress_is_silent_off_a_terminal_except_start_and_end_lines(capsys, monkeypatch):
    from geomprobe import progress as pr

    monkeypatch.delenv("GEOMPROBE_QUIET", raising=False)
    with pr.progress(10, "steps", "step") as bar:
        for _ in range(10):
            bar.update()
            bar.set(loss=1.0)
    list(pr.track(range(5), "requests"))
    assert capsys.readouterr().err == ""  # not a terminal: no bars
    with pr.progress(100, "key covariance L[0]", "tok", lines=True, announce="building key covariance") as bar:
        bar.update(100)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "building key covariance" in err[0] and "done: 100/100 tok" in err[1], err
    monkeypatch.setenv("GEOMPROBE_QUIET", "1")
    with pr.progress(100, "x", lines=True, announce="y") as bar:
        bar.update(100)
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("GEOMPROBE_QUIET")
    with pr.quiet():
        pr.note("hidden")
    pr.note("shown")
    assert capsys.readouterr().err == "geomprobe: shown\n"


def test_bad_options_answer_without_importing_torch():
    """The checks run before torch and transformers are imported (about 0.2 s from the shell instead of 3-4 s)."""
    import subprocess
    import sys

    code = ("import sys; from geomprobe.cli import main; "
            "rc = main(['--set', 'value_lr=abc', 'diagnose', '--model', 'toy-gpt2', '--requests', 'toy']); "
            "print(rc, 'torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False", "False"], (out.stdout, out.stderr)
    assert "value_lr" in out.stderr
