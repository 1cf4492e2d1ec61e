"""Train the built-in toy models on the toy world, deterministically.

Two architectures: ``gpt2`` (``GPT2LMHeadModel``, the Conv1D path) and ``llama``
(``LlamaForCausalLM``, the gated-MLP path).  Training choices, written down:

* **Loss on the answer token only** (cross-entropy of the next-token logits at the prompt's last
  token against the one-token object).  Subject names are random, so a loss on every token would
  spend capacity on predicting names; the toys are fact stores, not language models.
* **Context prefixes**: with probability ``prefix_p`` a training prompt is preceded by one or two
  other facts as full sentences (``"Zevysk works as a baker . "``), so the model finds the subject by
  content rather than by position and tolerates the context-prefixed prompts MEMIT averages keys over.
* **Optional checkpoint selection** (``select_every``): evaluate every N steps and keep, among the
  checkpoints with declarative accuracy >= ``min_accuracy``, the one whose answers flow most through
  the subject's last token (switch rate at block 0 or 1); the curve goes into ``train_report.json``.
* AdamW with linear warm-up and cosine decay, fp32, batches drawn by a seeded ``torch.Generator``,
  deterministic algorithms and a fixed thread count: the same seed gives bit-identical weights.

``python -m geomprobe.toy.train --kind llama --out DIR --seed 0`` trains and writes a checkpoint dir:
``config.json`` + ``model.safetensors`` (fp32) + tokenizer files + ``world.json`` + ``train_report.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from .world import World, build_tokenizer, eval_prompt_sets, toy_world, training_prompts

#: Recommended configurations (DESIGN §3); ``steps``/``lr``/``batch`` are training settings.
CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": dict(n_layer=4, d_model=64, n_head=4, d_ff=256, lr=1e-2, steps=5000, batch=64, prefix_p=0.3,
                 name_style="mixed", select_every=0),
    "llama": dict(n_layer=4, d_model=128, n_head=4, d_ff=336, lr=3e-3, steps=2600, batch=64, prefix_p=0.3,
                  name_style="mixed", select_every=0),
}
MAX_POSITIONS = 128


def make_model(kind: str, vocab_size: int, tokenizer: Any, cfg: dict[str, Any]) -> torch.nn.Module:
    """A freshly initialised toy model (uses the global torch RNG: seed it first)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if kind == "gpt2":
        config = GPT2Config(vocab_size=vocab_size, n_positions=MAX_POSITIONS, n_embd=cfg["d_model"],
                            n_layer=cfg["n_layer"], n_head=cfg["n_head"], n_inner=cfg["d_ff"],
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids)
        return GPT2LMHeadModel(config)
    if kind == "llama":
        config = LlamaConfig(vocab_size=vocab_size, hidden_size=cfg["d_model"], intermediate_size=cfg["d_ff"],
                             num_hidden_layers=cfg["n_layer"], num_attention_heads=cfg["n_head"],
                             num_key_value_heads=cfg["n_head"], max_position_embeddings=MAX_POSITIONS,
                             tie_word_embeddings=False, **ids)
        return LlamaForCausalLM(config)
    raise ValueError(f"unknown toy kind {kind!r}; use gpt2 or llama")


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer blocks of a toy model (``transformer.h`` or ``model.layers``)."""
    if hasattr(model, "transformer"):
        return model.transformer.h
    return model.model.layers


@contextlib.contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """Deterministic algorithms and a fixed CPU thread count, restored on exit."""
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


def _pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad ``seqs``; returns ids (b, t), attention mask (b, t) and last indices (b,)."""
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    last = mask.sum(1) - 1
    return ids, mask, last


