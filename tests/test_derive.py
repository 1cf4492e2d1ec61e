"""Forms for every relation: rule-derived question pools, built-in data set pools, model rewrites, the lookup."""

from __future__ import annotations

import json

import pytest

from geomprobe.data import derive, forms, rewrite
from geomprobe.data.derive import COUNTERFACT_TEMPLATES, YAGO_TEMPLATES, derive_pool, pool_for, prepare_pools
from geomprobe.data.forms import RelationTemplates, builtin_templates
from geomprobe.data.requests import EditRequest
from geomprobe.errors import RequestFormatError


@pytest.fixture
def clean(monkeypatch):
    """Isolate the registries (user pools, prepared pools, in-memory rewrites) from other tests."""
    monkeypatch.setattr(forms, "_USER", {})
    monkeypatch.setattr(forms, "_DERIVED", {})
    monkeypatch.setattr(rewrite, "_MEMORY", {})


def questions(pool: RelationTemplates) -> list[str]:
    return [t for f, t in pool.train if f == "question"]


# template -> a question the training pool must hold, and one the held-out pool must hold
RULES = {
    "The capital of {} is": ("What is the capital of {}?", "Do you know what the capital of {} is?"),
    "{} is located in": ("Where is {} located?", "Do you know where {} is located?"),
    "{}, which is located in": ("Where is {} located?", "Where exactly is {} located?"),
    "{} was born in": ("Where was {} born?", "Do you know where {} was born?"),
    "{} works for": ("Who does {} work for?", "Do you know who {} works for?"),
    "{} is a citizen of": ("Which country is {} a citizen of?", "Do you know which country {} is a citizen of?"),
    "The mother tongue of {} is": ("What is the mother tongue of {}?", "Which mother tongue does {} have?"),
    "{} was developed by": ("Who developed {}?", "Who is the developer of {}?"),
    "{} plays the position of": ("Which position does {} play?", "Do you know which position {} plays?"),
    "{} is affiliated with the religion of": ("Which religion is {} affiliated with?",
                                              "What religion is {} affiliated with?"),
    "{}'s capital city is": ("What is the capital city of {}?", "Which capital city does {} have?"),
    "{} was created in the country of": ("In which country was {} created?", "What country was {} created in?"),
    "The official language of {} is": ("What is the official language of {}?",
                                       "Do you know what the official language of {} is?"),
    "{} is a product of": ("Which company is {} a product of?", "What company is {} a product of?"),
    "{} speaks the language": ("Which language does {} speak?", "Do you know which language {} speaks?"),
    "{} was originally aired on": ("On which network was {} originally aired?", "Which network originally aired {}?"),
    "{} is owned by": ("Who owns {}?", "Who is the owner of {}?"),
    "The headquarter of {} is in": ("Where are the headquarters of {}?",
                                    "Do you know where the headquarters of {} are?"),
    "{} died in": ("Where did {} die?", "Where exactly did {} die?"),
    # zsRE questions: the question itself is held out, rephrasings are trained on
    "Which county is {} located in?": ("In which county is {} located?", "Which county is {} located in?"),
    "What is the twin city of {}?": ("What is {}'s twin city?", "What is the twin city of {}?"),
    "What company produced {}?": ("By which company was {} produced?", "What company produced {}?"),
}


@pytest.mark.parametrize("template", list(RULES))
def test_rules_write_the_expected_questions(template):
    pool = derive_pool("r", template)
    assert pool is not None, template
    train_q, held_q = RULES[template]
    assert train_q in questions(pool), questions(pool)
    assert held_q in pool.eval_questions, pool.eval_questions
    assert pool.origin == "rule" and pool.declarative == template
    assert template not in {t for _, t in pool.train}  # the template is leaf 0 already, never a training template


def test_answer_type_adds_which_questions():
    plain = derive_pool("r", "{} was born in")
    typed = derive_pool("r", "{} was born in", answer_type="city")
    assert "In which city was {} born?" not in questions(plain)
    assert {"In which city was {} born?", "Where was {} born?"} <= set(questions(typed))


