"""Subject positions from character offsets: padding sides, chat templates, missing subjects."""

import pytest
import torch

import geomprobe as gp
from geomprobe.data.forms import render
from geomprobe.errors import SubjectNotFoundError
from geomprobe.positions import render_pairs, tokenize

PROMPTS = ["the capital of france is", "where is the eiffel tower located ?", "john lives in rome"]
SUBJECTS = ["france", "eiffel tower", "john"]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_keys_agree_under_left_and_right_padding(tiny_lms, kind):
    lm = tiny_lms[kind]
    left = gp.keys(lm, PROMPTS, SUBJECTS, [0, 1, 2], padding_side="left")
    right = gp.keys(lm, PROMPTS, SUBJECTS, [0, 1, 2], padding_side="right")
    one_by_one = torch.cat([gp.keys(lm, [p], [s], [0, 1, 2]) for p, s in zip(PROMPTS, SUBJECTS)])
    torch.testing.assert_close(left, right, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(left, one_by_one, rtol=1e-4, atol=1e-5)


def test_subject_last_token_is_the_subjects_last_word(tiny_lms):
    lm = tiny_lms["llama"]
    for side in ("left", "right"):
        batch = tokenize(lm.tokenizer, render_pairs(PROMPTS, SUBJECTS), padding_side=side)
        words = [lm.tokenizer.convert_ids_to_tokens(int(batch.input_ids[i, p])) for i, p in enumerate(batch.subject_last)]
        assert words == ["france", "tower", "john"]
        assert all(batch.attention_mask[i, p] == 1 for i, p in enumerate(batch.last))


def test_template_and_last_occurrence():
    r = render_pairs(["{} is in {}x".replace("{}x", "paris"), "france and france"], ["paris", "france"])
    assert r[0].text == "paris is in paris" and r[0].subject_span == (0, 5)
    assert r[1].subject_span == (11, 17)  # last occurrence


def test_chat_template_subject_span(tiny_lms):
    tok = tiny_lms["llama"].tokenizer
    tok.chat_template = ("{% for m in messages %}<s> {{ m['role'] }} : {{ m['content'] }} </s>\n{% endfor %}"
                         "{% if add_generation_prompt %}<s> assistant :{% endif %}")
    try:
        for form in ("question", "instruction"):
            r = render("where is {} located ?", "eiffel tower", form, tok)
            assert r.text[slice(*r.subject_span)] == "eiffel tower"
            assert r.text.rstrip().endswith("assistant :")
            batch = tokenize(tok, [r])
            assert tok.convert_ids_to_tokens(int(batch.input_ids[0, batch.subject_last[0]])) == "tower"
    finally:
        tok.chat_template = None
    plain = render("where is {} located ?", "eiffel tower", "question", tok)
    assert plain.text.startswith("Question: where is eiffel tower") and plain.text.endswith("Answer:")


def test_subject_not_in_prompt_is_one_clear_error(tiny_lms):
    with pytest.raises(SubjectNotFoundError) as e:
        gp.keys(tiny_lms["llama"], ["the capital of france is"], ["germany"], [0])
    assert "germany" in str(e.value) and "\n" not in str(e.value)
