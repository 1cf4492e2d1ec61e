"""Loaders for S2RKE, CounterFact, zsRE, LoCoMo and format detection."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from geomprobe.data.loaders import (  # noqa: E402
    detect_format,
    load_counterfact,
    load_locomo,
    load_locomo_qa,
    load_requests_file,
    load_s2rke,
    load_zsre,
    split_fact,
)
from geomprobe.data.requests import EditRequest, Query, parse_requests, read_json, save_requests  # noqa: E402
from geomprobe.errors import RequestFormatError  # noqa: E402

FIX = Path(__file__).parent / "fixtures"
S2RKE = FIX / "s2rke_sample.json"
CF = FIX / "counterfact_sample.json"
ZSRE = FIX / "zsre_memit_sample.json"
ZSRE_EE = FIX / "zsre_easyedit_sample.json"
LOCOMO = FIX / "locomo_sample.json"
GEOMPROBE = FIX / "geomprobe_requests.json"


def roundtrip(reqs: list[EditRequest], tmp_path: Path) -> list[EditRequest]:
    path = save_requests(reqs, tmp_path / "saved.json")
    return parse_requests(read_json(path), str(path))


def write(tmp_path: Path, data, name: str = "bad.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def raises_one_line(fn, *args, match: str = "", **kwargs) -> str:
    with pytest.raises(RequestFormatError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    assert match in msg, msg
    return msg


# ------------------------------------------------------------------ S2RKE


def test_s2rke_fields_and_roundtrip(tmp_path):
    skipped = Counter()
    reqs = load_s2rke(S2RKE, skipped=skipped)
    assert [r.case_id for r in reqs] == ["101-0", "101-1", "101-2", "202-0", "202-1"]
    assert [r.subject for r in reqs] == ["Lyon"] * 3 + ["Ada Lovelace"] * 2
    first = reqs[0]
    assert (first.prompt, first.relation, first.target_new, first.target_true) == (
        "{}, which is located in", "located_in_country", "Portugal", "France")
    assert first.text == "Lyon, which is located in"
    assert first.neighborhood == ("Marseille, which is located in", "Bordeaux is a city in")
    assert first.queries == (
        Query("Which country is Lyon located in?", "question", "Portugal"),
        Query("Name the country that contains the city of Lyon.", "instruction", "Portugal"),
    )
    # {"str": ...} targets and relation_id
    assert (reqs[2].relation, reqs[2].target_new, reqs[2].target_true) == ("P190", "Osaka", "Birmingham")
    # the paraphrase about Paris does not name Lyon: dropped and counted
    assert reqs[2].paraphrases == ("One sister city of Lyon is",)
    # so is the question that says "she" instead of the subject
    assert skipped == Counter(paraphrase_without_subject=1, query_without_subject=1)
    assert reqs[3].queries == (Query("What field did Ada Lovelace work in?", "question", "botany"),)
    assert roundtrip(reqs, tmp_path) == reqs


def test_s2rke_malformed(tmp_path):
    data = json.loads(S2RKE.read_text())
    del data[1]["subject"]["name"]
    path = write(tmp_path, data)
    msg = raises_one_line(load_s2rke, path, match="record 1")
    assert str(path) in msg and "'subject.name'" in msg

    data = json.loads(S2RKE.read_text())
    del data[0]["Star_Topology"][2]["requested_rewrite"]["target_new"]
    msg = raises_one_line(load_s2rke, write(tmp_path, data), match="record 0 Star_Topology[2]")
    assert "'requested_rewrite.target_new'" in msg

    data = json.loads(S2RKE.read_text())
    data[0]["Star_Topology"] = {"oops": 1}
    raises_one_line(load_s2rke, write(tmp_path, data), match="'Star_Topology' must be a list")

    data = json.loads(S2RKE.read_text())
    data[0]["Star_Topology"][0]["paraphrase_prompts"] = 7
    raises_one_line(load_s2rke, write(tmp_path, data), match="'paraphrase_prompts' must be a list of strings")

    data = json.loads(S2RKE.read_text())
    data[0]["Star_Topology"][0]["requested_rewrite"]["prompt"] = "Somewhere, which is located in"
    raises_one_line(load_s2rke, write(tmp_path, data), match="needs exactly one '{}'")


# ------------------------------------------------------------------ CounterFact


def test_counterfact_fields_and_roundtrip(tmp_path):
    reqs = load_counterfact(CF)
    assert [r.subject for r in reqs] == ["Sofia Marchetti", "Toyota Corolla", "Norway", "Marcus Hale"]
    assert [r.case_id for r in reqs] == ["0", "1", "2", "3"]
    assert [(r.relation, r.target_new, r.target_true) for r in reqs] == [
        ("P103", "Dutch", "Italian"), ("P176", "Nokia", "Toyota"),
        ("P36", "Lisbon", "Oslo"), ("P1303", "violin", "guitar")]
    assert reqs[2].prompt == "{}, which has the capital city"
    assert reqs[0].paraphrases[1] == "Sofia Marchetti is a native speaker of"
    assert reqs[0].neighborhood == ("The mother tongue of Luca Bianchi is", "Giulia Romano, a native speaker of")
    assert all(r.queries == () for r in reqs)
    assert roundtrip(reqs, tmp_path) == reqs


def test_prompt_spelling_out_subject(tmp_path):
    data = json.loads(CF.read_text())
    data[2]["requested_rewrite"]["prompt"] = "Norway, which has the capital city"
    assert load_counterfact(write(tmp_path, data))[2].prompt == "{}, which has the capital city"


def test_counterfact_malformed(tmp_path):
    data = json.loads(CF.read_text())
    del data[2]["requested_rewrite"]["target_new"]
    path = write(tmp_path, data)
    msg = raises_one_line(load_counterfact, path, match="record 2")
    assert str(path) in msg and "'requested_rewrite.target_new'" in msg

    data = json.loads(CF.read_text())
    data[1]["requested_rewrite"]["target_new"] = {"id": "Q1"}
    raises_one_line(load_counterfact, write(tmp_path, data), match="'requested_rewrite.target_new.str'")

    data = json.loads(CF.read_text())
    data[3]["requested_rewrite"]["target_new"]["str"] = "  "  # EditRequest's own check, with the file named
    msg = raises_one_line(load_counterfact, write(tmp_path, data), match="record 3")
    assert "'target_new' must be a non-empty string" in msg

    data = json.loads(CF.read_text())
    data[0]["requested_rewrite"]["prompt"] = "Norway, whose capital is"  # names neither {} nor the subject
    raises_one_line(load_counterfact, write(tmp_path, data), match="record 0: requested_rewrite.prompt")

    data = json.loads(CF.read_text())
    data[0] = ["not", "an", "object"]
    raises_one_line(load_counterfact, write(tmp_path, data), match="record 0")


# ------------------------------------------------------------------ zsRE


def test_zsre_memit_fields_and_roundtrip(tmp_path):
    skipped = Counter()
    reqs = load_zsre(ZSRE, skipped=skipped)
    assert [r.subject for r in reqs] == ["Watford Gap", "HMS Resolute", "Elena Vasquez", "Lake Tahoe"]
    assert {r.relation for r in reqs} == {"zsre"}
    r = reqs[0]
    assert (r.prompt, r.target_new, r.target_true) == ("Which county is {} located in?", "Cornwall", "Northamptonshire")
    assert r.paraphrases == ("In which county is Watford Gap?",)
    assert r.neighborhood == ("who wrote the novel the old man and the sea",)  # "nq question: " stripped
    assert r.queries == (Query("Which county is Watford Gap located in?", "question", "Cornwall"),)
    # rephrase that does not name the subject is dropped and counted
    assert reqs[1].paraphrases == ()
    assert skipped == Counter(paraphrase_without_subject=1)
    # empty answers fall back to pred
    assert reqs[2].target_true == "actor"
    assert reqs[2].prompt == "What is {}'s occupation?"
    assert roundtrip(reqs, tmp_path) == reqs


def test_zsre_easyedit_fields_and_roundtrip(tmp_path):
    reqs = load_zsre(ZSRE_EE)
    assert [(r.subject, r.prompt, r.target_new, r.target_true) for r in reqs] == [
        ("Bryn Mawr College", "In which state is {}?", "Oregon", "Pennsylvania"),
        ("Ravel", "What instrument did {} play?", "trumpet", "piano"),
        ("Kestrel Mine", "Which country is {} in?", "Chile", "Australia"),
    ]
    assert reqs[1].neighborhood == ("where is the great barrier reef located",)
    assert roundtrip(reqs, tmp_path) == reqs


def test_zsre_subject_not_in_src(tmp_path):
    data = json.loads(ZSRE.read_text())
    data[3]["src"] = "Which mountain range is the lake part of?"
    path = write(tmp_path, data)
    msg = raises_one_line(load_zsre, path, match="record 3")
    assert "'Lake Tahoe' does not occur in src" in msg and str(path) in msg
    skipped = Counter()
    reqs = load_zsre(path, skipped=skipped, skip_unmatched=True)
    assert len(reqs) == 3 and skipped["src_without_subject"] == 1


def test_zsre_missing_field(tmp_path):
    data = json.loads(ZSRE.read_text())
    del data[1]["alt"]
    raises_one_line(load_zsre, write(tmp_path, data), match="record 1: missing field 'alt'")


# ------------------------------------------------------------------ LoCoMo


def test_locomo_fields_and_roundtrip(tmp_path):
    skipped = Counter()
    reqs = load_locomo(LOCOMO, skipped=skipped)
    got = [(r.subject, r.prompt, r.target_new) for r in reqs]
    assert got == [
        ("Priya", "{} signed up for a pottery class at the", "community centre"),
        ("Tomas", "{} adopted a beagle named", "Biscuit"),
        ("Priya", "{} made a blue vase in her", "pottery class"),
        ("Priya", "{} is planning to move to", "Lisbon"),
        ("Tomas", "{} is training for the", "Berlin marathon"),
    ]
    assert all(r.target_true is None and r.relation == "locomo" for r in reqs)
    assert reqs[1].case_id == "conv-demo:s1:Tomas:0"
    # "The beagle chewed ..." does not name its speaker; the adversarial QA has no answer
    assert skipped == Counter(fact_without_subject=1, qa_unattached=1)
    assert reqs[1].queries == (Query("What is the name of Tomas's dog?", "question", "Biscuit"),)
    assert reqs[0].queries == (Query("When did Priya sign up for the pottery class?", "question", "3 March 2023"),)
    assert Query("Which city is Priya planning to move to?", "question", "Lisbon") in reqs[3].queries
    assert reqs[4].queries == ()
    assert roundtrip(reqs, tmp_path) == reqs


def test_locomo_top_level_observations(tmp_path):
    data = json.loads(LOCOMO.read_text())
    data[0].update(data[0].pop("observation"))  # the other release layout
    assert load_locomo(write(tmp_path, data, "flat.json")) == load_locomo(LOCOMO)
    assert detect_format(data) == "locomo"


def test_locomo_qa_frame():
    df = load_locomo_qa(LOCOMO)
    assert list(df.columns) == ["sample_id", "question", "answer", "category", "evidence"]
    assert len(df) == 4
    assert df["answer"][:3].tolist() == ["Biscuit", "Lisbon", "3 March 2023"]
    assert df["answer"].isna().tolist() == [False, False, False, True]  # adversarial item: no answer
    assert df["category"].tolist() == [4, 1, 2, 5]
    assert df["evidence"][0] == ["D1:2", "D1:4"]
    assert set(df["sample_id"]) == {"conv-demo"}


def test_locomo_malformed(tmp_path):
    data = json.loads(LOCOMO.read_text())
    del data[0]["conversation"]["speaker_b"]
    raises_one_line(load_locomo, write(tmp_path, data), match="record 0: missing field 'conversation.speaker_b'")

    data = json.loads(LOCOMO.read_text())
    data[0]["observation"]["session_2_observation"]["Tomas"] = "trains a lot"
    raises_one_line(load_locomo, write(tmp_path, data), match="session_2_observation['Tomas']")

    data = json.loads(LOCOMO.read_text())
    del data[0]["qa"][2]["question"]
    raises_one_line(load_locomo_qa, write(tmp_path, data), match="qa[2]: missing field 'qa.question'")


@pytest.mark.parametrize("fact, subject, expected", [
    ("Caroline attended a support group on 7 May 2023.", "Caroline", ("{} attended a support group on", "7 May 2023")),
    ("Melanie is a painter.", "Melanie", ("{} is a", "painter")),
    ("Melanie's kids love dinosaurs!", "Melanie", ("{}'s kids", "love dinosaurs")),
    ("Jon likes Jonathan's cooking", "Jon", ("{} likes", "Jonathan's cooking")),
    ("Jon runs.", "Jon", None),
    ("Jonathan runs every day.", "Jon", None),
])
def test_split_fact(fact, subject, expected):
    assert split_fact(fact, subject) == expected


# ------------------------------------------------------------------ detection


@pytest.mark.parametrize("path, fmt, loader", [
    (S2RKE, "s2rke", load_s2rke),
    (CF, "counterfact", load_counterfact),
    (ZSRE, "zsre", load_zsre),
    (ZSRE_EE, "zsre", load_zsre),
    (LOCOMO, "locomo", load_locomo),
    (GEOMPROBE, "geomprobe", lambda p: parse_requests(read_json(p), str(p))),
])
def test_detection_picks_loader(path, fmt, loader):
    assert detect_format(read_json(path)) == fmt
    reqs = load_requests_file(path)
    assert reqs == loader(path) and len(reqs) >= 2


def test_geomprobe_list_and_jsonl(tmp_path):
    reqs = load_requests_file(GEOMPROBE)
    as_list = write(tmp_path, [r.to_dict() for r in reqs], "list.json")
    assert load_requests_file(as_list) == reqs
    jsonl = tmp_path / "cf.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in json.loads(CF.read_text())) + "\n")
    assert load_requests_file(jsonl) == load_counterfact(CF)


def test_forced_format(tmp_path):
    assert load_requests_file(CF, fmt="counterfact") == load_counterfact(CF)
    raises_one_line(load_requests_file, CF, fmt="zsre", match="record 0: missing field 'subject'")
    raises_one_line(load_requests_file, CF, fmt="alpaca", match="unknown request format 'alpaca'")


@pytest.mark.parametrize("content, match", [
    ("{not json", "is not valid JSON"),
    ("[]", "holds no records"),
    ('[{"instruction": "x", "output": "y"}]', "unrecognised record layout"),
    ('{"data": []}', "unrecognised JSON object"),
    ("42", "unrecognised JSON int"),
    ('["a string"]', "record 0 is a str"),
])
def test_detection_errors(tmp_path, content, match):
    path = write(tmp_path, content)
    msg = raises_one_line(load_requests_file, path, match=match)
    if "unrecognised" in match:
        for name in ("geomprobe", "S2RKE", "CounterFact", "zsRE", "LoCoMo"):
            assert name in msg


def test_missing_file(tmp_path):
    raises_one_line(load_requests_file, tmp_path / "nope.json", match="does not exist")


@pytest.mark.parametrize("loader", [load_s2rke, load_counterfact, load_zsre, load_locomo])
def test_loaders_reject_empty_and_object(tmp_path, loader):
    raises_one_line(loader, write(tmp_path, "[]"), match="holds no records")
    raises_one_line(loader, write(tmp_path, '"text"'), match="must hold a JSON list")


@pytest.mark.parametrize("path", [S2RKE, CF, ZSRE, ZSRE_EE, LOCOMO, GEOMPROBE])
def test_loaded_requests_render_in_every_form(path):
    from geomprobe.data.forms import eval_prompts

    for r in load_requests_file(path):
        for form in ("declarative", "paraphrase", "question", "instruction"):
            for rendered in eval_prompts(r, form, templates={}):
                start, end = rendered.subject_span
                assert rendered.text[start:end] == r.subject