@pytest.mark.parametrize("template", ["{} attended a support group on", "{} is a", "{}, the", "The river that flows "
                                      "through {} is the", "In which language {} monthly?", "{} and {} are"])
def test_templates_without_a_rule_give_none(template):
    assert derive_pool("r", template) is None


def _all_derived() -> list[RelationTemplates]:
    pools = [derive_pool("r", t) for t in RULES]
    pools += [derive_pool(rel, t, a or None) for table in (COUNTERFACT_TEMPLATES, YAGO_TEMPLATES)
              for rel, (t, a) in table.items()]
    return pools


def test_every_derived_pool_is_disjoint_and_full():
    for pool in _all_derived():
        train = {t for _, t in pool.train}
        assert not train & set(pool.eval_questions), pool.relation
        assert len(questions(pool)) >= 3 and len(pool.eval_questions) >= 2, pool.relation
        assert all(q.endswith("?") for q in (*questions(pool), *pool.eval_questions)), pool.relation
        assert len(train) == len(pool.train), f"{pool.relation}: duplicate train templates"
        forms_ = [f for f, _ in pool.train]
        assert {"question", "instruction"} <= set(forms_[:6]), pool.relation  # HKI's first leaves mix forms


def test_rules_cover_every_counterfact_template_without_a_model():
    covered = [rel for rel, (t, _) in COUNTERFACT_TEMPLATES.items() if derive_pool(rel, t) is not None]
    assert len(COUNTERFACT_TEMPLATES) == 32
    assert covered == list(COUNTERFACT_TEMPLATES)


def test_all_32_counterfact_ids_have_builtin_pools(clean):
    pools = builtin_templates()
    for rel, (template, _) in COUNTERFACT_TEMPLATES.items():
        pool = pool_for(rel)
        assert pool is pools[rel] and pool.origin == "builtin"
        assert pool.declarative == template
    assert "Which music genre does {} play?" in questions(pools["P136"])


def test_builtin_data_set_files_match_the_rules():
    """The shipped JSON is what ``python -m geomprobe.data.derive --write`` writes (regenerate after rule changes)."""
    from importlib import resources

    for name in ("counterfact", "yago"):
        text = resources.files("geomprobe.data").joinpath("builtin", f"{name}_relations.json").read_text("utf-8")
        assert json.loads(text) == derive.dataset_pools(name), name


def test_s2rke_yago_relations_resolve(clean):
    for rel in ("<hasCapital>", "hasCapital"):  # with or without YAGO's angle brackets
        pool = pool_for(rel)
        assert pool.relation == "<hasCapital>" and "What is the capital of {}?" in questions(pool)
    assert "Which team does {} play for?" in questions(pool_for("<playsFor>"))
    assert "Which country is {} a citizen of?" in questions(pool_for("<isCitizenOf>"))
    core = set(json.loads((forms.resources.files("geomprobe.data") / "builtin" / "relations.json").read_text()))
    assert not core & set(YAGO_TEMPLATES) and not core & set(COUNTERFACT_TEMPLATES)
    assert len(YAGO_TEMPLATES) >= 35


# --------------------------------------------------------------------------- lookup


def test_pool_for_order_and_error(clean):
    # rules for a relation no pool covers
    pool = pool_for("place_of_birth", "{} was born in the city of")
    assert pool.origin == "rule" and "In which city was {} born?" in questions(pool)
    # a registered pool wins over the rules
    forms.add_templates({"place_of_birth": {"declarative": "{} was born in the city of",
                                            "train": [["question", "Birthplace of {}?"]],
                                            "eval_questions": ["Where is {} from?"]}})
    assert pool_for("place_of_birth", "{} was born in the city of").origin == "user"
    # nothing to go on: one line naming `geomprobe templates`
    for args in (("mystery",), ("mystery", "{} attended a support group on")):
        with pytest.raises(RequestFormatError) as e:
            pool_for(*args)
        msg = str(e.value)
        assert "\n" not in msg and "geomprobe templates" in msg and "--templates" in msg and "'mystery'" in msg


