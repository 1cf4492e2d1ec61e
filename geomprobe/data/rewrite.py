"""Questions written by an instruction-tuned model for templates no rule covers.

:func:`rewrite_pool` asks the model, once per template, to rewrite the template into questions, and builds a
:class:`~geomprobe.data.forms.RelationTemplates` pool from what it writes:

* **Prompt.**  The model's chat template when it has one (system turn :data:`SYSTEM`, two few-shot exchanges
  :data:`EXAMPLES`, then the template), plain text otherwise.  The subject is shown as a placeholder word
  (``X``; ``Y``/``Z``/``SUBJECT`` when the template already holds that word) and mapped back to ``{}``.
* **Decoding.**  Greedy, at most :data:`MAX_NEW_TOKENS` tokens, stopping at the end-of-sequence token or after
  :data:`N_QUESTIONS` lines: the
  same model always writes the same questions (the global RNG is seeded inside a forked RNG state, so callers'
  random streams are untouched).
* **Validation** (:func:`parse_questions`): one question per line (numbering and bullets stripped); a
  question is kept when it names the placeholder exactly once as a word, ends with ``?``, has 3-30 words, holds
  no braces and differs from the others (case-insensitive).  At least :data:`MIN_QUESTIONS` must survive.
* **Pool.**  Valid questions alternate between training and held-out questions (so both pools get
  several wordings); the training questions also serve as instruction leaves; declarative leaves are the fixed
  prefix rephrasings of :func:`geomprobe.data.forms.declarative_variants`.  ``origin="model"``.
* **Fallback.**  Output that does not validate (a base model, a tiny test model) gives
  :func:`fallback_pool`: generic frames around the template (``"What is the answer to: {} was born in ...?"``),
  ``origin="fallback"``.

Results are cached twice, as for :mod:`geomprobe.editors.contexts`: in memory per process, and under
``<cache root>/templates/<model slug>.json`` with the model identity (a file written for another model is not
used), one entry per prompt version, seed and template.  Run it on the unedited model.
"""

from __future__ import annotations

import json
import re
from typing import Any

import torch

from .forms import RelationTemplates, declarative_variants, has_chat_template, pool_from_lists

__all__ = ["EXAMPLES", "MIN_QUESTIONS", "PROMPT_VERSION", "SYSTEM", "fallback_pool", "parse_questions",
           "rewrite_pool", "rewrite_prompt"]

#: Bumped whenever the prompt changes (cache entries of other versions are not used).
PROMPT_VERSION = 1
#: Questions asked for, and the fewest valid ones that make a model pool.
N_QUESTIONS = 6
MIN_QUESTIONS = 3
MAX_NEW_TOKENS = 160
SYSTEM = "You rewrite unfinished sentences into natural questions. Answer with the questions only."
INSTRUCTION = ("Rewrite this unfinished sentence (or question) about {p} as {n} different natural questions that "
               "ask for the words that complete it. Each question must mention {p} exactly once and end with a "
               "question mark. Write one question per line.\nText: {text}")
#: Few-shot examples (``X`` is the placeholder).
EXAMPLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("The capital of X is", ("What is the capital of X?", "Which city is the capital of X?",
                             "Can you tell me the capital of X?", "Do you know which city is the capital of X?",
                             "What is X's capital city?", "Which city serves as the capital of X?")),
    ("X was born in", ("Where was X born?", "In which city was X born?", "What is the birthplace of X?",
                       "Can you tell me where X was born?", "Do you know the place where X was born?",
                       "Which town was X born in?")),
)
_PLACEHOLDERS = ("X", "Y", "Z", "SUBJECT")
_MEMORY: dict[tuple[str, str], dict[str, Any]] = {}


def _placeholder(template: str) -> str:
    text = template.replace("{}", " ")
    for p in _PLACEHOLDERS:
        if not re.search(rf"(?<!\w){p}(?!\w)", text):
            return p
    return "SUBJECT"