@torch.no_grad()
def next_token_ids(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], batch: int = 512) -> torch.Tensor:
    """Top-1 next-token id after each text, shape (n,)."""
    model.eval()
    out = []
    for i in range(0, len(texts), batch):
        seqs = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[i:i + batch]]
        ids, mask, last = _pad(seqs, tokenizer.pad_token_id)
        logits = model(input_ids=ids, attention_mask=mask).logits
        out.append(logits[torch.arange(len(seqs)), last].argmax(-1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(model: torch.nn.Module, tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> float:
    """Share of ``(text, answer)`` pairs whose top-1 next token is the answer."""
    if not pairs:
        return float("nan")
    pred = next_token_ids(model, tokenizer, [t for t, _ in pairs])
    gold = torch.tensor([tokenizer.convert_tokens_to_ids(a) for _, a in pairs])
    return float((pred == gold).float().mean())


def form_accuracies(model: torch.nn.Module, tokenizer: Any, world: World) -> dict[str, float]:
    """Accuracy per evaluation form (see :func:`geomprobe.toy.world.eval_prompt_sets`)."""
    return {form: accuracy(model, tokenizer, pairs) for form, pairs in eval_prompt_sets(world).items()}


def subject_last_index(offsets: Sequence[tuple[int, int]], span: tuple[int, int]) -> int:
    """Index of the last token whose character span overlaps ``span``."""
    hits = [i for i, (s, e) in enumerate(offsets) if e > span[0] and s < span[1] and e > s]
    if not hits:
        raise ValueError(f"no token overlaps the subject span {span}")
    return hits[-1]


def _layer_hook(layer: torch.nn.Module, fn: Callable[[torch.Tensor], torch.Tensor | None]):
    def hook(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        new = fn(hidden)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new
    return layer.register_forward_hook(hook)


@torch.no_grad()
def switch_rate(model: torch.nn.Module, tokenizer: Any, world: World, layer: int, n: int = 300,
                seed: int = 0, form: str = "declarative") -> float:
    """How often the answer flows through the subject's last token.

    For ``n`` pairs (subject a, subject b, relation) with different answers and equally long subject
    names, both answered correctly, the output of block ``layer`` at a's subject-last token is
    replaced by b's state at the same position (same template), and we count how often the top-1
    prediction becomes b's answer.

    Args:
        form: ``declarative`` (canonical prompt) or ``question`` (first train question, question frame).
    """
    from ..data.forms import render

    rng = random.Random(f"switch-{seed}")
    by_len: dict[int, list[str]] = {}
    for s in world.subjects:
        by_len.setdefault(len(tokenizer(s, add_special_tokens=False)["input_ids"]), []).append(s)
    groups = [g for g in by_len.values() if len(g) > 1]
    triples: list[tuple[str, str, str]] = []
    for _ in range(50 * n):
        if len(triples) >= n:
            break
        g = rng.choice(groups)
        a, b = rng.sample(g, 2)
        r = rng.choice(world.relations)
        if world.answer(a, r) != world.answer(b, r):
            triples.append((a, b, r))

    def prompt(s: str, r: str):
        pool = world.templates[r]
        if form == "declarative":
            return render(pool.declarative, s, "declarative")
        q = next(t for f, t in pool.train if f == "question")
        return render(q, s, "question")

    src = [prompt(b, r) for a, b, r in triples]
    dst = [prompt(a, r) for a, b, r in triples]
    gold_a = torch.tensor([tokenizer.convert_tokens_to_ids(world.answer(a, r)) for a, b, r in triples])
    gold_b = torch.tensor([tokenizer.convert_tokens_to_ids(world.answer(b, r)) for a, b, r in triples])

    def encode(rendered):
        enc = [tokenizer(x.text, add_special_tokens=False, return_offsets_mapping=True) for x in rendered]
        pos = torch.tensor([subject_last_index(e["offset_mapping"], x.subject_span) for e, x in zip(enc, rendered)])
        ids, mask, last = _pad([e["input_ids"] for e in enc], tokenizer.pad_token_id)
        return ids, mask, last, pos

    model.eval()
    block = decoder_layers(model)[layer]
    s_ids, s_mask, s_last, s_pos = encode(src)
    d_ids, d_mask, d_last, d_pos = encode(dst)
    rows = torch.arange(len(triples))
    saved: dict[str, torch.Tensor] = {}

    def capture(h: torch.Tensor) -> None:
        saved["h"] = h[rows, s_pos].clone()

    def patch(h: torch.Tensor) -> torch.Tensor:
        h = h.clone()
        h[rows, d_pos] = saved["h"]
        return h

    handle = _layer_hook(block, capture)
    try:
        src_pred = model(input_ids=s_ids, attention_mask=s_mask).logits[rows, s_last].argmax(-1)
    finally:
        handle.remove()
    clean = model(input_ids=d_ids, attention_mask=d_mask).logits[rows, d_last].argmax(-1)
    handle = _layer_hook(block, patch)
    try:
        patched = model(input_ids=d_ids, attention_mask=d_mask).logits[rows, d_last].argmax(-1)
    finally:
        handle.remove()
    ok = (clean == gold_a) & (src_pred == gold_b)
    if not bool(ok.any()):
        return 0.0
    return float((patched[ok] == gold_b[ok]).float().mean())


def _encode_training(world: World, tokenizer: Any) -> tuple[list[list[int]], torch.Tensor, list[list[int]]]:
    rows = training_prompts(world)
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t, _, _, _ in rows]
    answers = torch.tensor([tokenizer.convert_tokens_to_ids(a) for _, a, _, _ in rows])
    if bool((answers == tokenizer.unk_token_id).any()):
        raise ValueError("an answer object is not a single known token")
    sentences = [tokenizer(world.sentence(f), add_special_tokens=False)["input_ids"] for f in world.facts]
    return prompts, answers, sentences


def train_model(kind: str, world: World, tokenizer: Any, seed: int = 0, steps: int | None = None,
                threads: int = 1, log: Callable[[str], None] | None = print,
                on_eval: Callable[[int, torch.nn.Module], None] | None = None, eval_every: int = 0,
                **overrides: Any) -> tuple[torch.nn.Module, dict]:
    """Train a toy model in memory; returns ``(model, info)``.

    ``on_eval(step, model)`` is called every ``eval_every`` steps (and after the last step) with the
    model in eval mode; it must not touch the model's weights.  It consumes no training randomness,
    so the weights stay a pure function of the seed.
    """
    cfg = {**CONFIGS[kind], **overrides}
    if steps is not None:
        cfg["steps"] = steps
    prompts, answers, sentences = _encode_training(world, tokenizer)
    with deterministic(threads):
        torch.manual_seed(seed)
        model = make_model(kind, len(tokenizer), tokenizer, cfg)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.01, betas=(0.9, 0.98))
        warm = max(1, cfg["steps"] // 20)

        def lr_at(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            p = (step - warm) / max(1, cfg["steps"] - warm)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        order = torch.randperm(len(prompts), generator=gen)
        cursor, t0, loss_ema = 0, time.perf_counter(), None
        model.train()
        for step in range(cfg["steps"]):
            if cursor + cfg["batch"] > len(order):
                order, cursor = torch.randperm(len(prompts), generator=gen), 0
            idx = order[cursor:cursor + cfg["batch"]]
            cursor += cfg["batch"]
            use_prefix = torch.rand(len(idx), generator=gen) < cfg["prefix_p"]
            n_pre = torch.randint(1, 3, (len(idx),), generator=gen)
            pre_idx = torch.randint(0, len(sentences), (len(idx), 2), generator=gen)
            seqs = []
            for j, i in enumerate(idx.tolist()):
                seq: list[int] = []
                if use_prefix[j]:
                    for k in range(int(n_pre[j])):
                        seq += sentences[int(pre_idx[j, k])]
                seqs.append(seq + prompts[i])
            ids, mask, last = _pad(seqs, tokenizer.pad_token_id)
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss = torch.nn.functional.cross_entropy(logits[torch.arange(len(idx)), last], answers[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            lv = loss.item()
            loss_ema = lv if loss_ema is None else 0.95 * loss_ema + 0.05 * lv
            if log and (step + 1) % 200 == 0:
                log(f"[{kind}] step {step + 1}/{cfg['steps']} loss {loss_ema:.4f} ({time.perf_counter() - t0:.0f}s)")
            if on_eval is not None and eval_every > 0 and ((step + 1) % eval_every == 0 or step + 1 == cfg["steps"]):
                model.eval()
                on_eval(step + 1, model)
                model.train()
        wall = time.perf_counter() - t0
        model.eval()
    return model, {"config": cfg, "wall_time_s": round(wall, 1), "final_loss": loss_ema,
                   "threads": threads, "n_train_prompts": len(prompts)}


def evaluate_toy(model: torch.nn.Module, tokenizer: Any, world: World) -> dict[str, Any]:
    """Per-form accuracies and switch rates (declarative and question form, every block)."""
    n_layers = len(decoder_layers(model))
    return {
        "accuracy": form_accuracies(model, tokenizer, world),
        "switch_rate": {form: {str(l): round(switch_rate(model, tokenizer, world, l, form=form), 3)
                               for l in range(n_layers)} for form in ("declarative", "question")},
    }


def _selection_probe(tokenizer: Any, world: World, curve: list[dict[str, Any]], min_accuracy: float,
                     best: dict[str, Any], log: Callable[[str], None] | None = None
                     ) -> Callable[[int, torch.nn.Module], None]:
    """An ``on_eval`` callback that logs a curve point and keeps the best eligible weights in ``best``.

    Eligible: declarative accuracy >= ``min_accuracy``.  Best: highest switch rate at block 0 or 1
    (declarative form, the larger of the two); ties go to the later step.
    """
    pairs = eval_prompt_sets(world)

    def probe(step: int, model: torch.nn.Module) -> None:
        decl = accuracy(model, tokenizer, pairs["declarative"])
        held = accuracy(model, tokenizer, pairs["heldout_question"])
        blocks = range(min(2, len(decoder_layers(model))))
        rates = {str(l): round(switch_rate(model, tokenizer, world, l), 3) for l in blocks}
        score = max(rates.values())
        curve.append({"step": step, "declarative": round(decl, 4), "heldout_question": round(held, 4),
                      "switch_rate": rates})
        if log:
            log(f"  eval step {step}: declarative {decl:.3f} heldout_question {held:.3f} switch {rates}")
        if decl >= min_accuracy and score >= best.get("score", -1.0):
            best.update(score=score, step=step, state={k: v.detach().clone() for k, v in model.state_dict().items()})

    return probe


def train_toy(kind: str, out_dir: str | Path, seed: int = 0, steps: int | None = None,
              log: Callable[[str], None] | None = print, threads: int = 1, world_seed: int = 0,
              name_style: str | None = None, select_every: int | None = None, min_accuracy: float = 0.95,
              **overrides: Any) -> dict[str, Any]:
    """Train a toy model from scratch and write its checkpoint dir.

    Args:
        kind: ``gpt2`` (Conv1D MLP) or ``llama`` (gated MLP).
        out_dir: checkpoint directory (created).
        seed: seed of initialisation and batches.
        steps: training steps (default: :data:`CONFIGS`).
        log: progress printer (``None`` for silence).
        threads: CPU threads during training (part of the determinism contract).
        world_seed: seed of the toy world (the shipped checkpoints use 0).
        name_style: subject-name style of the world (see :func:`geomprobe.toy.world.toy_world`;
            default: the kind's :data:`CONFIGS` entry, i.e. the shipped checkpoint's world).
        select_every: (default: the kind's :data:`CONFIGS` entry) if > 0, evaluate every ``select_every`` steps and ship the checkpoint with the
            highest subject-token switch rate (block 0 or 1) among those with declarative accuracy
            >= ``min_accuracy`` (the last step if none qualifies).
        min_accuracy: declarative-accuracy floor of checkpoint selection.
        overrides: other :data:`CONFIGS` keys (``lr``, ``batch``, ``d_model``, ``prefix_p``, ...).

    Returns:
        The training report (also written to ``train_report.json``).
    """
    if kind not in CONFIGS:
        raise ValueError(f"unknown toy kind {kind!r}; use gpt2 or llama")
    name_style = name_style if name_style is not None else CONFIGS[kind]["name_style"]
    select_every = select_every if select_every is not None else CONFIGS[kind]["select_every"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = toy_world(world_seed, name_style=name_style)
    tokenizer = build_tokenizer(world)
    curve: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    probe = _selection_probe(tokenizer, world, curve, min_accuracy, best, log) if select_every > 0 else None
    model, info = train_model(kind, world, tokenizer, seed=seed, steps=steps, threads=threads, log=log,
                              on_eval=probe, eval_every=select_every, **overrides)
    selection: dict[str, Any] = {}
    if select_every > 0:
        chosen = best.get("step", info["config"]["steps"])
        if "state" in best:
            model.load_state_dict(best["state"])
        selection = {"selection": {
            "rule": (f"evaluate every {select_every} steps; among checkpoints with declarative accuracy >= "
                     f"{min_accuracy}, keep the one with the highest declarative switch rate at block 0 or 1 "
                     "(the larger of the two; ties: later step); the last step if none qualifies"),
            "chosen_step": chosen, "curve": curve}}
    report = {"kind": kind, "seed": seed, "world_seed": world_seed, "name_style": name_style,
              "steps": info["config"]["steps"], **info, **selection, **evaluate_toy(model, tokenizer, world),
              "loss": "cross-entropy on the answer token only",
              "n_parameters": sum(p.numel() for p in model.parameters())}
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "world.json").write_text(json.dumps(world.to_dict(), indent=1))
    (out / "train_report.json").write_text(json.dumps(report, indent=1))
    if log:
        log(json.dumps({"accuracy": report["accuracy"], "switch_rate": report["switch_rate"],
                        "wall_time_s": report["wall_time_s"]}, indent=1))
    return report


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m geomprobe.toy.train", description="Train a built-in toy model.")
    p.add_argument("--kind", choices=sorted(CONFIGS), required=True)
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lr", type=float, default=None)
    a = p.parse_args(argv)
    extra = {"lr": a.lr} if a.lr is not None else {}
    train_toy(a.kind, a.out, seed=a.seed, steps=a.steps, threads=a.threads,
              log=lambda m: print(m, flush=True), **extra)


if __name__ == "__main__":
    main()