def test_dataset_builtins_may_be_replaced_but_core_ones_not(clean):
    mine = {"declarative": "The capital of {} is", "train": [["question", "Capital of {}?"]],
            "eval_questions": ["Which city is the capital of {}?"]}
    forms.add_templates({"P36": mine})
    assert pool_for("P36").train == (("question", "Capital of {}?"),)
    with pytest.raises(RequestFormatError, match="built in"):
        forms.add_templates({"capital": mine})


def test_zsre_pools_are_per_template(clean):
    a = EditRequest("Watford Gap", "zsre", "Which county is {} located in?", "Cornwall")
    b = EditRequest("HMS Resolute", "zsre", "What was the operator of {}?", "Spanish Navy")
    assert forms.eval_prompts(a, "instruction") == []  # nothing until prepared
    pools = prepare_pools([a, b])
    assert set(pools) == {"zsre::Which county is {} located in?", "zsre::What was the operator of {}?"}
    qa = forms.eval_prompts(a, "instruction")
    assert qa and all("Watford Gap" in r.text for r in qa)
    assert any("Which county is Watford Gap located in?" in r.text for r in qa)
    leaves = forms.train_prompts("zsre", "HMS Resolute", template=b.prompt)
    assert any("operator" in r.text for r in leaves)
    with pytest.raises(RequestFormatError, match="geomprobe templates"):
        forms.train_prompts("zsre", "HMS Resolute")  # which zsRE template? none given
    forms.clear_prepared_pools()
    assert forms.eval_prompts(a, "instruction") == []


def test_prepare_pools_strict_names_the_missing_relation(clean):
    reqs = [EditRequest("Caroline", "hobbies", "{} attended a support group on", "7 May"),
            EditRequest("Lyon", "located_in_country", "{}, which is located in", "Portugal")]
    pools = prepare_pools(reqs)
    assert list(pools) == ["located_in_country"]
    assert forms.eval_prompts(reqs[1], "question")  # registered for every consumer
    assert "located_in_country" in forms.relation_templates()
    with pytest.raises(RequestFormatError, match="'hobbies'"):
        prepare_pools(reqs, strict=True)


def test_relation_with_several_templates_prefers_one_a_rule_covers(clean):
    reqs = [EditRequest(s, "born", t, "Paris") for s, t in
            (("Ada", "{} came into the world in"), ("Bob", "{} came into the world in"), ("Cy", "{} was born in"))]
    pool = prepare_pools(reqs)["born"]
    assert pool.origin == "rule" and pool.declarative == "{} was born in"


# --------------------------------------------------------------------------- templates file


def test_templates_file_round_trip(clean, tmp_path):
    from geomprobe import templates_cmd

    reqs = [EditRequest("Lyon", "located_in_country", "{}, which is located in", "Portugal"),
            EditRequest("Oslo", "P36", "The capital of {} is", "Bergen"),
            EditRequest("Caroline", "locomo", "{} adopted a beagle named", "Rex"),
            EditRequest("Watford Gap", "zsre", "Which county is {} located in?", "Cornwall")]
    out = tmp_path / "sub" / "templates.json"
    res = templates_cmd.run(reqs, out)
    assert res["pools"] == {"located_in_country": "rule", "P36": "builtin",
                            "locomo::{} adopted a beagle named": "fallback",
                            "zsre::Which county is {} located in?": "rule"}
    assert "4 template pools" in templates_cmd.summary(res)
    doc = json.loads(out.read_text())
    assert doc["templates"]["P36"]["requests"] == 1 and doc["model"] is None
    # a person edits one pool, then loads the file
    doc["templates"]["located_in_country"]["eval_questions"].append("Which nation is {} in?")
    out.write_text(json.dumps(doc))
    keys = forms.load_templates_file(out)
    assert set(keys) == set(res["pools"])
    pool = pool_for("located_in_country", "{}, which is located in")
    assert "Which nation is {} in?" in pool.eval_questions and pool.origin == "rule"
    fb = pool_for("locomo", "{} adopted a beagle named")
    assert fb.origin == "fallback" and "What is the answer to: {} adopted a beagle named ...?" in questions(fb)
    # the bare mapping works too, and a broken file is a one-line error
    (tmp_path / "bare.json").write_text(json.dumps({"sport": {"declarative": "{} plays", "train": [],
                                                              "eval_questions": ["What sport does {} play?"]}}))
    assert forms.load_templates_file(tmp_path / "bare.json") == ["sport"]
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(RequestFormatError, match="not valid JSON"):
        forms.load_templates_file(tmp_path / "bad.json")