def _swap(text: str, p: str) -> str:
    return text if p == "X" else re.sub(r"(?<!\w)X(?!\w)", p, text)


def rewrite_prompt(template: str, tokenizer: Any) -> tuple[str, str, bool]:
    """``(prompt text, placeholder, chat)``: what the model reads for ``template``."""
    p = _placeholder(template)
    target = template.replace("{}", p)

    def user(text: str) -> str:
        return INSTRUCTION.format(p=p, n=N_QUESTIONS, text=text)

    if has_chat_template(tokenizer):
        turns = []
        for src, qs in EXAMPLES:
            turns += [{"role": "user", "content": user(_swap(src, p))},
                      {"role": "assistant", "content": "\n".join(_swap(q, p) for q in qs)}]
        turns.append({"role": "user", "content": user(target)})
        try:
            text = tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM}, *turns], tokenize=False,
                                                 add_generation_prompt=True)
        except Exception:  # templates without a system role (Gemma): fold it into the first user turn
            turns[0] = {"role": "user", "content": SYSTEM + "\n\n" + turns[0]["content"]}
            text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        return text, p, True
    parts = [SYSTEM, ""]
    for src, qs in EXAMPLES:
        parts += [user(_swap(src, p)), "Questions:", *(_swap(q, p) for q in qs), ""]
    parts += [user(target), "Questions:", ""]
    return "\n".join(parts), p, False


def parse_questions(text: str, placeholder: str = "X", template: str | None = None) -> list[str]:
    """The valid questions of a model's output, as templates with ``{}`` (see the module docstring).

    ``template`` (the rewritten template) is never returned as one of the questions.
    """
    out: list[str] = []
    seen = {template.lower()} if template else set()
    word = re.compile(rf"(?<!\w){re.escape(placeholder)}(?!\w)")
    for line in text.splitlines():
        if line.strip().lower().startswith(("text:", "questions:")):
            if out:
                break
            continue
        q = re.sub(r"^\s*(?:[-*\u2022]|\d+[.)]|Q\d*[:.])\s*", "", line).strip().strip("\"'\u201c\u201d` ").strip()
        if not q.endswith("?") or "{" in q or "}" in q or len(word.findall(q)) != 1:
            continue
        if not 3 <= len(q.split()) <= 30:
            continue
        t = word.sub("{}", q, count=1)
        if t.lower() in seen:
            continue
        seen.add(t.lower())
        out.append(t)
    return out


def _is_question(template: str) -> bool:
    return template.rstrip().endswith("?")


def fallback_pool(relation: str, template: str) -> RelationTemplates:
    """Generic frames around ``template`` (``origin="fallback"``) for when no rule and no model gives questions.

    A declarative ``D`` gives questions ``"What is the answer to: D ...?"``, ``"How does this sentence end: D
    ...?"``...; a question ``Q`` is held out as it is and framed (``"Here is a question: Q"``) for training.
    """
    t = " ".join(template.split())
    if _is_question(t):
        return pool_from_lists(
            relation, template, [],
            [f"Here is a question: {t}", f"Quick question: {t}", f"I have a question. {t}"],
            [f"Answer this question: {t}", f"Answer briefly: {t}", f"Reply in a few words: {t}"],
            [t, f"Do you know the answer? {t}"], origin="fallback")
    d = t.rstrip(",:; ")
    return pool_from_lists(
        relation, template, declarative_variants(d),
        [f"What is the answer to: {d} ...?", f"How does this sentence end: {d} ...?",
         f"Can you complete this sentence: {d} ...?"],
        [f"Complete: {d} ...", f"Finish this sentence: {d} ...", f"Fill in the blank: {d} ___"],
        [f"How would you complete this: {d} ...?", f"What comes next: {d} ...?"], origin="fallback")


