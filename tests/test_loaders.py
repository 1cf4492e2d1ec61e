"""Loaders for S2RKE, CounterFact, zsRE, EasyEdit, KnowEdit, LoCoMo and format detection."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import geomprobe as gp  # noqa: E402
from geomprobe.data.loaders import (  # noqa: E402
    detect_format,
    load_counterfact,
    load_easyedit,
    load_knowedit,
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
LAYOUTS = FIX / "layouts"
EASYEDIT = LAYOUTS / "easyedit_counterfact.json"
KE_CF = LAYOUTS / "knowedit_wiki_counterfact.json"
KE_ZSRE = LAYOUTS / "knowedit_zsre.json"
KE_RECENT = LAYOUTS / "knowedit_wiki_recent.json"
LOCOMO_CONV = LAYOUTS / "locomo_conversation.json"
S2RKE_ONE = LAYOUTS / "s2rke_single.json"
ZSRE_EMPTY = LAYOUTS / "zsre_empty_alt.json"


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
    (EASYEDIT, "easyedit", load_easyedit),
    (KE_CF, "knowedit", load_knowedit),
    (KE_ZSRE, "knowedit", load_knowedit),
    (KE_RECENT, "knowedit", load_knowedit),
    (LOCOMO_CONV, "locomo", load_locomo),
    (S2RKE_ONE, "s2rke", load_s2rke),
    (ZSRE_EMPTY, "zsre", load_zsre),
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
        for name in ("geomprobe", "S2RKE", "CounterFact", "zsRE", "EasyEdit", "KnowEdit", "LoCoMo"):
            assert name in msg


def test_missing_file(tmp_path):
    raises_one_line(load_requests_file, tmp_path / "nope.json", match="does not exist")


@pytest.mark.parametrize("loader", [load_s2rke, load_counterfact, load_zsre, load_locomo])
def test_loaders_reject_empty_and_object(tmp_path, loader):
    raises_one_line(loader, write(tmp_path, "[]"), match="holds no records")
    raises_one_line(loader, write(tmp_path, '"text"'), match="must hold a JSON list")


@pytest.mark.parametrize("path", [S2RKE, CF, ZSRE, ZSRE_EE, LOCOMO, GEOMPROBE, EASYEDIT, KE_CF, KE_ZSRE, KE_RECENT,
                                  LOCOMO_CONV, S2RKE_ONE, ZSRE_EMPTY])
def test_loaded_requests_render_in_every_form(path):
    from geomprobe.data.forms import eval_prompts

    for r in load_requests_file(path):
        for form in ("declarative", "paraphrase", "question", "instruction"):
            for rendered in eval_prompts(r, form, templates={}):
                start, end = rendered.subject_span
                assert rendered.text[start:end] == r.subject


# ------------------------------------------------------------------ EasyEdit / KnowEdit


def fields_of(r: EditRequest) -> tuple:
    return (r.subject, r.relation, r.prompt, r.target_new, r.target_true, r.paraphrases, r.neighborhood, r.case_id)


def test_easyedit_counterfact_fields_and_roundtrip(tmp_path):
    skipped = Counter()
    reqs = load_easyedit(EASYEDIT, skipped=skipped)
    mother_tongue = "The mother tongue of {} is"
    assert [fields_of(r) for r in reqs] == [
        ("Odile Ferrand", mother_tongue, mother_tongue, "English", "French",
         ("The rain stopped before noon. Odile Ferrand, a native speaker of",),
         ("The mother tongue of Lucien Marchal is",), "0"),
        ("Pieter van Loon", mother_tongue, mother_tongue, "Finnish", "Dutch",
         ("Pieter van Loon spoke the language",), ("Jan Smeets is a native speaker of",), "1"),
        ("Keiko Arai", "{}, the", "{}, the", "piano", "guitar",
         ("Keiko Arai performs on the",), ("Ritchie Vance, performing on the",), "2"),
        # the rephrase says "The university", not the subject: dropped and counted
        ("Polytechnic University of Almeria", "{}, which is located in", "{}, which is located in", "Sweden", "Spain",
         (), ("Museo de Cadiz, located in",), "3"),
    ]
    assert skipped == Counter(paraphrase_without_subject=1)
    assert all(r.queries == () for r in reqs)
    assert roundtrip(reqs, tmp_path) == reqs


def test_easyedit_relation_is_the_normalised_template(tmp_path):
    data = json.loads(EASYEDIT.read_text())
    data[0]["prompt"] = "The  mother tongue of Odile Ferrand   is "
    data[2]["relation"] = "instrument"  # a record's own relation wins
    reqs = load_easyedit(write(tmp_path, data))
    assert reqs[0].prompt == "The  mother tongue of {}   is "
    assert [r.relation for r in reqs[:3]] == ["The mother tongue of {} is"] * 2 + ["instrument"]


def test_easyedit_prompt_without_subject(tmp_path):
    data = json.loads(EASYEDIT.read_text())
    data[1]["prompt"] = "The mother tongue of the physicist is"
    path = write(tmp_path, data)
    msg = raises_one_line(load_easyedit, path, match=f"{path} record 1: prompt")
    assert "needs exactly one '{}' where the subject 'Pieter van Loon' goes" in msg
    skipped = Counter()
    reqs = load_requests_file(path, skipped=skipped, skip_unmatched=True)
    assert [r.case_id for r in reqs] == ["0", "2", "3"]
    assert skipped == Counter(prompt_without_subject=1, paraphrase_without_subject=1)


def test_knowedit_wiki_counterfact_fields_and_roundtrip(tmp_path):
    skipped = Counter()
    reqs = load_knowedit(KE_CF, skipped=skipped)
    country = "The name of the country which {} is associated with is"
    assert [fields_of(r) for r in reqs] == [
        ("Kelso Harbour", country, country, "Bhutan", "New Zealand",
         ("Kelso Harbour is associated with the country named",),
         ("The name of the continent which Kelso Harbour is part of is",
          "The name of the country which Kelso Harbour is associated with is Bhutan, and the official language "
          "of the country is"), "0"),
        # ground_truth given as a list: its first answer
        ("Ilse Brandt", "The occupation of {} is", "The occupation of {} is", "astronaut", "chemist",
         ("Ilse Brandt works as a",), ("The gender of Ilse Brandt is", "The place of birth of Ilse Brandt is"), "1"),
        ("Tamsin River", "{} flows into", "{} flows into", "the Caspian Sea", "the Irish Sea", (), (), "2"),
    ]
    # 3 portability prompts (2 + 1) are not read; "The waters of the Tamsin" does not name the subject
    assert skipped == Counter(portability_prompt=3, paraphrase_without_subject=1)
    assert roundtrip(reqs, tmp_path) == reqs


def test_knowedit_zsre_questions():
    skipped = Counter()
    reqs = load_knowedit(KE_ZSRE, skipped=skipped)
    assert [fields_of(r) for r in reqs] == [
        ("Lagoa Verde Airport", "Which country is {} located in?", "Which country is {} located in?", "Peru",
         "Brazil", ("In which country is Lagoa Verde Airport?",), ("who wrote the song hotel california",), "0"),
        ("Corvina Records", "What label was {} a subsidiary of?", "What label was {} a subsidiary of?",
         "Sony Music", "EMI", ("Corvina Records was a subsidiary of which record label?",),
         ("when was the first star wars movie released",), "1"),
    ]
    assert skipped == Counter(portability_prompt=2)


def test_knowedit_wiki_recent_without_ground_truth():
    reqs = load_knowedit(KE_RECENT)
    assert [fields_of(r) for r in reqs] == [
        ("Marlow Trent", "The occupation of {} is", "The occupation of {} is", "ice hockey player", None, (),
         ("The country of citizenship of Marlow Trent is",), "0"),
        ("Harbourview Stadium", "{} is owned by", "{} is owned by", "Halifax Regional Municipality", None, (),
         ("Harbourview Stadium is located in",), "1"),
    ]


def test_knowedit_malformed(tmp_path):
    data = json.loads(KE_CF.read_text())
    data[1]["locality"] = [{"prompt": "The gender of Ilse Brandt is"}]
    raises_one_line(load_knowedit, write(tmp_path, data), match="record 1: field 'locality' must be an object")
    data = json.loads(KE_CF.read_text())
    data[0]["locality"]["Forgetfulness"] = [{"answer": "x"}]
    raises_one_line(load_knowedit, write(tmp_path, data), match="record 0: locality.Forgetfulness[0] has no 'prompt'")
    data = json.loads(KE_CF.read_text())
    del data[2]["target_new"]
    raises_one_line(load_knowedit, write(tmp_path, data), match="record 2: missing field 'target_new'")


# ------------------------------------------------------------------ new layouts of known data sets


def test_s2rke_single_object():
    reqs = load_s2rke(S2RKE_ONE)
    assert [fields_of(r) for r in reqs] == [
        ("Brightwater Foods", "headquarters", "{} is headquartered in", "Dublin", "Bristol",
         ("The head office of Brightwater Foods is in",), ("Greenfield Dairy is headquartered in",), "303-0"),
        ("Brightwater Foods", "founder", "{} was founded by", "Omar Haddad", "Ruth Abbott",
         ("Brightwater Foods owes its founding to",), (), "303-1"),
    ]
    assert reqs[0].queries == (Query("Where is Brightwater Foods headquartered?", "question", "Dublin"),)


def test_locomo_per_conversation_file(tmp_path):
    skipped = Counter()
    reqs = load_locomo(LOCOMO_CONV, skipped=skipped)
    assert [(r.subject, r.prompt, r.target_new, r.case_id) for r in reqs] == [
        ("Jamal", "{} bought a used kayak for the", "lake", "locomo_conversation:s1:Jamal:0"),
        ("Jamal", "{} works as a nurse in", "Leeds", "locomo_conversation:s1:Jamal:2"),
        ("Wen", "{} takes Korean classes at the", "library", "locomo_conversation:s1:Wen:0"),
        ("Wen", "{} passed her", "driving test", "locomo_conversation:s2:Wen:1"),
    ]
    assert all(r.relation == "locomo" and r.target_true is None for r in reqs)
    # "Jamal told Wen about it." and "Wen visited them." leave a bare pronoun; the QA about the first is unattached
    assert skipped == Counter(pronoun_target=2, qa_unattached=1)
    assert reqs[0].queries == (Query("What did Jamal buy for the lake?", "question", "a used kayak"),)
    assert reqs[3].queries == (Query("What test did Wen pass?", "question", "her driving test"),)
    assert load_locomo_qa(LOCOMO_CONV)["sample_id"].tolist() == ["locomo_conversation"] * 4
    data = json.loads(LOCOMO_CONV.read_text())
    data["sample_id"] = "conv-7"
    assert load_locomo(write(tmp_path, data))[0].case_id == "conv-7:s1:Jamal:0"


def test_locomo_per_conversation_malformed(tmp_path):
    data = json.loads(LOCOMO_CONV.read_text())
    del data["speaker_b"]
    raises_one_line(load_locomo, write(tmp_path, data), match="record 0: missing field 'speaker_b'")
    del data["speaker_a"]
    raises_one_line(load_locomo, write(tmp_path, data),
                    match="record 0: missing field 'conversation' (or top-level 'speaker_a' and 'speaker_b')")


@pytest.mark.parametrize("fact, counted", [
    ("Tomas gave it to her.", "pronoun_target"),
    ("Tomas met them.", "pronoun_target"),
    ("Tomas called Priya about this.", "pronoun_target"),
    ("Tomas met Priya.", None),
])
def test_locomo_pronoun_targets_skipped(tmp_path, fact, counted):
    data = json.loads(LOCOMO.read_text())
    data[0]["observation"]["session_2_observation"]["Tomas"].append([fact, "D2:3"])
    skipped = Counter()
    reqs = load_locomo(write(tmp_path, data), skipped=skipped)
    expected = Counter(fact_without_subject=1, qa_unattached=1)
    if counted:
        expected[counted] += 1
    assert skipped == expected
    assert len(reqs) == (5 if counted else 6)


def test_zsre_empty_alt_skipped_and_counted():
    skipped = Counter()
    reqs = load_zsre(ZSRE_EMPTY, skipped=skipped)
    assert [(r.subject, r.prompt, r.target_new, r.target_true, r.case_id) for r in reqs] == [
        ("Fennick Bridge", "Which river does {} cross?", "Severn", "Tyne", "0"),
        ("Dorna Valley", "Which country is {} in?", "Hungary", "Romania", "3"),
    ]
    assert skipped == Counter(empty_alt=2)


# ------------------------------------------------------------------ detection of flat records


BASE = {"subject": "France", "prompt": "The capital of France is", "target_new": "Rome"}


@pytest.mark.parametrize("extra, fmt", [
    ({"relation": "capital"}, "geomprobe"),
    ({"relation": "capital", "paraphrases": [], "case_id": "x"}, "geomprobe"),
    ({"ground_truth": "Paris"}, "knowedit"),
    ({"ground_truth": "Paris", "relation": "capital"}, "easyedit"),
    ({"portability": {}}, "knowedit"),
    ({"locality": {}, "rephrase_prompt": "France has its capital in"}, "knowedit"),
    ({"rephrase_prompt": "France has its capital in"}, "easyedit"),
    ({"locality_prompt": "The capital of Spain is", "relation": "capital"}, "easyedit"),
])
def test_detect_flat_records(extra, fmt):
    assert detect_format([{**BASE, **extra}]) == fmt


def test_detect_flat_records_refused(tmp_path):
    msg = raises_one_line(load_requests_file, write(tmp_path, [BASE]), match="no 'relation'")
    assert "fmt='easyedit'" in msg
    reqs = load_requests_file(write(tmp_path, [BASE]), fmt="easyedit")
    assert (reqs[0].relation, reqs[0].prompt) == ("The capital of {} is", "The capital of {} is")
    bad = {**BASE, "relation": "capital", "paraphrase": ["France has its capital in"]}
    raises_one_line(load_requests_file, write(tmp_path, [bad]), match="record 0 has field(s) paraphrase that")


# ------------------------------------------------------------------ options, nulls, record prefixes, JSONL


def test_load_requests_passes_options(tmp_path):
    skipped = Counter()
    assert gp.load_requests(str(ZSRE_EMPTY), skipped=skipped) == load_zsre(ZSRE_EMPTY)
    assert skipped == Counter(empty_alt=2)
    raises_one_line(gp.load_requests, str(CF), fmt="zsre", match="record 0: missing field 'subject'")
    data = json.loads(ZSRE.read_text())
    data[3]["src"] = "Which mountain range is the lake part of?"
    path = write(tmp_path, data)
    raises_one_line(gp.load_requests, str(path), match="'Lake Tahoe' does not occur in src")
    assert len(gp.load_requests(str(path), skip_unmatched=True)) == 3


def test_load_requests_refuses_unknown_options():
    msg = raises_one_line(gp.load_requests, str(CF), skiped=Counter(), match="unknown option(s) skiped")
    assert "valid options: fmt, skipped, skip_unmatched" in msg
    raises_one_line(gp.load_requests, "same-subject", fmt="zsre", match="valid options: none")
    msg = raises_one_line(gp.load_requests, "toy", size=3, match="unknown option(s) size for 'toy'")
    assert "n, seed" in msg
    raises_one_line(gp.load_requests, str(CF), skip_unmatched=True,
                    match="skip_unmatched applies to zsre, easyedit, knowedit files, not counterfact")


@pytest.mark.parametrize("key", ["paraphrases", "neighborhood", "queries"])
def test_null_list_in_geomprobe_file(tmp_path, key):
    data = json.loads(GEOMPROBE.read_text())
    data["requests"][1][key] = None
    path = write(tmp_path, data)
    raises_one_line(load_requests_file, path,
                    match=f"{path} record 1: field {key!r} is null; give a list ([] for none) or leave it out")


def test_null_list_elsewhere(tmp_path):
    with pytest.raises(RequestFormatError, match="field 'neighborhood' is null"):
        EditRequest(subject="France", relation="capital", prompt="The capital of {} is", target_new="Rome",
                    neighborhood=None)
    data = json.loads(CF.read_text())
    data[2]["neighborhood_prompts"] = None
    raises_one_line(load_counterfact, write(tmp_path, data), match="record 2: field 'neighborhood_prompts' is null")
    data = json.loads(EASYEDIT.read_text())
    data[1]["rephrase_prompt"] = None
    raises_one_line(load_easyedit, write(tmp_path, data), match="record 1: field 'rephrase_prompt' is null")


def test_geomprobe_errors_name_file_and_record(tmp_path):
    data = json.loads(GEOMPROBE.read_text())
    data["requests"][1]["target_new"] = " "
    path = write(tmp_path, data)
    raises_one_line(load_requests_file, path,
                    match=f"{path} record 1: request 'gp-1': field 'target_new' must be a non-empty string")
    data = json.loads(GEOMPROBE.read_text())
    data["requests"][0]["queries"][0]["form"] = "riddle"
    raises_one_line(load_requests_file, write(tmp_path, data), match="record 0: unknown query form 'riddle'")
    data = json.loads(GEOMPROBE.read_text())
    data["requests"][1]["prompt"] = "The Danube flows into the"
    raises_one_line(load_requests_file, write(tmp_path, data), match="record 1: request 'gp-1': prompt")


def test_jsonl_errors_carry_the_line(tmp_path):
    records = json.loads(CF.read_text())
    lines = [json.dumps(r) for r in records]
    path = tmp_path / "cf.jsonl"
    path.write_text("\n".join(["", lines[0], "", lines[1], "{broken", lines[2]]) + "\n")
    raises_one_line(load_requests_file, path, match="is not valid JSON (line 5, column 2")
    del records[1]["requested_rewrite"]["target_new"]
    path.write_text("\n".join(["", json.dumps(records[0]), "", json.dumps(records[1])]) + "\n")
    raises_one_line(load_counterfact, path,
                    match=f"{path} record 1 (line 4): missing field 'requested_rewrite.target_new'")
    reqs = [r.to_dict() for r in load_requests_file(GEOMPROBE)]
    reqs[1]["neighborhood"] = None
    path = tmp_path / "gp.jsonl"
    path.write_text("\n".join(["", "", json.dumps(reqs[0]), json.dumps(reqs[1])]) + "\n")
    raises_one_line(load_requests_file, path, match=f"{path} record 1 (line 4): field 'neighborhood' is null")