# --------------------------------------------------------------------------- model rewrite


def test_parse_questions_validates_model_output():
    text = ("1. What is the capital of X?\n"
            "2) Which city is X's capital?\n"
            "- what is the capital of x?\n"          # no placeholder (case-sensitive X): dropped
            "* Which city is the capital of X\n"      # no question mark: dropped
            "Is X the capital of X?\n"                # placeholder twice: dropped
            "\"Can you tell me the capital of X?\"\n"
            "What is the capital of X?\n"             # duplicate: dropped
            "What is {} in X?\n"                      # braces: dropped
            "X?\n"                                    # too short: dropped
            "Text: next example\nWhat is Y?")
    assert rewrite.parse_questions(text, "X") == ["What is the capital of {}?", "Which city is {}'s capital?",
                                                  "Can you tell me the capital of {}?"]
    assert rewrite.parse_questions("Where is Y from?\nWhere was Y born?", "Y", template="Where was {} born?") == [
        "Where is {} from?"]


def test_placeholder_avoids_words_of_the_template():
    text, p, chat = rewrite.rewrite_prompt("{} played for X Factor in", None)
    assert p == "Y" and not chat and "Y played for X Factor in" in text
    assert "What is the capital of Y?" in text  # the few-shot examples use the same placeholder


GOOD = ("What is the favourite dish of X?\nWhich dish does X like best?\nCan you tell me what X likes to eat?\n"
        "Do you know X's favourite food?\nWhat food does X prefer?\nTell me, what does X enjoy eating?")


def test_model_pool_from_valid_output_and_its_cache(clean, monkeypatch, tmp_path):
    calls = []

    def fake(lm, text, chat, seed):
        calls.append(text)
        return GOOD

    monkeypatch.setattr(rewrite, "_generate", fake)
    lm = _FakeLM()
    pool = pool_for("dish", "{} really likes to eat", lm, cache_dir=tmp_path)
    assert pool.origin == "model" and len(calls) == 1
    assert {"What is the favourite dish of {}?", "Can you tell me what {} likes to eat?"} <= set(questions(pool))
    assert {"Which dish does {} like best?", "Do you know {}'s favourite food?"} <= set(pool.eval_questions)
    assert not {t for _, t in pool.train} & set(pool.eval_questions)
    saved = json.loads((tmp_path / "templates" / "fake-model.json").read_text())
    assert saved["identity"]["name"] == "fake-model"
    monkeypatch.setattr(rewrite, "_MEMORY", {})  # a new process: the disk cache answers
    assert rewrite.rewrite_pool(lm, "dish", "{} really likes to eat", cache_dir=tmp_path) == pool
    assert len(calls) == 1
    lm2 = _FakeLM(checksum="other")  # another model's file is not used
    rewrite.rewrite_pool(lm2, "dish", "{} really likes to eat", cache_dir=tmp_path)
    assert len(calls) == 2


