"""The README's request-file example is a real fixture: the same text, and `diagnose` runs on it."""

import json
import re
from pathlib import Path

import pytest

import geomprobe as gp
from geomprobe.data.forms import eval_prompts, relation_templates, train_prompts
from geomprobe.errors import RequestFormatError

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "readme_requests.json"


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Request files", 1)[1]
    return re.search(r"```json\n(.*?)\n```", section, re.S).group(1)


def test_readme_example_is_the_fixture():
    assert _readme_example() == FIXTURE.read_text().rstrip("\n")


def test_readme_example_loads_with_its_own_relation():
    reqs = gp.load_requests(str(FIXTURE))
    assert [(r.subject, r.relation) for r in reqs] == [("Canada", "capital"), ("Canada", "currency"),
                                                      ("Lionel Messi", "sport")]
    assert "sport" in relation_templates()
    messi = reqs[2]
    # the request's own queries win over the relation's pool; HKI's leaves come from the file's train pool
    assert [p.text for p in eval_prompts(messi, "question")][0].count("Which sport does Lionel Messi play?") == 1
    assert len(train_prompts("sport", "Lionel Messi")) == 6


def test_templates_cannot_redefine_a_builtin_relation(tmp_path):
    data = json.loads(FIXTURE.read_text())
    data["templates"] = {"capital": data["templates"]["sport"]}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(RequestFormatError, match="built in"):
        gp.load_requests(str(bad))
    data["oops"] = 1
    bad.write_text(json.dumps(data))
    with pytest.raises(RequestFormatError, match="unknown top-level"):
        gp.load_requests(str(bad))


def test_diagnose_runs_on_the_readme_example():
    lm = gp.load_model("toy-llama", device="cpu")
    rep = gp.diagnose(lm, str(FIXTURE), editor="rose", trials=2, log=lambda s: None,
                      overrides={"value_steps": 2})
    seen = {(v["case_id"], v["form"]) for v in rep["verdicts"]}
    assert len(seen) == 9  # 3 requests x declarative / question / instruction
    assert all(v["verdict"] for v in rep["verdicts"])
