"""The built-in real-world data: same-subject requests, near-duplicate pairs, relation template pools."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from geomprobe.data.forms import RelationTemplates, render
from geomprobe.data.requests import EditRequest, group_by_subject, parse_requests

BUILTIN = Path(__file__).resolve().parents[1] / "geomprobe" / "data" / "builtin"
FORMS = ("declarative", "question", "instruction")


def _load(name: str) -> list[EditRequest]:
    path = BUILTIN / name
    return parse_requests(json.loads(path.read_text(encoding="utf-8")), source=name)


@pytest.fixture(scope="module")
def templates() -> dict[str, RelationTemplates]:
    raw = json.loads((BUILTIN / "relations.json").read_text(encoding="utf-8"))
    return {rel: RelationTemplates.from_dict(rel, d) for rel, d in raw.items()}


@pytest.fixture(scope="module")
def same_subject() -> list[EditRequest]:
    return _load("same_subject.json")


@pytest.fixture(scope="module")
def near_duplicates() -> list[EditRequest]:
    return _load("near_duplicates.json")


@pytest.fixture(scope="module")
def all_requests(same_subject, near_duplicates) -> list[EditRequest]:
    return same_subject + near_duplicates


def _norm(text: str) -> str:
    """Lower case, punctuation dropped: catches eval questions that differ from a train one only cosmetically."""
    return " ".join(re.sub(r"[^\w{} ]", " ", text.lower()).split())


def test_same_subject_has_many_subjects_with_3_to_5_relations(same_subject):
    groups = group_by_subject(same_subject)
    assert len(groups) >= 60
    for subject, reqs in groups.items():
        relations = [r.relation for r in reqs]
        assert 3 <= len(relations) <= 5, (subject, relations)
        assert len(set(relations)) == len(relations), f"{subject} repeats a relation: {relations}"


def test_every_relation_has_a_full_template_pool(all_requests, templates):
    for rel in {r.relation for r in all_requests}:
        assert rel in templates, f"relation {rel!r} has no template pool"
        pool = templates[rel]
        assert len(pool.train) >= 10, rel
        assert len(pool.eval_questions) >= 4, rel
        assert len(set(pool.eval_questions)) == len(pool.eval_questions), rel
        assert len({t for _, t in pool.train}) == len(pool.train), f"{rel}: duplicate train templates"
        assert {f for f, _ in pool.train} == set(FORMS), f"{rel}: train pool must mix all three forms"


def test_train_prefixes_mix_forms(templates):
    """HKI takes train[:m] (fig19 sweeps m = 2..10): small prefixes must not be one form only."""
    for rel, pool in templates.items():
        assert {f for f, _ in pool.train[:3]} == set(FORMS), rel


def test_train_and_eval_pools_are_disjoint(templates):
    for rel, pool in templates.items():
        train = {_norm(t) for _, t in pool.train} | {_norm(pool.declarative)}
        evals = {_norm(q) for q in pool.eval_questions}
        assert not train & evals, f"{rel}: {sorted(train & evals)}"


def test_questions_look_like_questions(templates):
    for rel, pool in templates.items():
        assert all(q.rstrip().endswith("?") for q in pool.eval_questions), rel
        for form, t in pool.train:
            if form == "question":
                assert t.endswith("?"), (rel, t)
            if form == "declarative":
                assert not t.rstrip().endswith((".", "?", ":")), (rel, t)


@pytest.mark.parametrize("frame", ("eval", "held-out"))
@pytest.mark.parametrize("form", FORMS)
def test_every_template_renders_without_a_tokenizer(templates, form, frame):
    subject = "Zorblax"
    for rel, pool in templates.items():
        for t in (pool.declarative, *(t for _, t in pool.train), *pool.eval_questions):
            out = render(t, subject, form, tokenizer=None, frame=frame)
            start, end = out.subject_span
            assert out.text[start:end] == subject, (rel, t)
            assert out.form == form
            if form != "declarative":
                assert out.text.endswith("Answer:"), (rel, t)


def test_prompts_are_the_relation_declaratives(all_requests, templates):
    for r in all_requests:
        assert r.prompt == templates[r.relation].declarative, r.case_id


def test_subjects_occur_literally_in_paraphrases(all_requests):
    for r in all_requests:
        assert len(r.paraphrases) == 2, r.case_id
        for p in r.paraphrases:
            assert p.count(r.subject) == 1, (r.case_id, p)
            assert p != r.text, r.case_id


def test_paraphrases_are_held_out_from_train_templates(all_requests, templates):
    """Paraphrases are an evaluation form: HKI must not optimise on them."""
    for r in all_requests:
        train_texts = {t.replace("{}", r.subject) for _, t in templates[r.relation].train}
        assert not set(r.paraphrases) & train_texts, r.case_id


def test_targets_are_short_and_distinct(all_requests):
    for r in all_requests:
        assert r.target_true is not None, r.case_id
        assert r.target_new != r.target_true, r.case_id
        for t in (r.target_new, r.target_true):
            assert t == t.strip() and not t.endswith("."), (r.case_id, t)
            assert 1 <= len(t.split()) <= 3, (r.case_id, t)


def test_case_ids_are_unique_and_named(same_subject, near_duplicates):
    ids = [r.case_id for r in same_subject + near_duplicates]
    assert len(ids) == len(set(ids))
    for r in same_subject:
        assert r.case_id.startswith("ss-") and r.case_id.endswith("-" + r.relation), r.case_id
    for r in near_duplicates:
        assert re.fullmatch(r"nd\d\d-[ab]", r.case_id), r.case_id


def test_neighborhood_is_about_other_subjects(all_requests):
    for r in all_requests:
        assert len(r.neighborhood) >= 2, r.case_id
        assert len(set(r.neighborhood)) == len(r.neighborhood), r.case_id
        for n in r.neighborhood:
            assert not re.search(rf"(?<!\w){re.escape(r.subject)}(?!\w)", n), (r.case_id, n)


def test_near_duplicate_pairs_are_complete(near_duplicates):
    by_id = {r.case_id: r for r in near_duplicates}
    pairs = sorted({cid[:4] for cid in by_id})
    assert len(pairs) >= 8
    assert len(by_id) == 2 * len(pairs)
    ids = [r.case_id for r in near_duplicates]
    for pair in pairs:
        a, b = by_id[f"{pair}-a"], by_id[f"{pair}-b"]
        assert ids.index(b.case_id) == ids.index(a.case_id) + 1, pair  # a and b consecutive
        assert a.subject != b.subject and a.relation == b.relation and a.prompt == b.prompt, pair
        assert b.text in a.neighborhood, f"{pair}-a does not name its partner {b.subject!r}"
        assert a.text in b.neighborhood, f"{pair}-b does not name its partner {a.subject!r}"


def test_true_answers_agree_across_requests(all_requests):
    """One (subject, relation) has one true answer everywhere it occurs."""
    seen: dict[tuple[str, str], str] = {}
    for r in all_requests:
        key = (r.subject, r.relation)
        assert seen.setdefault(key, r.target_true) == r.target_true, key


def test_spot_check_facts(same_subject):
    facts = {(r.subject, r.relation): r.target_true for r in same_subject}
    assert facts[("France", "capital")] == "Paris"
    assert facts[("Japan", "currency")] == "yen"
    assert facts[("Microsoft", "founder")] == "Bill Gates"
    assert facts[("Eiffel Tower", "landmark_city")] == "Paris"
    assert facts[("iPhone", "maker")] == "Apple"
    assert facts[("Albert Einstein", "profession")] == "physicist"
    kinds = Counter(r.relation for r in same_subject)
    assert kinds["capital"] >= 10 and kinds["maker"] >= 5