def _model_pool(relation: str, template: str, questions: list[str]) -> RelationTemplates:
    train, held = questions[0::2][:4], questions[1::2][:4]
    decl = [] if _is_question(template) else declarative_variants(" ".join(template.split()).rstrip(",:; "))
    return pool_from_lists(relation, template, decl, train, train[:3], held, origin="model",
                           asked=template if _is_question(template) else "")


def rewrite_pool(lm: Any, relation: str, template: str, *, seed: int = 0, cache_dir: Any = None) -> RelationTemplates:
    """The pool of ``template`` written by the model ``lm`` (a :class:`geomprobe.models.LM`), cached in memory and
    on disk; the :func:`fallback_pool` when its output does not validate.

    Args:
        relation: the key the pool is stored under (see :func:`geomprobe.data.forms.pool_key`).
        template: a declarative template or a question with one ``{}``.
        seed: part of the cache key (decoding is greedy).
        cache_dir: the cache root (default ``$GEOMPROBE_CACHE`` or ``~/.cache/geomprobe``).
    """
    entry = _entry(lm, template, seed, cache_dir)
    if entry["origin"] == "model":
        return _model_pool(relation, template, list(entry["questions"]))
    return fallback_pool(relation, template)


def _entry(lm: Any, template: str, seed: int, cache_dir: Any) -> dict[str, Any]:
    from .. import modelcache

    name = f"v{PROMPT_VERSION}/seed{seed}/{template}"
    key = (json.dumps(modelcache.identity_of(lm), sort_keys=True), name)
    if key in _MEMORY:
        return _MEMORY[key]
    got = modelcache.load(lm, "templates", "pools", cache_dir).get(name)
    if _valid_entry(got):
        entry = got
    else:
        text, placeholder, chat = rewrite_prompt(template, lm.tokenizer)
        raw = _generate(lm, text, chat, seed)
        questions = parse_questions(raw, placeholder, template)
        origin = "model" if len(questions) >= MIN_QUESTIONS else "fallback"
        entry = {"questions": questions, "origin": origin, "raw": raw}
        modelcache.store(lm, "templates", "pools", name, entry, cache_dir)
    _MEMORY[key] = entry
    return entry


def _valid_entry(got: Any) -> bool:
    return (isinstance(got, dict) and got.get("origin") in ("model", "fallback")
            and isinstance(got.get("questions"), list)
            and all(isinstance(q, str) and q.count("{}") == 1 for q in got["questions"])
            and (got["origin"] == "fallback" or len(got["questions"]) >= MIN_QUESTIONS))


def _max_positions(lm: Any) -> int | None:
    cfg = lm.model.config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        n = getattr(cfg, name, None)
        if isinstance(n, int) and n > 0:
            return n
    return None


@torch.no_grad()
def _generate(lm: Any, text: str, chat: bool, seed: int) -> str:
    """Greedy continuation of ``text`` (``""`` when the prompt does not fit the model's context)."""
    tok = lm.tokenizer
    ids = tok(text, add_special_tokens=not chat)["input_ids"]
    budget = MAX_NEW_TOKENS
    limit = _max_positions(lm)
    if limit is not None:
        budget = min(budget, limit - len(ids))
    if budget < 8:
        return ""
    eos = {tok.eos_token_id}
    gen_eos = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    eos.update(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
    eos = {int(i) for i in eos if i is not None}
    dev = lm.input_device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x = torch.tensor([ids], device=dev)
        res = lm.model(input_ids=x, use_cache=True)
        new: list[int] = []
        for step in range(budget):
            nxt = int(res.logits[0, -1].argmax())
            if nxt in eos:
                break
            new.append(nxt)
            if step % 8 == 7:
                so_far = tok.decode(new, skip_special_tokens=True).lstrip("\n")
                if so_far.count("\n") >= N_QUESTIONS or (not chat and "\n\n" in so_far):
                    break  # enough lines (small models repeat themselves), or the next plain example starts
            res = lm.model(input_ids=torch.tensor([[nxt]], device=dev), cache=res.past_key_values,
                           use_cache=True)
    return tok.decode(new, skip_special_tokens=True)
