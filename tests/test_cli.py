"""CLI: bad input gives one line on stderr and exit code 2; good input works."""

import json

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
    monkeypatch.setenv("GEOMPROBE_CACHE", str(tmp_path / "cache"))
    code, out, err = _run(capsys, "edit", "--model", "toy-gpt2", "--requests", "toy", "--editor", "memit",
                          "--limit", "2", "--forms", "declarative,question", "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "| before " in out and "| after " in out and "efficacy" in out
    for f in ("metrics.csv", "summary.csv", "summary.md", "update.json"):
        assert (tmp_path / "run" / f).stat().st_size > 0
    upd = json.loads((tmp_path / "run" / "update.json").read_text())
    assert upd["editor"] == "memit" and upd["layers"] == [0, 1]
