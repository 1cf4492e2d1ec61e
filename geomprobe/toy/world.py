"""A synthetic fact world for the built-in toy models.

Fictional subjects (made-up one- or two-word names) x four relations whose objects come from closed
sets of single words.  Every relation has a :class:`~geomprobe.data.forms.RelationTemplates` pool:
a canonical declarative prompt, training templates (declarative rephrasings, questions and
instruction-style requests) and held-out questions that are never trained on but use only words
that occur in training text.  Everything is a pure function of the seed.

The tokenizer is word-level: whitespace separates words, punctuation (``? : . ,``) and newlines are
tokens of their own, so every answer object is exactly one token and accuracy is top-1 next token.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..data.forms import RelationTemplates, render
from ..data.requests import EditRequest, Query
from ..data.toy_templates import TOY_TEMPLATES
from ..errors import RequestFormatError

#: Closed object sets, one per relation (every object is one word, so one token).
OBJECTS: dict[str, tuple[str, ...]] = {
    "home_city": ("Kethra", "Dunmoor", "Valcrest", "Ostrava", "Brennic", "Sarduun", "Mirefall", "Tolbek",
                  "Quorra", "Elmsby"),
    "occupation": ("baker", "pilot", "farmer", "doctor", "painter", "sailor", "teacher", "miner", "tailor",
                   "lawyer"),
    "favourite_colour": ("red", "blue", "green", "yellow", "purple", "orange", "white", "black", "grey",
                         "pink"),
    "employer": ("Zentrix", "Halvane", "Corvel", "Brightmoss", "Umbrik", "Nolastra", "Vexford", "Pellwyn",
                 "Garrowind", "Sunquay"),
}

# The relations' templates (canonical declarative prompt, training templates as (form, template), held-out
# questions) are TOY_TEMPLATES in geomprobe.data.toy_templates: forms.py serves them without importing this module.

_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr",
           "kr", "th", "sh", "st", "tr", "vr")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "ou", "y")
_CODAS = ("", "", "n", "r", "l", "s", "th", "rn", "sk", "m", "x", "nd")

#: Pre-tokenizer pattern: a word, one punctuation mark, or a newline (spaces are dropped).
TOKEN_PATTERN = r"\w+|[^\w\s]|\n"


@dataclass(frozen=True)
class Fact:
    """One fact of the world: ``relation(subject) = object``."""

    subject: str
    relation: str
    object: str


@dataclass(frozen=True)
class World:
    """A seeded toy world.

    Attributes:
        seed: the seed it was generated from.
        subjects: subject names (one or two words each; each word occurs in one subject only).
        relations: relation ids.
        objects: closed object set per relation.
        facts: one fact per (subject, relation), subject-major order.
        templates: template pool per relation.
    """

    seed: int
    subjects: tuple[str, ...]
    relations: tuple[str, ...]
    objects: dict[str, tuple[str, ...]]
    facts: tuple[Fact, ...]
    templates: dict[str, RelationTemplates]
    _answers: dict[tuple[str, str], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_answers", {(f.subject, f.relation): f.object for f in self.facts})

    def answer(self, subject: str, relation: str) -> str:
        """The object of ``relation(subject)``."""
        return self._answers[(subject, relation)]

    def sentence(self, fact: Fact) -> str:
        """The fact as a complete declarative sentence, e.g. ``"Velmora works as a baker ."``."""
        return f"{self.templates[fact.relation].declarative.replace('{}', fact.subject)} {fact.object} ."

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "subjects": list(self.subjects),
            "relations": list(self.relations),
            "objects": {r: list(o) for r, o in self.objects.items()},
            "facts": [[f.subject, f.relation, f.object] for f in self.facts],
            "templates": {
                r: {"declarative": t.declarative, "train": [list(x) for x in t.train],
                    "eval_questions": list(t.eval_questions)}
                for r, t in self.templates.items()
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "World":
        return cls(
            seed=int(d["seed"]),
            subjects=tuple(d["subjects"]),
            relations=tuple(d["relations"]),
            objects={r: tuple(o) for r, o in d["objects"].items()},
            facts=tuple(Fact(*f) for f in d["facts"]),
            templates={r: RelationTemplates.from_dict(r, t) for r, t in d["templates"].items()},
        )


def toy_relation_templates() -> dict[str, RelationTemplates]:
    """Template pools of the toy relations (pass as ``templates=`` to the forms helpers)."""
    return {rel: RelationTemplates.from_dict(rel, d) for rel, d in TOY_TEMPLATES.items()}


def words(text: str) -> list[str]:
    """The word-level tokens of ``text`` (same split as the toy tokenizer)."""
    return re.findall(TOKEN_PATTERN, text)


def _template_words() -> set[str]:
    out: set[str] = set()
    for d in TOY_TEMPLATES.values():
        for t in (d["declarative"], *(t for _, t in d["train"]), *d["eval_questions"]):
            out.update(words(t))
    return out


def _make_names(rng: random.Random, n: int, reserved: set[str]) -> list[str]:
    """``n`` distinct made-up words, capitalised, none in ``reserved`` (case-insensitive)."""
    taken = {w.lower() for w in reserved}
    out: list[str] = []
    while len(out) < n:
        syll = rng.choice((2, 2, 2, 3))
        w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syll)) + rng.choice(_CODAS)
        if 4 <= len(w) <= 8 and w not in taken:
            taken.add(w)
            out.append(w.capitalize())
    return out


#: Subject-name styles of :func:`toy_world`.
NAME_STYLES = ("mixed", "shared-two-word")


def _mixed_names(rng: random.Random, n: int, two_word_share: float, reserved: set[str]) -> list[str]:
    """One- and two-word names; every word occurs in one subject only."""
    n_two = int(round(n * two_word_share))
    pool = _make_names(rng, n + n_two, reserved)
    firsts, rest = pool[:n_two], pool[n_two:]
    return [f"{firsts[i]} {rest[i]}" for i in range(n_two)] + rest[n_two:]


def _shared_two_word_names(rng: random.Random, n: int, reserved: set[str]) -> list[str]:
    """Two-word names over one shared word pool, in mirrored pairs (``"A B"`` and ``"B A"``).

    ``n // 2`` unordered word pairs are drawn from ``k`` words (``k*(k-1)/2 >= 1.5n``) and both orders
    are subjects (plus one unpaired name if ``n`` is odd).  Every word occurs in several subjects and
    the set of words never identifies a subject, only their order does, so the model has to compose
    the subject at its last token.
    """
    k = 3
    while k * (k - 1) // 2 < max(1, math.ceil(1.5 * n)):
        k += 1
    pool = _make_names(rng, k, reserved)
    pairs = rng.sample([(a, b) for i, a in enumerate(pool) for b in pool[i + 1:]], (n + 1) // 2)
    names = [x for a, b in pairs for x in (f"{a} {b}", f"{b} {a}")]
    return names[:n]


@lru_cache(maxsize=8)
def toy_world(seed: int = 0, n_subjects: int = 200, two_word_share: float = 0.4,
              name_style: str = "mixed") -> World:
    """Generate the toy world deterministically from ``seed``.

    Args:
        seed: seed of names and facts.
        n_subjects: number of subjects (each has one fact per relation).
        two_word_share: ``mixed`` style only: share of subjects with a two-word name (``"Dask Orrin"``).
        name_style: ``mixed`` (default, the world of the shipped toy checkpoints): one- and two-word
            names whose words are unique to one subject; ``shared-two-word``: every subject is two
            words from one shared pool, in mirrored pairs (``"A B"`` and ``"B A"``), so neither a word
            nor the set of words identifies it and the model must compose the subject in order
            (experimental: no shipped checkpoint is trained on it yet).
    """
    if name_style not in NAME_STYLES:
        raise ValueError(f"unknown name_style {name_style!r}; use one of {', '.join(NAME_STYLES)}")
    rng = random.Random(seed)
    reserved = _template_words() | {o for objs in OBJECTS.values() for o in objs}
    if name_style == "mixed":
        subjects = _mixed_names(rng, n_subjects, two_word_share, reserved)
    else:
        subjects = _shared_two_word_names(rng, n_subjects, reserved)
    rng.shuffle(subjects)
    relations = tuple(OBJECTS)
    facts = tuple(Fact(s, r, rng.choice(OBJECTS[r])) for s in subjects for r in relations)
    return World(seed=seed, subjects=tuple(subjects), relations=relations, objects=dict(OBJECTS), facts=facts,
                 templates=toy_relation_templates())


def training_prompts(world: World) -> list[tuple[str, str, str, str]]:
    """Every prompt the toy model is trained on.

    Returns:
        ``(text, answer, form, relation)`` rows: the canonical declarative prompt, the declarative
        train templates (form ``paraphrase``), and every question/instruction train template rendered
        in both the plain question frame and the plain instruction frame (forms ``question`` /
        ``instruction``), exactly as :func:`geomprobe.data.forms.render` renders them.
    """
    rows: list[tuple[str, str, str, str]] = []
    for f in world.facts:
        pool = world.templates[f.relation]
        rows.append((render(pool.declarative, f.subject, "declarative").text, f.object, "declarative", f.relation))
        for form, t in pool.train:
            if form == "declarative":
                rows.append((render(t, f.subject, "declarative").text, f.object, "paraphrase", f.relation))
            else:
                for frame in ("question", "instruction"):
                    rows.append((render(t, f.subject, frame).text, f.object, frame, f.relation))
    return rows


def eval_prompt_sets(world: World, facts: list[Fact] | None = None) -> dict[str, list[tuple[str, str]]]:
    """Prompts per evaluation form: ``{form: [(text, answer), ...]}``.

    Forms: ``declarative`` (canonical prompt), ``paraphrase`` (declarative train templates),
    ``train_question`` / ``train_instruction`` (question and instruction train templates in their own
    frame), ``heldout_question`` / ``heldout_instruction`` (held-out questions, never trained on).
    """
    out: dict[str, list[tuple[str, str]]] = {k: [] for k in (
        "declarative", "paraphrase", "train_question", "train_instruction", "heldout_question",
        "heldout_instruction")}
    for f in facts if facts is not None else world.facts:
        pool = world.templates[f.relation]
        out["declarative"].append((render(pool.declarative, f.subject, "declarative").text, f.object))
        for form, t in pool.train:
            key = {"declarative": "paraphrase", "question": "train_question",
                   "instruction": "train_instruction"}[form]
            out[key].append((render(t, f.subject, "declarative" if form == "declarative" else form).text,
                             f.object))
        for q in pool.eval_questions:
            out["heldout_question"].append((render(q, f.subject, "question").text, f.object))
            out["heldout_instruction"].append((render(q, f.subject, "instruction").text, f.object))
    return out


def vocabulary(world: World) -> list[str]:
    """Every word of the world's training and evaluation text, sorted (specials excluded)."""
    from ..data.forms import PLAIN_INSTRUCTION, PLAIN_QUESTION

    vocab: set[str] = set(words(PLAIN_QUESTION) + words(PLAIN_INSTRUCTION)) | _template_words() | {"."}
    for s in world.subjects:
        vocab.update(words(s))
    for objs in world.objects.values():
        vocab.update(objs)
    return sorted(vocab)


SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")


def build_tokenizer(world: World) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` for ``world`` (no special tokens are added to text).

    Ids: ``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2, ``</s>`` 3, then the sorted vocabulary.
    Offsets map to characters, so ``return_offsets_mapping=True`` works.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for w in vocabulary(world):
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
        pre_tokenizers.Split(Regex(r"[^\w\s]|\n"), behavior="isolated"),
    ])
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", padding_side="right", model_max_length=128)


def toy_requests(n: int = 8, seed: int = 0, same_subject: bool = True, world: World | None = None,
                 n_neighborhood: int = 5) -> list[EditRequest]:
    """Counterfactual edit requests about toy facts.

    Args:
        n: number of requests.
        seed: seed of the subject, relation and new-target choice.
        same_subject: group requests so that every relation of one subject is edited together
            (``n // n_relations`` subjects, plus a partial group); otherwise ``n`` different subjects,
            one relation each.
        world: the world (default ``toy_world(0)``, the shipped checkpoints' world).
        n_neighborhood: number of other subjects' declarative prompts per request.

    Returns:
        Requests with ``target_true`` the world's fact, ``target_new`` another object of the relation,
        paraphrases (declarative train templates) and held-out question/instruction queries.
    """
    world = world if world is not None else toy_world(0)
    if n < 1:
        raise RequestFormatError(f"toy_requests: n={n} must be at least 1; ask for one or more requests")
    rels = world.relations
    max_n = len(world.subjects) * (len(rels) if same_subject else 1)
    if n > max_n:
        raise RequestFormatError(f"toy_requests: n={n} exceeds the {max_n} available facts; ask for fewer requests")
    rng = random.Random(f"toy-requests-{seed}")
    order = list(world.subjects)
    rng.shuffle(order)
    picks: list[tuple[str, str]] = []
    if same_subject:
        for s in order:
            for r in rels:
                picks.append((s, r))
        picks = picks[:n]
    else:
        picks = [(s, rng.choice(rels)) for s in order[:n]]
    out: list[EditRequest] = []
    for i, (s, r) in enumerate(picks):
        pool = world.templates[r]
        true = world.answer(s, r)
        new = rng.choice([o for o in world.objects[r] if o != true])
        others = [x for x in world.subjects if x != s]
        neigh = rng.sample(others, n_neighborhood)
        queries = tuple(Query(text=q.replace("{}", s), form=form, answer=new)
                        for q in pool.eval_questions for form in ("question", "instruction"))
        out.append(EditRequest(
            subject=s, relation=r, prompt=pool.declarative, target_new=new, target_true=true,
            paraphrases=tuple(t.replace("{}", s) for f, t in pool.train if f == "declarative"),
            neighborhood=tuple(pool.declarative.replace("{}", x) for x in neigh),
            queries=queries, case_id=f"toy-{seed}-{i}",
        ))
    return out
