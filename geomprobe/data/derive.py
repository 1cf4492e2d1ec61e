"""Rules that turn a relation's declarative template into natural questions, without a model.

:func:`derive_pool` parses a template (``{}`` = the subject) into a small *frame* and writes a
:class:`~geomprobe.data.forms.RelationTemplates` pool from it: declarative rephrasings, questions and
instructions to train on, and held-out questions (disjoint from the training ones) to evaluate on.
A template no rule covers gives ``None`` (then a model may rewrite it, :mod:`geomprobe.data.rewrite`).

**Normalisation.**  Whitespace is collapsed and trailing ``, : ;`` dropped; a relative clause after the
subject is unwrapped (``"{}, which is located in"`` -> ``"{} is located in"``, also ``who``/``that``);
a bare participle or noun after a comma gets its copula (``"{}, located in"`` -> ``"{} is located in"``,
``"{}, a member of"`` -> ``"{} is a member of"``); a template that holds a question before an answer stub
(``"What does {} play? They play"``) is read as that question.

**Frames** (the rule that matches first wins; ``X`` a noun phrase, ``T`` an answer type, ``P`` a preposition):

============  =====================================================  =====================================
frame         declarative templates                                  first questions
============  =====================================================  =====================================
``attr``      ``The X of {} is`` · ``{}'s X is`` · ``{}, whose X is``    ``What is the X of {}?``,
              · ``{}, which has the X`` · ``In {}, an X is``             ``What is {}'s X?``
``attr``+loc  ``The X of {} is (located) in``                         ``Where is the X of {}?``
``passive``   ``{} is|was [ADV] VERBed [P] [the T [of]]``             ``Where was {} born?``, ``Who developed
                                                                     {}?``, ``Which religion is {} affiliated
                                                                     with?``, ``What is {} named after?``
``place``     ``{} is [originally] from`` · ``{} is in``               ``Where is {} from?``
``active``    ``{} VERBs|VERBed [P] [the T [of]]`` ·                  ``Who does {} work for?``, ``Where did {}
              ``{} VERBs the N P``                                   die?``, ``Which language does {} speak?``
``copula``    ``{} is a|an|the N P [the T of]``                       ``Which country is {} a citizen of?``
============  =====================================================  =====================================

Questions (zsRE's ``src``, e.g. ``"Which county is {} located in?"``, ``"What is the twin city of {}?"``,
``"What company produced {}?"``, ``"Which war did {} participate in?"``) are parsed into the same frames.

**The wh-word** comes from, in order: the answer type ``T`` of the template (``"... in the city of"``), the
caller's ``answer_type``, a default of the verb or predicate noun (:data:`DEFAULT_TYPES`,
:data:`PREDICATE_TYPES`: ``"a citizen of"`` -> country, ``"aired on"`` -> network); then ``who`` for
agents (``"... by"``, ``"works for"``, person nouns such as *founder*), ``where`` for place verbs with
``in/at/on/from`` (:data:`PLACE_VERBS`: born, located, died, lives, founded, ...), else ``what``.

**Pools.**  Each frame gives ordered candidates: declaratives (frame rephrasings, then the fixed prefixes
"As everyone knows, " / "In fact, " / "It is well known that "), training questions (wh-question,
"Can you tell me ...", ...), instructions ("Name the ...", "Tell me ...", "State ..."), and held-out
questions with other stems ("Do you know ...", "Which X does {} have?", ...).  The training pool interleaves
declarative, question and instruction templates (so HKI's first leaves mix forms); the template itself
is never a training template, and a question template (or the question inside a template) is held out
for evaluation.  Every derived pool has at least 3 training questions and 2 held-out questions.

:data:`COUNTERFACT_TEMPLATES` and :data:`YAGO_TEMPLATES` hold the canonical declaratives (with answer types)
from which ``builtin/counterfact_relations.json`` and ``builtin/yago_relations.json`` were written
(:func:`dataset_pools`; ``python -m geomprobe.data.derive --write`` rewrites them after a rule change).
The rules cover all 32 CounterFact templates without a model.

**The lookup.**  :func:`pool_for` finds a relation's pool: the user's pools, the built-in ones, pools already
resolved by :func:`prepare_pools`, these rules, and (with a model) :func:`geomprobe.data.rewrite.rewrite_pool`;
it raises a one-line error naming ``geomprobe templates`` when nothing applies.  :func:`prepare_pools` resolves
the pools of a request list once and registers them, so that ``forms.eval_prompts``/``forms.train_prompts``
(which never derive anything themselves) see them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

from .forms import (RelationTemplates, declarative_variants, find_pool, no_pool_error, pool_from_lists, pool_key,
                    register_pools)

__all__ = ["COUNTERFACT_TEMPLATES", "YAGO_TEMPLATES", "Frame", "dataset_pools", "derive_pool", "frame_of",
           "normalize", "pool_for", "prepare_pools", "resolve_pools"]

# --------------------------------------------------------------------------- lexicon

#: Irregular verbs: base -> (3rd person singular, past, past participle).
_IRREGULAR: dict[str, tuple[str, str, str]] = {
    "bear": ("bears", "bore", "born"), "speak": ("speaks", "spoke", "spoken"), "hold": ("holds", "held", "held"),
    "write": ("writes", "wrote", "written"), "make": ("makes", "made", "made"), "lead": ("leads", "led", "led"),
    "win": ("wins", "won", "won"), "teach": ("teaches", "taught", "taught"), "sing": ("sings", "sang", "sung"),
    "build": ("builds", "built", "built"), "know": ("knows", "knew", "known"), "have": ("has", "had", "had"),
    "broadcast": ("broadcasts", "broadcast", "broadcast"), "grow": ("grows", "grew", "grown"),
    "buy": ("buys", "bought", "bought"), "sell": ("sells", "sold", "sold"), "run": ("runs", "ran", "run"),
    "fight": ("fights", "fought", "fought"), "star": ("stars", "starred", "starred"),
    "occur": ("occurs", "occurred", "occurred"), "shoot": ("shoots", "shot", "shot"), "set": ("sets", "set", "set"),
    "begin": ("begins", "began", "begun"), "draw": ("draws", "drew", "drawn"), "twin": ("twins", "twinned", "twinned"),
}

#: Verbs the rules know: base -> agent noun for ``"... by"`` passives (``""``: none reads well).
VERBS: dict[str, str] = {
    "locate": "", "situate": "", "bear": "", "die": "", "live": "", "reside": "", "settle": "", "found": "founder",
    "establish": "founder", "create": "creator", "develop": "developer", "produce": "producer", "make": "maker",
    "manufacture": "manufacturer", "own": "owner", "employ": "employer", "represent": "", "name": "", "call": "",
    "air": "", "broadcast": "broadcaster", "premiere": "", "debut": "", "release": "", "publish": "publisher",
    "affiliate": "", "write": "author", "direct": "director", "design": "designer", "invent": "inventor",
    "build": "builder", "compose": "composer", "discover": "discoverer", "lead": "leader", "operate": "operator",
    "distribute": "distributor", "edit": "editor", "paint": "painter", "translate": "translator",
    "headquarter": "", "base": "", "bury": "", "educate": "", "form": "", "originate": "", "start": "",
    "work": "", "study": "", "graduate": "", "happen": "", "occur": "", "hold": "", "record": "", "film": "",
    "shoot": "", "set": "", "speak": "", "play": "", "perform": "", "sing": "", "act": "", "star": "",
    "marry": "", "connect": "", "interest": "", "know": "", "influence": "", "specialize": "", "specialise": "",
    "participate": "", "compete": "", "belong": "", "border": "", "trade": "", "import": "", "export": "",
    "use": "", "sign": "", "join": "", "attend": "", "win": "", "receive": "", "have": "", "teach": "",
    "serve": "", "coach": "", "manage": "manager", "govern": "", "rule": "", "grow": "", "raise": "",
    "begin": "", "follow": "", "practise": "", "practice": "", "elect": "", "appoint": "", "host": "host",
    "sponsor": "sponsor", "acquire": "", "buy": "buyer", "sell": "", "run": "", "fight": "", "draw": "",
    "twin": "", "flow": "",
}

#: Verbs whose ``in/at/on/from`` object is a place (``where`` questions).
PLACE_VERBS = frozenset("""locate situate bear die live reside settle found establish create base headquarter bury
    educate form originate start work study graduate happen occur hold record film shoot set make produce build
    grow raise begin teach publish speak""".split())

#: Default answer type of ``(verb, preposition)`` when the template names none.
DEFAULT_TYPES: dict[tuple[str, str], str] = {
    ("air", "on"): "network", ("broadcast", "on"): "network", ("premiere", "on"): "network",
    ("debut", "on"): "network", ("write", "in"): "language", ("play", "for"): "team",
    ("specialize", "in"): "field", ("specialise", "in"): "field", ("sign", "to"): "record label",
    ("speak", "in"): "language", ("twin", "with"): "city",
}

#: Answer type of a predicate noun (``"{} is a citizen of"`` -> country); ``""``: ask ``what``.
PREDICATE_TYPES: dict[str, str] = {
    "citizen": "country", "member": "organization", "product": "company", "native speaker": "language",
    "speaker": "language", "capital": "country", "capital city": "country", "twin city": "city",
    "sister city": "city", "subsidiary": "company", "resident": "city", "graduate": "university",
    "alumnus": "university", "employee": "company", "mayor": "city", "politician": "country",
    "native": "place", "part": "",
}

#: Attribute nouns whose value is a person (``Who is the founder of {}?``).
PERSON_NOUNS = frozenset("""founder father mother parent spouse wife husband child son daughter author director designer
    creator developer owner leader president head ceo coach manager composer writer inventor sibling brother sister
    architect producer advisor adviser supervisor teacher student partner successor predecessor chairman chairperson
    editor publisher king queen monarch governor mayor""".split())

#: Answer types that are places (a ``Where ...?`` question is asked next to ``In which <type> ...?``).
PLACE_TYPES = frozenset("city country continent place region state county town village province".split())

#: Adverbs allowed between the copula and the participle (``was originally aired on``).
ADVERBS = frozenset("""originally first officially mainly primarily currently also formerly initially professionally
    usually mostly now still later""".split())

PREPOSITIONS = ("in", "at", "on", "by", "for", "of", "after", "with", "to", "from", "as", "into", "under", "within",
                "about", "against", "behind")


def _forms(base: str) -> tuple[str, str, str]:
    """(3rd person singular, past, past participle) of a verb."""
    if base in _IRREGULAR:
        return _IRREGULAR[base]
    if re.search(r"(s|sh|ch|x|z|o)$", base):
        s = base + "es"
    elif re.search(r"[^aeiou]y$", base):
        s = base[:-1] + "ies"
    else:
        s = base + "s"
    if base.endswith("e"):
        past = base + "d"
    elif re.search(r"[^aeiou]y$", base):
        past = base[:-1] + "ied"
    else:
        past = base + "ed"
    return s, past, past


_THIRD: dict[str, str] = {}
_PAST: dict[str, str] = {}
_PARTICIPLE: dict[str, str] = {}
for _b in VERBS:
    _s, _p, _pp = _forms(_b)
    _THIRD.setdefault(_s, _b)
    _PAST.setdefault(_p, _b)
    _PARTICIPLE.setdefault(_pp, _b)


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Frame:
    """What the rules read from a template.

    Attributes:
        kind: ``attr`` (The X of {} is), ``passive`` ({} is VERBed P), ``place`` ({} is from), ``active``
            ({} VERBs P), ``copula`` ({} is a N P).
        tense: ``present`` or ``past``.
        noun: ``attr``: the attribute noun phrase X; ``copula``: the predicate noun phrase with its article.
        verb: ``passive``/``active``: the verb's base form.
        adverb: an adverb before the verb (``originally``), kept in every question.
        prep: the trailing preposition (``""`` when none).
        obj: ``active``: an object before the preposition (``the music`` in "wrote the music for").
        answer: the answer type (``city``), ``""`` when unknown.
        located: ``attr``: the value is a place (``The headquarters of {} are in``).
        plural: ``attr``: the noun takes ``are``/``were``.
        asked: a question the template itself asks (held out for evaluation, never trained on).
        declarative: the normalised declarative clause (``""`` for question templates).
    """

    kind: str
    tense: str = "present"
    noun: str = ""
    verb: str = ""
    adverb: str = ""
    prep: str = ""
    obj: str = ""
    answer: str = ""
    located: bool = False
    plural: bool = False
    asked: str = ""
    declarative: str = ""


_W = r"[A-Za-z][A-Za-z'\-]*"
_NP = rf"{_W}(?: {_W}){{0,4}}"           # a noun phrase of 1-5 words
_PREP = "|".join(PREPOSITIONS)
_TWORD = rf"(?!(?:{_PREP}|the|a|an|is|are|was|were|does|did|do)\b)[a-z][a-z\-]*"
_TYPE = rf"{_TWORD}(?: {_TWORD}){{0,2}}"  # an answer type: 1-3 lowercase words, no preposition
_BE = r"is|are|was|were"
_ADV = "|".join(sorted(ADVERBS))


def normalize(template: str) -> str:
    """Collapse whitespace, drop trailing ``, : ;``, unwrap a relative clause after the subject."""
    t = " ".join(template.split()).rstrip(",:; ")
    t = re.sub(r"^\{\}, (?:which|who|that) ", "{} ", t)
    m = re.match(r"^\{\}, (?:(a|an) )?(.+)$", t)
    if m and not t.startswith("{}, whose") and not t.startswith("{}, which"):
        rest = m.group(2)
        first = rest.split()[0]
        if m.group(1):  # "{}, a member of" -> "{} is a member of"
            t = f"{{}} is {m.group(1)} {rest}"
        elif first in _PARTICIPLE and first not in _THIRD:  # "{}, located in" -> "{} is located in"
            aux = "was" if _PARTICIPLE[first] in _PAST_DEFAULT else "is"
            t = f"{{}} {aux} {rest}"
    return t


#: Participles that read in the past when a template drops the copula ("{}, founded in" -> "was founded in").
_PAST_DEFAULT = frozenset("bear found establish create develop produce make form originate start release air "
                          "broadcast premiere debut publish write direct design invent build compose discover "
                          "record film shoot begin".split())


def _tense(be: str) -> str:
    return "past" if be in ("was", "were", "did", "had") else "present"


def _verb_of(word: str) -> tuple[str, str] | None:
    """(base, tense) of a finite verb form (``works`` -> work/present, ``died`` -> die/past)."""
    if word in _THIRD:
        return _THIRD[word], "present"
    if word in _PAST:
        return _PAST[word], "past"
    return None


def _answer_of(t: str | None) -> str:
    return (t or "").strip().lower()


def _attr_noun(x: str) -> str:
    x = re.sub(r"^name of (?:the )?", "", x.strip())
    return x


def frame_of(template: str) -> Frame | None:
    """The frame of a declarative template or a question (None when no rule matches)."""
    if template.count("{}") != 1:
        return None
    t = normalize(template)
    if t.endswith("?"):
        return _question_frame(t[:-1].strip(), asked=t)
    m = re.match(r"^(.*\{\}.*?\?)\s+\S.*$", t)  # "What does {} play? They play"
    if m:
        f = _question_frame(m.group(1)[:-1].strip(), asked=m.group(1))
        return f
    return _declarative_frame(t)


def _declarative_frame(t: str) -> Frame | None:
    # attr: The X of {} is [located] [in]
    m = re.match(rf"^The ({_NP}) of \{{\}} ({_BE})(?: (?:located |situated |based )?(in|at))?(?: (?:a|an|the))?$", t)
    if m:
        return Frame("attr", _tense(m.group(2)), noun=m.group(1).lower(), located=bool(m.group(3)),
                     plural=m.group(2) in ("are", "were"), declarative=t)
    m = re.match(rf"^\{{\}}'s ({_NP}) ({_BE})(?: (?:located |situated |based )?(in|at))?(?: (?:a|an|the))?$", t)
    if m:
        return Frame("attr", _tense(m.group(2)), noun=m.group(1).lower(), located=bool(m.group(3)),
                     plural=m.group(2) in ("are", "were"), declarative=t)
    m = re.match(rf"^\{{\}}'s ({_NP})$", t)
    if m and not _verb_of(m.group(1).split()[-1]):
        return Frame("attr", "present", noun=m.group(1).lower(), declarative=f"{{}}'s {m.group(1)} is")
    m = re.match(rf"^\{{\}}, whose ({_NP}) ({_BE})$", t)
    if m:
        return Frame("attr", _tense(m.group(2)), noun=m.group(1).lower(), plural=m.group(2) in ("are", "were"),
                     declarative=f"The {m.group(1)} of {{}} {m.group(2)}")
    m = re.match(rf"^\{{\}}, which (?:has|had) (?:the|a|an) ({_NP})$", t)
    if m:
        return Frame("attr", "present", noun=m.group(1).lower(), declarative=f"The {m.group(1)} of {{}} is")
    m = re.match(rf"^In \{{\}}, (?:an|a|the) ({_NP}) (is|was)$", t)
    if m:
        return Frame("attr", _tense(m.group(2)), noun=m.group(1).lower(),
                     declarative=f"The {m.group(1)} of {{}} {m.group(2)}")
    # place: {} is [originally] from / {} is in
    m = re.match(rf"^\{{\}} ({_BE})(?: ({_ADV}))? (from|in)$", t)
    if m:
        return Frame("place", _tense(m.group(1)), adverb=m.group(2) or "", prep=m.group(3), declarative=t)
    # copula: {} is a|an|the N P [the T [of]]
    m = re.match(rf"^\{{\}} ({_BE})(?: ({_ADV}))? (a|an|the) ({_NP}) (of|for|in|with|on|at)"
                 rf"(?: the ({_TYPE})(?: of)?)?$", t)
    if m and m.group(4).split()[-1] not in _PARTICIPLE:
        noun = m.group(4).lower()
        answer = _answer_of(m.group(6)) or PREDICATE_TYPES.get(noun, PREDICATE_TYPES.get(noun.split()[-1], ""))
        return Frame("copula", _tense(m.group(1)), noun=f"{m.group(3)} {noun}", adverb=m.group(2) or "",
                     prep=m.group(5), answer=answer, declarative=t)
    # passive: {} is [ADV] VERBed [P] [the T [of]]
    m = re.match(rf"^\{{\}} ({_BE})(?: ({_ADV}))? ([a-z]+)(?: ({_PREP}))?(?: the ({_TYPE})(?: of)?)?$", t)
    if m and m.group(3) in _PARTICIPLE and (m.group(4) or not m.group(5)):
        verb = _PARTICIPLE[m.group(3)]
        prep = m.group(4) or ""
        return Frame("passive", _tense(m.group(1)), verb=verb, adverb=m.group(2) or "", prep=prep,
                     answer=_answer_of(m.group(5)) or DEFAULT_TYPES.get((verb, prep), ""), declarative=t)
    # active: {} [ADV] VERBs [the N P] | [P] [the [T [of]]]
    m = re.match(rf"^\{{\}}(?: ({_ADV}))? ([a-z]+) the ({_TYPE}) ({_PREP})$", t)
    if m and _verb_of(m.group(2)) and m.group(4) != "of":
        verb, tense = _verb_of(m.group(2))
        return Frame("active", tense, verb=verb, adverb=m.group(1) or "", obj=f"the {m.group(3)}", prep=m.group(4),
                     declarative=t)
    m = re.match(rf"^\{{\}}(?: ({_ADV}))? ([a-z]+)(?: ({_PREP}))?(?: the(?: ({_TYPE})(?: of)?)?)?$", t)
    if m and _verb_of(m.group(2)):
        verb, tense = _verb_of(m.group(2))
        prep = m.group(3) or ""
        return Frame("active", tense, verb=verb, adverb=m.group(1) or "", prep=prep,
                     answer=_answer_of(m.group(4)) or DEFAULT_TYPES.get((verb, prep), ""), declarative=t)
    return None


def _question_frame(q: str, asked: str) -> Frame | None:
    """Frames of questions (without the question mark)."""
    q = q[0].upper() + q[1:] if q else q
    m = re.match(rf"^(What|Who|Which) ({_BE}) the ({_NP}) of \{{\}}$", q)
    if m:
        noun = _attr_noun(m.group(3).lower())
        return Frame("attr", _tense(m.group(2)), noun=noun, plural=m.group(2) in ("are", "were"), asked=asked,
                     answer="person" if m.group(1) == "Who" else "")
    m = re.match(rf"^(What|Who|Which) ({_BE}) \{{\}}'s ({_NP})$", q)
    if m:
        return Frame("attr", _tense(m.group(2)), noun=_attr_noun(m.group(3).lower()), asked=asked,
                     plural=m.group(2) in ("are", "were"), answer="person" if m.group(1) == "Who" else "")
    m = re.match(rf"^Where ({_BE}) \{{\}}(?: ({_ADV}))?(?: (from))?$", q)
    if m:
        return Frame("place", _tense(m.group(1)), adverb=m.group(2) or "", prep=m.group(3) or "in", asked=asked)
    m = re.match(rf"^(?:({_PREP}) )?(What|Which|Where|Who|Whom)(?: ({_TYPE}))? ({_BE}) \{{\}}(?: ({_ADV}))? "
                 rf"([a-z]+)(?: ({_PREP}))?$", q, flags=re.IGNORECASE)
    if m and m.group(6) in _PARTICIPLE:
        verb = _PARTICIPLE[m.group(6)]
        wh = m.group(2).lower()
        prep = (m.group(1) or m.group(7) or ("by" if wh in ("who", "whom") and VERBS.get(verb) else "")).lower()
        if wh == "where" and not prep:
            prep = "in"
        return Frame("passive", _tense(m.group(4)), verb=verb, adverb=m.group(5) or "", prep=prep,
                     answer=_answer_of(m.group(3)) or DEFAULT_TYPES.get((verb, prep), ""), asked=asked)
    m = re.match(rf"^(?:(What|Which)(?: ({_TYPE}))?|Who) ({_BE}) \{{\}}(?: (a|an|the))? ({_NP}) "
                 rf"(of|for|in|with|on)$", q)
    if m:
        noun = m.group(5).lower()
        answer = _answer_of(m.group(2)) or PREDICATE_TYPES.get(noun, "")
        art = m.group(4) or ""
        return Frame("copula", _tense(m.group(3)), noun=f"{art} {noun}".strip(), prep=m.group(6), answer=answer,
                     asked=asked)
    m = re.match(rf"^(?:({_PREP}) )?(What|Which|Where|Who|Whom)(?: ({_TYPE}))? (does|did|do) \{{\}}(?: ({_ADV}))? "
                 rf"([a-z]+)(?: ({_PREP}))?$", q, flags=re.IGNORECASE)
    if m and m.group(6) in VERBS:
        verb = m.group(6)
        wh = m.group(2).lower()
        prep = (m.group(1) or m.group(7) or "").lower()
        if wh == "where" and not prep:
            prep = "in"
        answer = _answer_of(m.group(3)) or DEFAULT_TYPES.get((verb, prep), "")
        if wh == "where" and verb not in PLACE_VERBS:
            answer = answer or "place"
        return Frame("active", "past" if m.group(4).lower() == "did" else "present", verb=verb,
                     adverb=m.group(5) or "", prep=prep, answer=answer, asked=asked)
    m = re.match(rf"^(What|Which|Who)(?: ({_TYPE}))? ([a-z]+) \{{\}}$", q)
    if m and _verb_of(m.group(3)):
        verb, tense = _verb_of(m.group(3))
        return Frame("passive", tense, verb=verb, prep="by", answer=_answer_of(m.group(2)), asked=asked)
    return None


# --------------------------------------------------------------------------- writing questions


def _tidy(text: str) -> str:
    text = " ".join(text.split())
    text = re.sub(r" ([?.,])", r"\1", text)
    return text.replace("@", "{}")


def _wh(f: Frame) -> str:
    """``which`` (answer type known), ``who``, ``where`` or ``what``."""
    if f.answer == "person":
        return "who"
    if f.answer and f.answer != "place":
        return "which"
    if f.kind == "place" or f.answer == "place":
        return "where"
    if f.kind == "attr":
        return "who" if f.noun.split()[-1] in PERSON_NOUNS else "what"
    if f.kind == "passive" and f.prep == "by":
        return "who"
    if f.kind == "active" and f.prep == "for" and not f.obj:
        return "who"
    if f.verb == "marry":
        return "who"
    if f.kind in ("passive", "active") and not f.obj and f.prep in ("in", "at", "on", "from") and f.verb in PLACE_VERBS:
        return "where"
    return "what"


@dataclass
class _Lists:
    declaratives: list[str]
    questions: list[str]
    instructions: list[str]
    held_out: list[str]


def _attr(f: Frame) -> _Lists:
    x = f.noun
    be = ("were" if f.tense == "past" else "are") if f.plural else ("was" if f.tense == "past" else "is")
    if x == "headquarter":
        x, be = "headquarters", "were" if f.tense == "past" else "are"
    do = "did" if f.tense == "past" else "does"
    v = dict(x=x, be=be, do=do, t=f.answer)
    if f.located:
        where = f.answer or "place"
        lists = _Lists(
            ["The {x} of @ {be} located in", "@'s {x} {be} in", "The {x} of @ {be} in"],
            ["Where {be} the {x} of @?", "Where {be} the {x} of @ located?", "Can you tell me where the {x} of @ {be}?",
             f"In which {where} {{be}} the {{x}} of @?"],
            ["Tell me where the {x} of @ {be}.", f"Name the {where} where the {{x}} of @ {{be}}.",
             "State the location of the {x} of @."],
            ["Do you know where the {x} of @ {be}?", "What is the location of the {x} of @?"]
            + ([f"Which {where} {{be}} the {{x}} of @ in?"] if f.answer else []))
    elif _wh(f) == "who":
        lists = _Lists(
            ["The {x} of @ {be}", "@'s {x} {be}", "One {x} of @ {be}"],
            ["Who {be} the {x} of @?", "Who {be} @'s {x}?", "Can you tell me who the {x} of @ {be}?",
             "Tell me, who {be} the {x} of @?"],
            ["Name the {x} of @.", "Tell me who the {x} of @ {be}.", "State who the {x} of @ {be}."],
            ["Do you know who the {x} of @ {be}?", "Could you say who @'s {x} {be}?"])
    else:
        lists = _Lists(
            ["The {x} of @ {be}", "@'s {x} {be}"],
            ["What {be} the {x} of @?", "What {be} @'s {x}?", "Can you tell me what the {x} of @ {be}?"]
            + (["Which {t} {be} the {x} of @?"] if f.answer else ["Tell me, what {be} the {x} of @?"]),
            ["Name the {x} of @.", "Tell me the {x} of @.", "State the {x} of @."],
            ["Which {x} {do} @ have?", "Do you know what the {x} of @ {be}?"]
            + (["Which {t} {be} @'s {x}?"] if f.answer else []))
    return _fill(lists, v)


def _verbal(f: Frame) -> _Lists:
    """passive / active / place / copula frames."""
    s, past, pp = _forms(f.verb) if f.verb else ("", "", "")
    adv = f"{f.adverb} " if f.adverb else ""
    p = f.prep
    wh = _wh(f)
    t = f.answer
    if f.kind in ("passive", "place", "copula"):
        be = "was" if f.tense == "past" else "is"
        if f.kind == "passive":
            core = f"{adv}{pp}"                       # originally aired
        elif f.kind == "place":
            core = f"{adv}from" if p == "from" else adv.strip()  # originally from / ""
            p = ""
        else:
            core = f"{adv}{f.noun}"                   # a citizen
        aux, tail = be, core                          # "Where {aux} @ {tail}?"
        said = f"{be} {core}"                         # "@ {said}" in indirect questions
        agent_active = f"{adv}{s if f.tense == 'present' else past}" if f.kind == "passive" else ""
    else:
        do = "did" if f.tense == "past" else "does"
        infl = s if f.tense == "present" else past
        obj = f" {f.obj}" if f.obj else ""
        aux, tail = do, f"{adv}{f.verb}{obj}"
        said = f"{adv}{infl}{obj}"
        agent_active = ""
    sp = f" {p}" if p else ""
    P = p.capitalize()
    v = dict(aux=aux, tail=tail, said=said, sp=sp, p=p, P=P, t=t)
    decl_base = f.declarative
    if wh == "where" and tail.endswith("from"):
        lists = _Lists(
            ["The place @ {said} is"],
            ["Where {aux} @ {tail}?", "Can you tell me where @ {said}?", "What place {aux} @ {tail}?",
             "Tell me, where {aux} @ {tail}?"],
            ["Tell me where @ {said}.", "Name the place @ {said}.", "Say where @ {said}."],
            ["Do you know where @ {said}?", "Which place {aux} @ {tail}?"])
    elif wh == "where":
        lists = _Lists(
            ["The place where @ {said} is"] if tail else [],
            ["Where {aux} @ {tail}?", "Can you tell me where @ {said}?", "In what place {aux} @ {tail}?",
             "What is the place where @ {said}?"],
            ["Tell me where @ {said}.", "Name the place where @ {said}.", "Say where @ {said}."],
            ["Do you know where @ {said}?", "Where exactly {aux} @ {tail}?"])
    elif wh == "which":
        fronted = "{P} which {t} {aux} @ {tail}?" if p else "What {t} {aux} @ {tail}?"
        lists = _Lists(
            ["The {t} @ {said}{sp} is", "The {t} that @ {said}{sp} is"],
            ["Which {t} {aux} @ {tail}{sp}?", fronted, "Can you tell me which {t} @ {said}{sp}?",
             "Tell me, which {t} {aux} @ {tail}{sp}?"],
            ["Name the {t} @ {said}{sp}.", "Tell me which {t} @ {said}{sp}.", "State the {t} that @ {said}{sp}."],
            ["Do you know which {t} @ {said}{sp}?"]
            + (["What {t} {aux} @ {tail}{sp}?"] if p else ["What is the {t} that @ {said}{sp}?"]))
        if f.kind == "passive" and p == "by" and agent_active:
            lists.held_out.append(f"Which {{t}} {agent_active} @?")
            lists.questions.insert(2, f"Who {agent_active} @?")
        elif f.kind == "passive" and p == "on" and f.verb in ("air", "broadcast", "premiere", "debut"):
            lists.held_out.append(f"Which {{t}} {agent_active} @?")
        if f.verb in PLACE_VERBS and p in ("in", "at") and f.kind in ("passive", "active") and t in PLACE_TYPES:
            lists.questions.insert(2, "Where {aux} @ {tail}?")
    elif wh == "who" and f.kind == "passive" and p == "by":
        agent = VERBS.get(f.verb, "")
        lists = _Lists(
            ([f"The {agent} of @ is", f"@'s {agent} is"] if agent else []),
            [f"Who {agent_active} @?", "By whom {aux} @ {tail}?", f"Can you tell me who {agent_active} @?",
             f"Tell me, who {agent_active} @?"],
            [f"Tell me who {agent_active} @.", (f"Name the {agent} of @." if agent else f"Name who {agent_active} @."),
             f"Say who {agent_active} @."],
            [f"Do you know who {agent_active} @?",
             (f"Who is the {agent} of @?" if agent else f"Who was it that {agent_active} @?")])
    elif wh == "who":
        lists = _Lists(
            [],
            ["Who {aux} @ {tail}{sp}?", "Can you tell me who @ {said}{sp}?"]
            + (["{P} whom {aux} @ {tail}?"] if p else []) + ["Who exactly {aux} @ {tail}{sp}?"],
            ["Tell me who @ {said}{sp}.", "Say who @ {said}{sp}.", "Identify who @ {said}{sp}."],
            ["Do you know who @ {said}{sp}?", "Who is it that @ {said}{sp}?"])
    else:
        lists = _Lists(
            [],
            ["What {aux} @ {tail}{sp}?", "Can you tell me what @ {said}{sp}?", "What exactly {aux} @ {tail}{sp}?",
             "Tell me, what {aux} @ {tail}{sp}?"],
            ["Tell me what @ {said}{sp}.", "Say what @ {said}{sp}.", "Name what @ {said}{sp}."],
            ["Do you know what @ {said}{sp}?", "What is it that @ {said}{sp}?"])
        if f.kind == "copula" and p:
            lists.held_out[1] = "{P} what {aux} @ {tail}?"
    out = _fill(lists, v)
    if decl_base and not f.asked:
        out.declaratives = [d for d in out.declaratives if d != decl_base]
    return out


def _fill(lists: _Lists, v: dict[str, Any]) -> _Lists:
    def one(items):
        return [_tidy(i.format(**v)) for i in items]

    return _Lists(one(lists.declaratives), one(lists.questions), one(lists.instructions), one(lists.held_out))


def derive_pool(relation: str, template: str, answer_type: str | None = None) -> RelationTemplates | None:
    """A pool for ``relation`` derived by rule from ``template`` (a declarative prompt or a question with one
    ``{}``); None when no rule matches.

    Args:
        relation: the relation id the pool is for (only stored in the pool).
        template: e.g. ``"{} was born in"`` or ``"Which county is {} located in?"``.
        answer_type: the kind of answer (``"city"``, ``"language"``) when the template does not say it: adds
            ``Which <type> ...`` questions (``"{} was born in"`` + ``"city"`` -> ``"In which city was {} born?"``).
    """
    f = frame_of(template)
    if f is None:
        return None
    if answer_type and not f.answer:
        f = Frame(**{**f.__dict__, "answer": answer_type.strip().lower()})
    lists = _attr(f) if f.kind == "attr" else _verbal(f)
    decl = list(lists.declaratives)
    if f.declarative:
        norm = f.declarative
        if norm != template:
            decl.insert(0, norm)
        decl += declarative_variants(norm)
    pool = pool_from_lists(relation, template, decl, lists.questions, lists.instructions, lists.held_out,
                           origin="rule", asked=f.asked)
    qs = [t for form, t in pool.train if form == "question"]
    if len(qs) < 3 or len(pool.eval_questions) < 2:
        return None
    return pool


# --------------------------------------------------------------------------- the lookup


@lru_cache(maxsize=4096)
def _rule_pool(key: str, template: str) -> RelationTemplates | None:
    return derive_pool(key, template)


def pool_for(relation: str, declarative_template: str | None = None, lm: Any = None, *,
             cache_dir: Any = None) -> RelationTemplates:
    """The template pool of ``relation``, from wherever it can come.

    Order: the user's pools (:func:`~geomprobe.data.forms.add_templates`,
    :func:`~geomprobe.data.forms.load_templates_file`), the built-in pools (geomprobe's relations, CounterFact's
    P-ids, S2RKE's YAGO ids), pools already resolved by :func:`prepare_pools`, the rules of this module applied to
    ``declarative_template``, and (``lm`` given) a model rewrite of it
    (:func:`geomprobe.data.rewrite.rewrite_pool`, cached on disk; a ``fallback`` pool when the model's output is
    unusable).  zsRE and LoCoMo pools are per template (:func:`~geomprobe.data.forms.pool_key`).

    Raises:
        RequestFormatError: nothing found and nothing derivable (no template, no rule and no ``lm``); the message
            names ``geomprobe templates``.
    """
    found = find_pool(relation, declarative_template)
    if found is not None:
        return found
    if declarative_template:
        key = pool_key(relation, declarative_template)
        pool = _rule_pool(key, declarative_template)
        if pool is not None:
            return pool
        if lm is not None:
            from .rewrite import rewrite_pool

            return rewrite_pool(lm, key, declarative_template, cache_dir=cache_dir)
    raise no_pool_error(relation, declarative_template)


def resolve_pools(requests: Iterable[Any], lm: Any = None, *, cache_dir: Any = None,
                  fallback: bool = False) -> tuple[dict[str, RelationTemplates], list[tuple[str, str]]]:
    """One pool per :func:`~geomprobe.data.forms.pool_key` of ``requests``: ``(pools, missing)``.

    A relation whose requests use several templates gets one pool: a known pool, else the pool of its most
    frequent template that a rule covers, else (``lm`` given) the model's rewrite of its most frequent template.
    ``missing`` lists ``(relation, template)`` left without pool; with ``fallback`` they get
    :func:`geomprobe.data.rewrite.fallback_pool` instead.
    """
    groups: dict[str, tuple[str, Counter]] = {}
    for r in requests:
        key = pool_key(r.relation, r.prompt)
        groups.setdefault(key, (r.relation, Counter()))[1][r.prompt] += 1
    pools: dict[str, RelationTemplates] = {}
    missing: list[tuple[str, str]] = []
    for key, (relation, counts) in groups.items():
        ordered = [t for t, _ in counts.most_common()]
        pool = find_pool(relation, ordered[0])
        if pool is None:
            pool = next((p for p in (_rule_pool(key, t) for t in ordered) if p is not None), None)
        if pool is None and lm is not None:
            pool = pool_for(relation, ordered[0], lm, cache_dir=cache_dir)
        if pool is None and fallback:
            from .rewrite import fallback_pool

            pool = fallback_pool(key, ordered[0])
        if pool is None:
            missing.append((relation, ordered[0]))
        else:
            pools[key] = pool
    return pools, missing


def prepare_pools(requests: Iterable[Any], lm: Any = None, *, cache_dir: Any = None,
                  strict: bool = False) -> dict[str, RelationTemplates]:
    """Resolve (rules; a model rewrite with ``lm``) and register the pools of every request's relation, so that
    :func:`~geomprobe.data.forms.eval_prompts`, :func:`~geomprobe.data.forms.train_prompts` and
    :func:`~geomprobe.data.forms.relation_templates` see them.

    Call it once, on the unedited model, before editing or evaluating.  With ``strict`` a relation left without
    pool raises (HKI needs one for every relation); otherwise such requests just get no question/instruction
    prompts from templates.

    Returns:
        the pools by :func:`~geomprobe.data.forms.pool_key`.
    """
    pools, missing = resolve_pools(requests, lm, cache_dir=cache_dir)
    if strict and missing:
        raise no_pool_error(*missing[0])
    register_pools({k: p for k, p in pools.items() if p.origin in ("rule", "model", "fallback")})
    return pools


# --------------------------------------------------------------------------- data sets

#: CounterFact's relation ids with a canonical prompt template each (ROME's CounterFact, from ParaRel) and the
#: answer type used for ``Which ...`` questions (``""``: the rules' own choice).
COUNTERFACT_TEMPLATES: dict[str, tuple[str, str]] = {
    "P17": ("{}, which is located in", "country"),
    "P19": ("{} was born in", "city"),
    "P20": ("{} died in", "city"),
    "P27": ("{} is a citizen of", ""),
    "P30": ("{} is located in the continent of", ""),
    "P36": ("The capital of {} is", "city"),
    "P37": ("The official language of {} is", ""),
    "P39": ("{} holds the position of", ""),
    "P101": ("{} works in the field of", ""),
    "P103": ("The mother tongue of {} is", "language"),
    "P106": ("The profession of {} is", ""),
    "P108": ("{}, who is employed by", "company"),
    "P127": ("{} is owned by", ""),
    "P131": ("{} is located in", ""),
    "P136": ("What does {} play? They play", "music genre"),
    "P138": ("{} is named after", ""),
    "P140": ("{} is affiliated with the religion of", ""),
    "P159": ("The headquarter of {} is in", "city"),
    "P176": ("{} is produced by", "company"),
    "P178": ("{} was developed by", "company"),
    "P190": ("The twin city of {} is", "city"),
    "P264": ("{} is represented by the record label", ""),
    "P276": ("{} is located in", ""),
    "P407": ("The language of {} is", ""),
    "P413": ("{} plays in the position of", ""),
    "P449": ("{} was originally aired on", ""),
    "P463": ("{} is a member of", ""),
    "P495": ("{}, that was created in", "country"),
    "P740": ("{} was founded in", "city"),
    "P937": ("{} worked in the city of", ""),
    "P1303": ("{} plays the", "instrument"),
    "P1412": ("{} speaks the language", ""),
}

#: S2RKE's YAGO-style relation ids with a declarative template (written here) and an answer type.
YAGO_TEMPLATES: dict[str, tuple[str, str]] = {
    "<isLocatedIn>": ("{} is located in", ""),
    "<hasCapital>": ("The capital of {} is", "city"),
    "<isCitizenOf>": ("{} is a citizen of", ""),
    "<wasBornIn>": ("{} was born in", "city"),
    "<diedIn>": ("{} died in", "city"),
    "<hasOfficialLanguage>": ("The official language of {} is", "language"),
    "<officialLanguage>": ("The official language of {} is", "language"),
    "<hasCurrency>": ("The currency of {} is the", ""),
    "<currency>": ("The currency of {} is the", ""),
    "<worksAt>": ("{} works at", ""),
    "<isAffiliatedTo>": ("{} is affiliated with", "organization"),
    "<playsFor>": ("{} plays for", ""),
    "<hasChild>": ("The child of {} is", ""),
    "<isMarriedTo>": ("{} is married to", ""),
    "<graduatedFrom>": ("{} graduated from", "university"),
    "<hasGender>": ("The gender of {} is", ""),
    "<created>": ("{} created", ""),
    "<directed>": ("{} directed the film", ""),
    "<actedIn>": ("{} acted in", "film"),
    "<livesIn>": ("{} lives in", ""),
    "<owns>": ("{} owns", ""),
    "<influences>": ("{} influenced", "person"),
    "<isLeaderOf>": ("{} is the leader of", ""),
    "<participatedIn>": ("{} participated in", "event"),
    "<hasWonPrize>": ("{} won the award", ""),
    "<hasMusicalRole>": ("{} plays the", "instrument"),
    "<isPoliticianOf>": ("{} is a politician of", ""),
    "<wroteMusicFor>": ("{} wrote the music for", ""),
    "<edited>": ("{} edited the film", ""),
    "<isInterestedIn>": ("{} is interested in", ""),
    "<dealsWith>": ("{} trades with", "country"),
    "<exports>": ("{} exports", "product"),
    "<imports>": ("{} imports", "product"),
    "<hasNeighbor>": ("{} borders", "country"),
    "<hasAcademicAdvisor>": ("The academic advisor of {} was", ""),
    "<isConnectedTo>": ("{} is connected to", ""),
    "<happenedIn>": ("{} happened in", ""),
    "<holdsPoliticalPosition>": ("{} holds the political position of", ""),
    "<playsIn>": ("{} plays in", "league"),
    "<isKnownFor>": ("{} is known for", ""),
}


def dataset_pools(which: str) -> dict[str, dict[str, Any]]:
    """The pools written to ``builtin/counterfact_relations.json`` (``"counterfact"``) or
    ``builtin/yago_relations.json`` (``"yago"``), as JSON-ready dicts."""
    table = {"counterfact": COUNTERFACT_TEMPLATES, "yago": YAGO_TEMPLATES}[which]
    out = {}
    for rel, (template, answer) in table.items():
        pool = derive_pool(rel, template, answer or None)
        if pool is None:
            raise ValueError(f"no rule covers {rel} {template!r}")
        d = pool.to_dict()
        d.pop("origin")
        out[rel] = d
    return out


if __name__ == "__main__":  # pragma: no cover - maintenance: rewrite the built-in data set pools
    import json
    import sys
    from pathlib import Path

    here = Path(__file__).parent / "builtin"
    for name in ("counterfact", "yago"):
        pools = dataset_pools(name)
        text = json.dumps(pools, indent=1, ensure_ascii=False) + "\n"
        if "--write" in sys.argv:
            (here / f"{name}_relations.json").write_text(text, "utf-8")
        else:
            print(text)
