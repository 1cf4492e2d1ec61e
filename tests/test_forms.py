"""Linguistic forms: the paper's instructed-query frame, an explicit question system turn, the held-out frame."""

from __future__ import annotations

import pytest

from geomprobe.data.forms import (
    FRAMES, HELD_OUT_INSTRUCTION_SYSTEM, HELD_OUT_QUESTION_SYSTEM, INSTRUCTION_FRAME, INSTRUCTION_SYSTEM,
    PLAIN_INSTRUCTION, PLAIN_QUESTION, QUESTION_SYSTEM, render, train_prompts,
)
from geomprobe.errors import ModelLoadError, RequestFormatError

QUESTION = "What is the capital of {}?"
SUBJECT = "France"
CHAT_FORMS = ("question", "instruction")


@pytest.fixture(scope="module")
def smollm2_tok():
    """SmolLM2-135M-Instruct's tokenizer (same cache as tests/test_smollm2.py; skipped when it cannot be built)."""
    from transformers import AutoTokenizer

    from geomprobe.models import smollm2 as sm

    try:
        d = sm.ensure_smollm2()
    except ModelLoadError as e:
        pytest.skip(f"SmolLM2 unavailable: {e}")
    return AutoTokenizer.from_pretrained(d)


def test_instruction_frame_is_the_papers_verbatim():
    assert INSTRUCTION_SYSTEM == "Your job is to answer the question. Do not explain."
    assert INSTRUCTION_FRAME == (
        "Query:\n Based on your own knowledge, write a short answer for the following question in a few words. "
        "Please do not write complete and lengthy sentences.\n Question: {question}")
    assert QUESTION_SYSTEM == "You are a helpful assistant."


@pytest.mark.slow
def test_smollm2_instruction_form_has_the_papers_frame_and_system(smollm2_tok):
    r = render(QUESTION, SUBJECT, "instruction", smollm2_tok)
    assert "Query:\n Based on your own knowledge" in r.text
    assert "\n Question: What is the capital of France?" in r.text
    assert INSTRUCTION_SYSTEM in r.text
    assert "SmolLM" not in r.text


@pytest.mark.slow
def test_smollm2_question_form_has_an_explicit_system_turn(smollm2_tok):
    r = render(QUESTION, SUBJECT, "question", smollm2_tok)
    assert f"<|im_start|>system\n{QUESTION_SYSTEM}<|im_end|>" in r.text
    assert "SmolLM" not in r.text  # the chat template's default system prompt is never injected
    assert "Query:" not in r.text and INSTRUCTION_SYSTEM not in r.text
    assert r.text.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
@pytest.mark.parametrize("form", CHAT_FORMS)
def test_smollm2_held_out_frame_differs_and_keeps_the_subject_span(smollm2_tok, form):
    ev = render(QUESTION, SUBJECT, form, smollm2_tok)
    ho = render(QUESTION, SUBJECT, form, smollm2_tok, frame="held-out")
    assert ho.text != ev.text
    assert (HELD_OUT_QUESTION_SYSTEM if form == "question" else HELD_OUT_INSTRUCTION_SYSTEM) in ho.text
    assert QUESTION_SYSTEM not in ho.text and INSTRUCTION_SYSTEM not in ho.text and "Query:" not in ho.text
    assert "SmolLM" not in ho.text
    for r in (ev, ho):
        assert r.text[slice(*r.subject_span)] == SUBJECT and r.form == form


@pytest.mark.slow
@pytest.mark.parametrize("frame", FRAMES)
def test_smollm2_subject_span_in_every_form_and_frame(smollm2_tok, frame):
    for form in ("declarative", "paraphrase", "neighborhood", *CHAT_FORMS):
        template = "The capital of {} is" if form not in CHAT_FORMS else QUESTION
        r = render(template, SUBJECT, form, smollm2_tok, frame=frame)
        assert r.text[slice(*r.subject_span)] == SUBJECT, (form, frame)
    leaves = train_prompts("capital", SUBJECT, smollm2_tok, frame=frame)
    assert leaves and all(r.text[slice(*r.subject_span)] == SUBJECT for r in leaves)


def test_held_out_frame_never_renders_like_eval_for_chat_forms_in_train_prompts():
    tok = _FakeChat()
    ev = train_prompts("capital", SUBJECT, tok)
    ho = train_prompts("capital", SUBJECT, tok, frame="held-out")
    assert len(ev) == len(ho)
    for a, b in zip(ev, ho):
        assert a.form == b.form
        assert (a.text == b.text) == (a.form == "declarative")
        assert b.text[slice(*b.subject_span)] == SUBJECT


@pytest.mark.parametrize("frame", FRAMES)
def test_toy_path_without_a_chat_template(frame):
    from geomprobe.toy.world import build_tokenizer, toy_world, words

    world = toy_world(0)
    tok = build_tokenizer(world)
    assert not getattr(tok, "chat_template", None)
    vocab = set(tok.get_vocab())
    subject = world.subjects[3]
    question = world.templates["home_city"].eval_questions[0]
    for form in CHAT_FORMS:
        r = render(question, subject, form, tok, frame=frame)
        assert r.text == render(question, subject, form, None, frame=frame).text
        assert r.text[slice(*r.subject_span)] == subject and r.text.endswith("Answer:")
        assert set(words(r.text)) <= vocab  # the held-out plain frame uses only toy words
    plain = {f: render(question, subject, f, None).text for f in CHAT_FORMS}
    body = question.replace("{}", subject)
    assert plain == {"question": PLAIN_QUESTION.format(question=body),
                     "instruction": PLAIN_INSTRUCTION.format(question=body)}
    if frame == "held-out":
        assert all(render(question, subject, f, None, frame=frame).text != plain[f] for f in CHAT_FORMS)


def test_unknown_frame_is_a_one_line_error():
    for call in (lambda: render(QUESTION, SUBJECT, "question", frame="train"),
                 lambda: train_prompts("capital", SUBJECT, frame="heldout")):
        with pytest.raises(RequestFormatError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg and all(f in msg for f in FRAMES)


class _FakeChat:
    """A tokenizer stand-in whose chat template writes every turn out (role: content)."""

    chat_template = "fake"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>\n" for m in messages) + "<assistant>"


def test_origin_is_kept_but_not_part_of_equality():
    from geomprobe.data.forms import RelationTemplates, builtin_templates

    d = {"declarative": "{} plays", "train": [["question", "What sport does {} play?"]],
         "eval_questions": ["Which sport does {} play?"], "origin": "model"}
    a = RelationTemplates.from_dict("sport", d)
    assert a.origin == "model" and a.to_dict() == d
    assert a == RelationTemplates.from_dict("sport", {**d, "origin": "rule"})
    assert RelationTemplates.from_dict("sport", {**d, "origin": "nonsense"}).origin == "user"
    assert {p.origin for p in builtin_templates().values()} == {"builtin"}


def test_train_prompts_without_a_pool_names_geomprobe_templates():
    with pytest.raises(RequestFormatError) as e:
        train_prompts("no_such_relation", SUBJECT, template="{} attended a support group on")
    msg = str(e.value)
    assert "\n" not in msg and "geomprobe templates" in msg and "no_such_relation" in msg