class _FakeLM:
    def __init__(self, checksum="abc"):
        self.name = "fake-model"
        self.identity = {"name": "fake-model", "model_type": "fake", "config_sha": "1", "weight_checksum": checksum}
        self.tokenizer = None


@pytest.fixture(scope="module")
def tiny_chatless_lm(tmp_path_factory):
    """A tiny random llama with a long enough context for the few-shot prompt (no chat template)."""
    import torch
    import transformers
    from tiny import tiny_tokenizer

    import geomprobe as gp

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    cfg = transformers.LlamaConfig(vocab_size=len(tok), num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=48, max_position_embeddings=512,
                                   pad_token_id=0, bos_token_id=2, eos_token_id=3)
    d = tmp_path_factory.mktemp("tiny-rewrite")
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return gp.load_model(str(d), device="cpu")


def test_tiny_model_output_falls_back_and_is_cached(clean, monkeypatch, tmp_path, tiny_chatless_lm):
    lm = tiny_chatless_lm
    calls = []
    real = rewrite._generate

    def counting(*args):
        calls.append(1)
        out = real(*args)
        calls.append(out)
        return out

    monkeypatch.setattr(rewrite, "_generate", counting)
    template = "{} adopted a beagle named"
    pool = pool_for("pets", template, lm, cache_dir=tmp_path)
    assert len(calls) == 2 and calls[1] != ""  # the model did run (the prompt fits its context)
    assert pool.origin == "fallback" and pool == rewrite.fallback_pool("pets", template)
    assert "What is the answer to: {} adopted a beagle named ...?" in questions(pool)
    assert pool_for("pets", template, lm, cache_dir=tmp_path) == pool  # memory cache
    monkeypatch.setattr(rewrite, "_MEMORY", {})
    assert pool_for("pets", template, lm, cache_dir=tmp_path) == pool  # disk cache
    assert len(calls) == 2
    files = list((tmp_path / "templates").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["identity"] == {
        k: lm.identity.get(k) for k in ("name", "model_type", "config_sha", "weight_checksum")}


def test_prompt_too_long_for_the_model_falls_back_without_running_it(clean, monkeypatch, tmp_path,
                                                                     tiny_chatless_lm):
    lm = tiny_chatless_lm
    monkeypatch.setattr(rewrite, "_max_positions", lambda lm: 128)  # tests/tiny.py's context: the prompt won't fit
    monkeypatch.setattr(type(lm.model), "forward", lambda *a, **k: pytest.fail("the model ran"))
    text, _, _ = rewrite.rewrite_prompt("{} adopted a beagle named", lm.tokenizer)
    assert len(lm.tokenizer(text)["input_ids"]) > 128
    assert rewrite._generate(lm, text, False, 0) == ""
    assert pool_for("pets", "{} adopted a beagle named", lm, cache_dir=tmp_path).origin == "fallback"


def test_fallback_for_a_question_template_holds_the_question_out():
    pool = rewrite.fallback_pool("zsre::q", "In which language {} monthly?")
    assert pool.eval_questions[0] == "In which language {} monthly?"
    assert "In which language {} monthly?" not in {t for _, t in pool.train}
    assert all(t.count("{}") == 1 for _, t in pool.train)


def test_too_few_valid_questions_fall_back(clean, monkeypatch, tmp_path):
    two = "What does X eat?\nWhat does X eat?\nWhat food does X like?\nX eats a lot."
    monkeypatch.setattr(rewrite, "_generate", lambda *a: two)
    assert pool_for("dish", "{} really likes to eat", _FakeLM(), cache_dir=tmp_path).origin == "fallback"
    monkeypatch.setattr(rewrite, "_MEMORY", {})
    three = two + "\nWhich dish does X prefer?"
    monkeypatch.setattr(rewrite, "_generate", lambda *a: three)
    pool = pool_for("dish", "{} really likes to eat", _FakeLM(), cache_dir=tmp_path / "other")
    assert pool.origin == "model" and pool.eval_questions == ("What food does {} like?",)
