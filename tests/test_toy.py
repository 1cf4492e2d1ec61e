"""Toy worlds: the synthetic world, its tokenizer, the shipped checkpoints and deterministic training."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch

import geomprobe
from geomprobe.data.forms import eval_prompts, render, train_prompts
from geomprobe.data.requests import EditRequest, group_by_subject
from geomprobe.toy.train import (
    accuracy, decoder_layers, next_token_ids, subject_last_index, switch_rate, train_model,
)
from geomprobe.toy.world import (
    World, build_tokenizer, eval_prompt_sets, toy_relation_templates, toy_requests, toy_world, training_prompts, words,
)

BUILTIN = Path(geomprobe.__file__).parent / "models" / "builtin"
KINDS = ("gpt2", "llama")
# The world each shipped checkpoint was trained on (both: the default "mixed" one- and two-word names).
NAME_STYLE = {"gpt2": "mixed", "llama": "mixed"}


def world_of(kind: str) -> World:
    return toy_world(0, name_style=NAME_STYLE[kind])
# Floors measured on the shipped checkpoints minus a margin (see train_report.json).
# shipped: gpt2 0.955 / 0.958, llama 0.949 / 0.950 (held-out question / instruction, all facts)
HELDOUT_FLOOR = {"gpt2": 0.85, "llama": 0.85}
# toy-llama's declarative switch rate at block 0 or 1 (the larger), measured on the shipped checkpoint
# (0.067 at block 0 over the first 120 drawn pairs, 0.07 over 300) minus a margin.
SWITCH_FLOOR = 0.05


@lru_cache(maxsize=None)
def load(kind: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = BUILTIN / f"toy-{kind}"
    model = AutoModelForCausalLM.from_pretrained(d, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
    return model, tok


def test_world_is_deterministic_under_a_seed():
    a, b = toy_world.__wrapped__(0), toy_world.__wrapped__(0)
    assert a.to_dict() == b.to_dict()
    assert toy_world.__wrapped__(1).to_dict() != a.to_dict()
    assert a.to_dict() == toy_world(0, name_style="mixed").to_dict()  # the default style
    assert len(a.subjects) == 200 and len(set(a.subjects)) == 200
    assert len(a.facts) == 800
    assert World.from_dict(json.loads(json.dumps(a.to_dict()))).to_dict() == a.to_dict()
    with pytest.raises(ValueError):
        toy_world(0, name_style="three-word")


def test_shared_two_word_names_need_both_words_in_order():
    world = toy_world(0, name_style="shared-two-word")
    assert world.to_dict() == toy_world.__wrapped__(0, name_style="shared-two-word").to_dict()
    assert len(world.subjects) == 200 and len(set(world.subjects)) == 200 and len(world.facts) == 800
    names = set(world.subjects)
    assert all(len(s.split()) == 2 for s in world.subjects)
    counts: dict[str, int] = {}
    for s in world.subjects:
        for w in s.split():
            counts[w] = counts.get(w, 0) + 1
    assert min(counts.values()) >= 2  # no single word identifies a subject
    assert all(" ".join(s.split()[::-1]) in names for s in world.subjects)  # nor does the set of words
    tok = build_tokenizer(world)
    assert {len(tok(s, add_special_tokens=False)["input_ids"]) for s in world.subjects} == {2}


def test_mixed_world_keeps_one_word_per_subject():
    m = toy_world(0, name_style="mixed")
    assert len(m.subjects) == 200 and len(set(m.subjects)) == 200
    assert any(" " in s for s in m.subjects) and any(" " not in s for s in m.subjects)
    ws = [w for s in m.subjects for w in s.split()]
    assert len(ws) == len(set(ws))  # every subject word belongs to one subject only


def test_templates_pools_and_vocabulary():
    pools = toy_relation_templates()
    assert 4 <= len(pools) <= 5
    world = toy_world(0)
    trained = {w for text, ans, _, _ in training_prompts(world) for w in words(text) + [ans]}
    for rel, pool in pools.items():
        assert len(pool.train) >= 10 and len(pool.eval_questions) >= 3
        assert not {t for _, t in pool.train} & set(pool.eval_questions)
        assert {f for f, _ in pool.train} == {"declarative", "question", "instruction"}
        for q in pool.eval_questions:  # held out, but no unseen words
            assert set(words(q.replace("{}", ""))) <= trained, q
    # training text is exactly what forms.render produces
    texts = {t for t, _, _, _ in training_prompts(world)}
    s = world.subjects[0]
    for r in train_prompts("home_city", s, templates=pools):
        if r.form != "declarative":
            assert r.text in texts
    assert render(pools["occupation"].train[5][1], s, "instruction").text in texts


def test_tokenizer_word_level_offsets_and_single_token_answers():
    world = toy_world(0)
    tok = build_tokenizer(world)
    text = render(world.templates["home_city"].eval_questions[0], world.subjects[3], "instruction").text
    enc = tok(text, return_offsets_mapping=True)
    toks = enc.tokens()
    assert "\n" in toks and "?" in toks and ":" in toks and "." in toks
    assert tok.unk_token_id not in enc["input_ids"]
    for (s, e), t in zip(enc["offset_mapping"], toks):
        assert text[s:e] == t
    for objs in world.objects.values():
        for o in objs:
            assert len(tok(" " + o, add_special_tokens=False)["input_ids"]) == 1
    assert None not in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id)


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_dir_small_and_tokenizer_round_trips(kind):
    from transformers import PreTrainedTokenizerFast

    d = BUILTIN / f"toy-{kind}"
    size = sum(f.stat().st_size for f in d.iterdir())
    assert size < 5 * 2**20
    assert (d / "model.safetensors").is_file() and (d / "world.json").is_file()
    world = World.from_dict(json.loads((d / "world.json").read_text()))
    assert world.to_dict() == world_of(kind).to_dict()  # shipped world == code's world
    _, tok = load(kind)
    fresh = build_tokenizer(world)
    assert type(tok) is type(fresh) is PreTrainedTokenizerFast
    assert tok.get_vocab() == fresh.get_vocab()
    texts = [t for t, _ in eval_prompt_sets(world, list(world.facts[:40]))["heldout_instruction"]]
    assert [tok(t)["input_ids"] for t in texts] == [fresh(t)["input_ids"] for t in texts]


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_knows_its_facts(kind):
    model, tok = load(kind)
    world = world_of(kind)
    sets = eval_prompt_sets(world)
    decl = accuracy(model, tok, sets["declarative"])
    assert decl >= 0.95
    sample = sets
    for form in ("heldout_question", "heldout_instruction"):
        acc = accuracy(model, tok, sample[form])
        print(f"{kind} {form} accuracy {acc:.3f}")
        assert acc > HELDOUT_FLOOR[kind], form
    assert accuracy(model, tok, sample["train_question"]) >= 0.9


def test_architectures():
    from transformers.pytorch_utils import Conv1D

    gpt2, _ = load("gpt2")
    assert gpt2.config.model_type == "gpt2"
    for block in decoder_layers(gpt2):
        assert isinstance(block.mlp.c_proj, Conv1D) and isinstance(block.mlp.c_fc, Conv1D)
    llama, _ = load("llama")
    assert llama.config.model_type == "llama"
    for block in decoder_layers(llama):
        mlp = block.mlp
        assert all(isinstance(getattr(mlp, n), torch.nn.Linear) for n in ("gate_proj", "up_proj", "down_proj"))
        assert mlp.down_proj.in_features == llama.config.intermediate_size
    for m in (gpt2, llama):
        assert all(p.dtype == torch.float32 for p in m.parameters())


def _blocks(model):
    return model.transformer.h if model.config.model_type == "gpt2" else model.model.layers


def _spy_inputs(model):
    """Record the (input_ids, attention_mask) of every forward of ``model``."""
    calls = []

    def hook(module, args, kwargs):
        calls.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone()))

    return calls, model.register_forward_pre_hook(hook, with_kwargs=True)


def _find(seq, sub):
    """End index (inclusive) of the only occurrence of ``sub`` in ``seq``, or None."""
    hits = [i + len(sub) - 1 for i in range(len(seq) - len(sub) + 1) if seq[i:i + len(sub)] == sub]
    return hits[0] if len(hits) == 1 else None


def _by_hand(model, tok, world, rows_b, rows_a, layer):
    """Switch rate recomputed without padding (pairs batched only with pairs of the same prompt length): B's
    block-``layer`` output at B's subject token is written into A's run at A's subject token; a switch is A's
    prompt then answering B's object.  Only pairs whose clean runs answer their own facts count.
    Returns (rate, pairs counted)."""
    subj_ids = {s: tok(s, add_special_tokens=False)["input_ids"] for s in world.subjects}
    decl = {r: world.templates[r].declarative for r in world.relations}

    def parse(ids):  # which subject and relation this prompt is about, and the subject's last token
        found = [(s, _find(ids, t)) for s, t in subj_ids.items() if _find(ids, t) is not None]
        assert len(found) == 1, found
        s, pos = found[0]
        rel = [r for r, t in decl.items()
               if tok(render(t, s, "declarative").text, add_special_tokens=False)["input_ids"] == ids]
        assert len(rel) == 1
        return s, rel[0], pos

    pairs = []
    for b_ids, a_ids in zip(rows_b, rows_a):
        (sb, rb, pb), (sa, ra, pa) = parse(b_ids), parse(a_ids)
        assert ra == rb and sa != sb and world.answer(sa, ra) != world.answer(sb, rb)
        assert len(a_ids) == len(b_ids)
        pairs.append((b_ids, a_ids, pb, pa, tok.convert_tokens_to_ids(world.answer(sb, rb)),
                      tok.convert_tokens_to_ids(world.answer(sa, ra))))
    block = _blocks(model)[layer]
    state = {}

    def capture(m, a, out):
        h = out[0] if isinstance(out, tuple) else out
        state["h"] = h[torch.arange(len(h)), state["pos"]].clone()

    def patch(m, a, out):
        h = (out[0] if isinstance(out, tuple) else out).clone()
        h[torch.arange(len(h)), state["pos"]] = state["h"]
        return (h, *out[1:]) if isinstance(out, tuple) else h

    def top1(ids, hook=None):
        handle = block.register_forward_hook(hook) if hook else None
        try:
            return model(input_ids=ids).logits[:, -1].argmax(-1)
        finally:
            if handle:
                handle.remove()

    counted = switched = 0
    with torch.no_grad():
        for n in sorted({len(p[0]) for p in pairs}):
            group = [p for p in pairs if len(p[0]) == n]
            b_ids, a_ids = torch.tensor([p[0] for p in group]), torch.tensor([p[1] for p in group])
            gold_b, gold_a = torch.tensor([p[4] for p in group]), torch.tensor([p[5] for p in group])
            state["pos"] = torch.tensor([p[2] for p in group])
            ok = (top1(b_ids, capture) == gold_b) & (top1(a_ids) == gold_a)
            state["pos"] = torch.tensor([p[3] for p in group])
            counted += int(ok.sum())
            switched += int(((top1(a_ids, patch) == gold_b) & ok).sum())
    return switched / max(counted, 1), counted


def test_switch_rate_matches_a_by_hand_patching():
    """switch_rate agrees with the same experiment done by hand, pair by pair, on the very prompt pairs it drew
    (read off the model's inputs): the patch lands at the subject token, at the right block, and the rate
    counts switches among correctly answered pairs.  toy-llama routes some answers through the subject token
    (SWITCH_FLOOR), so the comparison is not 0 == 0."""
    rates = {}
    for kind in KINDS:
        model, tok = load(kind)
        world = world_of(kind)
        for layer in (0, 1):
            calls, handle = _spy_inputs(model)
            try:
                rate = switch_rate(model, tok, world, layer=layer, n=120, form="declarative")
            finally:
                handle.remove()
            assert len(calls) == 3  # B's run, A's clean run, A's patched run
            (b_ids, b_mask), (a_ids, a_mask), (a2_ids, _) = calls
            assert torch.equal(a_ids, a2_ids) and len(b_ids) == len(a_ids) == 120
            rows_b = [row[m.bool()].tolist() for row, m in zip(b_ids, b_mask)]
            rows_a = [row[m.bool()].tolist() for row, m in zip(a_ids, a_mask)]
            hand, counted = _by_hand(model, tok, world, rows_b, rows_a, layer)
            print(f"{kind} block {layer}: switch_rate {rate:.3f}, by hand {hand:.3f} over {counted} pairs")
            assert counted >= 60
            # batched vs one-at-a-time forwards differ by float rounding: allow one pair's argmax to differ
            assert abs(rate - hand) <= 1 / counted + 1e-9, (kind, layer, rate, hand)
            rates[kind, layer] = hand
    assert max(rates["llama", 0], rates["llama", 1]) >= SWITCH_FLOOR


@pytest.mark.parametrize("same_subject", [True, False])
def test_toy_requests_are_valid_and_match_the_models(same_subject):
    world = toy_world(0)
    reqs = toy_requests(n=8, seed=0, same_subject=same_subject)
    assert [r.to_dict() for r in reqs] == [r.to_dict() for r in geomprobe.load_requests("toy", n=8, seed=0,
                                                                                         same_subject=same_subject)]
    assert len(reqs) == 8 and all(isinstance(r, EditRequest) for r in reqs)
    assert [r.to_dict() for r in reqs] == [r.to_dict() for r in toy_requests(n=8, seed=0, same_subject=same_subject)]
    groups = group_by_subject(reqs)
    if same_subject:
        assert len(groups) == 2 and all(len(g) == 4 for g in groups.values())
    else:
        assert len(groups) == 8
    templates = toy_relation_templates()
    for r in reqs:
        assert r.target_true == world.answer(r.subject, r.relation)
        assert r.target_new in world.objects[r.relation] and r.target_new != r.target_true
        assert r.paraphrases and all(r.subject in p for p in r.paraphrases)
        assert r.neighborhood and all(r.subject not in p for p in r.neighborhood)
        assert len(eval_prompts(r, "question", templates=templates)) == 3
        assert len(eval_prompts(r, "instruction", templates=templates)) == 3
    for kind in KINDS:
        model, tok = load(kind)
        kreqs = toy_requests(n=8, seed=0, same_subject=same_subject, world=world_of(kind))
        pred = next_token_ids(model, tok, [r.text for r in kreqs])
        assert tok.convert_ids_to_tokens(pred.tolist()) == [r.target_true for r in kreqs], kind


def test_subject_last_index_uses_offsets():
    world = toy_world(0)
    tok = build_tokenizer(world)
    s = next(x for x in world.subjects if " " in x)
    r = render(world.templates["employer"].declarative, s, "declarative")
    enc = tok(r.text, return_offsets_mapping=True)
    i = subject_last_index(enc["offset_mapping"], r.subject_span)
    assert enc.tokens()[i] == s.split()[-1]


def test_retraining_is_deterministic():
    world = toy_world(0)
    tok = build_tokenizer(world)
    kw = dict(steps=3, log=None, d_model=16, n_head=2, n_layer=1, d_ff=32, batch=8)
    a, _ = train_model("llama", world, tok, seed=0, **kw)
    b, _ = train_model("llama", world, tok, seed=0, **kw)
    c, _ = train_model("llama", world, tok, seed=1, **kw)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    g1, _ = train_model("gpt2", world, tok, seed=0, **kw)
    g2, _ = train_model("gpt2", world, tok, seed=0, **kw)
    assert all(torch.equal(x, y) for x, y in zip(g1.state_dict().values(), g2.state_dict().values()))


def test_checkpoint_selection_keeps_the_best_eligible_step(tmp_path):
    from geomprobe.toy.train import train_toy

    kw = dict(steps=4, log=None, d_model=16, n_head=2, n_layer=1, d_ff=32, batch=8, prefix_p=0.0)
    report = train_toy("llama", tmp_path / "a", select_every=2, min_accuracy=0.0, **kw)
    sel = report["selection"]
    assert [c["step"] for c in sel["curve"]] == [2, 4]
    best = max(max(c["switch_rate"].values()) for c in sel["curve"])
    chosen = next(c for c in sel["curve"] if c["step"] == sel["chosen_step"])
    assert max(chosen["switch_rate"].values()) == best
    assert chosen["declarative"] == round(report["accuracy"]["declarative"], 4)  # the shipped weights are the chosen ones
    none = train_toy("llama", tmp_path / "b", select_every=2, min_accuracy=1.1, **kw)  # nothing qualifies
    assert none["selection"]["chosen_step"] == 4
    assert json.loads((tmp_path / "a" / "train_report.json").read_text())["selection"]["chosen_step"] == sel["chosen_step"]
