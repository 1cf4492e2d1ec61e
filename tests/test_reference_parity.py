"""Reference parity: memit, alphaedit and rome against an independent re-implementation of the reference
algorithms (MEMIT's ``compute_z`` / ``compute_ks`` / ``execute_memit``, AlphaEdit's null-space update, ROME's
``compute_u`` / ``compute_v``), on the toy GPT-2 and the toy Llama.

Only the *inputs* come from geomprobe: the loaded model, its tokenizer, the context templates
(:func:`geomprobe.editors.contexts.context_templates`), the key covariance C (:func:`geomprobe.stats.key_covariance`)
and the resolved editor settings.  Everything that is checked — subject positions, teacher-forced target tokens,
the δ hook, the Adam loop with KL / weight decay / clamp, the key reads and their ½/½ weighting, the layer
spreading and the three update rules — is written below with plain torch and HF forward hooks (no geomprobe
hooks, value optimisation, row building or linalg solvers).  Each prompt runs unpadded as a batch of one, so the
comparison also covers geomprobe's left padding, micro-batching and resume-from-block-L+1 shortcuts.

``value_ref_rms=0`` (plain Adam on δ, as the reference) and ``value_early_stop=0`` (always ``steps`` iterations)
make the two loops comparable step for step.
"""

from __future__ import annotations

import os

import pytest
import torch

import geomprobe as gp
from geomprobe.editors.contexts import MEMIT_LENGTHS, ROME_LENGTHS, context_templates
from geomprobe.stats import key_covariance

MODELS = ("toy-gpt2", "toy-llama")
STEPS = 4          # value_steps: 3 Adam updates, the 4th iteration only measures the loss
N_TOKENS = 1500    # covariance statistics (an input; small keeps the file fast)
RTOL = 1e-4        # max |ours − geomprobe| ≤ RTOL · max |ours|, per quantity
COMMON = dict(n_tokens=N_TOKENS, value_steps=STEPS, value_ref_rms=0.0, value_early_stop=0.0)
CONTEXT_LENGTHS = {"none": (), "memit": MEMIT_LENGTHS, "rome": ROME_LENGTHS}

# HF module names of a decoder block and of the MLP down-projection, per config.model_type
MODULES = {"gpt2": ("transformer.h.{}", "transformer.h.{}.mlp.c_proj"),
           "llama": ("model.layers.{}", "model.layers.{}.mlp.down_proj")}

ERRORS: dict[str, float] = {}  # quantity -> largest relative difference measured (printed at the end, pytest -s)


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    old, threads = os.environ.get("GEOMPROBE_CACHE"), torch.get_num_threads()
    os.environ["GEOMPROBE_CACHE"] = str(tmp_path_factory.mktemp("parity_cache"))
    torch.set_num_threads(1)  # toy-sized ops: one thread is several times faster on a shared 2-core machine
    yield
    torch.set_num_threads(threads)
    if old is None:
        os.environ.pop("GEOMPROBE_CACHE", None)
    else:
        os.environ["GEOMPROBE_CACHE"] = old
    print("\nreference parity, max relative difference per quantity:",
          ", ".join(f"{k} {v:.2e}" for k, v in sorted(ERRORS.items())))


@pytest.fixture(scope="module")
def models():
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = gp.load_model(name, device="cpu")
        return cache[name]

    return get


@pytest.fixture(scope="module")
def requests_():
    reqs = gp.load_requests("toy")
    first = reqs[0]
    other = next(r for r in reqs if r.subject != first.subject)
    return first, other


def _close(what: str, got: torch.Tensor, want: torch.Tensor, rtol: float = RTOL) -> None:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    assert got.shape == want.shape, (what, tuple(got.shape), tuple(want.shape))
    err = float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))
    key = what.split("[")[0]
    ERRORS[key] = max(ERRORS.get(key, 0.0), err)
    assert err <= rtol, f"{what}: max |geomprobe − reference| = {err:.3g} × max |reference| (tolerance {rtol:g})"


class Reference:
    """The reference algorithms on one model, with HF forward hooks; every prompt runs alone (no padding)."""

    def __init__(self, lm):
        self.lm, self.model, self.tok = lm, lm.model, lm.tokenizer
        self.block_t, self.rewrite_t = MODULES[self.model.config.model_type]
        self.d = self.model.config.hidden_size

    def block(self, l: int):
        return self.model.get_submodule(self.block_t.format(l))

    def rewrite(self, l: int):
        return self.model.get_submodule(self.rewrite_t.format(l))

    # ---- prompts -------------------------------------------------------------------------------
    @staticmethod
    def prompt(ctx: str, req) -> tuple[str, int]:
        """The context template with the request's prompt in it and the subject filled in; the character
        index just past the subject."""
        template = ctx.replace("{}", req.prompt)
        i = template.index("{}")
        return template[:i] + req.subject + template[i + 2:], i + len(req.subject)

    def encode(self, text: str, subject_end: int) -> tuple[list[int], int, list[tuple[int, int]]]:
        """Token ids, the index of the token holding the subject's last character, the offsets."""
        enc = self.tok(text, return_offsets_mapping=True)
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        pos = [t for t, (s, e) in enumerate(offsets) if s <= subject_end - 1 < e]
        assert len(pos) == 1, (text, offsets)
        return list(enc["input_ids"]), pos[0], offsets

    # ---- forwards ------------------------------------------------------------------------------
    def logits(self, ids: list[int], module=None, pos: int | None = None, delta: torch.Tensor | None = None):
        """(seq, vocab) logits; ``delta`` is added to ``module``'s output at ``pos``."""
        handle = None
        if delta is not None:
            def add(mod, inp, out):
                hs = out[0] if isinstance(out, tuple) else out
                hs = hs.clone()
                hs[0, pos] = hs[0, pos] + delta.to(hs.dtype)
                return (hs, *out[1:]) if isinstance(out, tuple) else hs
            handle = module.register_forward_hook(add)
        try:
            return self.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
        finally:
            if handle is not None:
                handle.remove()

    @torch.no_grad()
    def read(self, text: str, subject_end: int, layers) -> dict:
        """At the subject's last token: the down-projection input (key) and output (mlp) and the block
        output (resid) at each of ``layers``."""
        ids, pos, _ = self.encode(text, subject_end)
        got, handles = {}, []
        for l in layers:
            def on_rewrite(mod, inp, out, l=l):
                got["key", l] = inp[0][0, pos].float().clone()
                got["mlp", l] = out[0, pos].float().clone()

            def on_block(mod, inp, out, l=l):
                got["resid", l] = (out[0] if isinstance(out, tuple) else out)[0, pos].float().clone()
            handles += [self.rewrite(l).register_forward_hook(on_rewrite), self.block(l).register_forward_hook(on_block)]
        try:
            self.model(input_ids=torch.tensor([ids]), use_cache=False)
        finally:
            for h in handles:
                h.remove()
        return got

    # ---- compute_z / compute_v -----------------------------------------------------------------
    def value(self, req, ctxs, layer: int, vc, at: str = "resid"):
        """δ at ``layer`` (added to the block output, or to the MLP output for ROME), Adam on δ itself.

        Returns (h, δ, per-iteration mean NLL)."""
        rows = []
        for ctx in ctxs:
            text, end = self.prompt(ctx, req)
            full = text + " " + req.target_new.strip()
            ids, pos, offsets = self.encode(full, end)
            targets = [t for t, (s, e) in enumerate(offsets) if e > len(text)]
            assert targets and targets[-1] == len(ids) - 1
            rows.append((ids, pos, targets))
        kl_ids, kl_pos, _ = self.encode(f"{req.subject} is a", len(req.subject))
        bare = self.read(*self.prompt("{}", req), [layer])
        h = bare["resid", layer]
        n_norm = (h if vc.norm == "resid" else bare["mlp", layer]).norm()
        assert (vc.norm == "mlp") == (at == "mlp")
        module = self.block(layer) if at == "resid" else self.rewrite(layer)
        with torch.no_grad():
            old = torch.log_softmax(self.logits(kl_ids)[kl_pos], -1)

        delta = torch.zeros(self.d, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=vc.lr)
        losses = []
        for it in range(vc.steps):
            opt.zero_grad()
            nlls = []
            for ids, pos, targets in rows:
                logp = torch.log_softmax(self.logits(ids, module, pos, delta), -1)
                nlls.append(-torch.stack([logp[t - 1, ids[t]] for t in targets]).mean())
            nll = torch.stack(nlls).mean()
            new = torch.log_softmax(self.logits(kl_ids, module, kl_pos, delta)[kl_pos], -1)
            kl = (new.exp() * (new - old)).sum()  # KL(P_new ‖ P_old)
            loss = nll + vc.kl * kl + vc.wd * delta.norm() / n_norm ** 2
            losses.append(float(nll.detach()))
            if all(float(x.detach()) < vc.early_stop for x in nlls) or it == vc.steps - 1:
                break
            loss.backward()
            opt.step()
            with torch.no_grad():
                cap = vc.clamp * n_norm
                if delta.norm() > cap:
                    delta.mul_(cap / delta.norm())
        return h, delta.detach(), losses

    # ---- compute_ks ----------------------------------------------------------------------------
    def key(self, req, ctxs, layer: int, weighting: str = "memit") -> torch.Tensor:
        ks = [self.read(*self.prompt(c, req), [layer])["key", layer] for c in ctxs]
        assert ctxs[0] == "{}"
        if weighting == "flat":
            return torch.stack(ks).mean(0)
        return 0.5 * ks[0] + 0.5 * torch.stack(ks[1:]).mean(0) if len(ks) > 1 else ks[0]

    # ---- weights -------------------------------------------------------------------------------
    @torch.no_grad()
    def add(self, l: int, dW: torch.Tensor) -> None:
        """W_l += ΔW (ΔW out×in; a GPT-2 Conv1D stores W as in×out)."""
        mod = self.rewrite(l)
        conv1d = type(mod).__name__ == "Conv1D"
        assert mod.weight.shape == (dW.T.shape if conv1d else dW.shape)
        mod.weight.add_((dW.T if conv1d else dW).to(mod.weight.dtype))

    def spread(self, reqs, ctxs, layers, Z: torch.Tensor, rule) -> dict:
        """MEMIT's layer loop: keys and H_cur on the current weights, R = (Z − H_cur)/(#layers left)."""
        L = layers[-1]
        saved = {l: self.rewrite(l).weight.detach().clone() for l in layers}
        out = {}
        try:
            for i, l in enumerate(layers):
                K = torch.stack([self.key(r, ctxs, l) for r in reqs], 1)
                H = torch.stack([self.read(*self.prompt("{}", r), [L])["resid", L] for r in reqs], 1)
                R = (Z - H) / (len(layers) - i)
                dW = rule(l, K.double(), R.double()).float()
                self.add(l, dW)
                out[l] = (K, R, dW)
        finally:
            with torch.no_grad():
                for l, w in saved.items():
                    self.rewrite(l).weight.copy_(w)
        return out


def _memit_rule(C: dict, lam: float):
    def rule(l, K, R):
        A = lam * C[l].double() + K @ K.T
        adj_k = torch.linalg.solve(A, K)  # MEMIT: upd = resid @ solve(λC + KKᵀ, K)ᵀ
        return R @ adj_k.T
    return rule


def _alphaedit_rule(C: dict, threshold: float, l2: float):
    def rule(l, K, R):
        Cl = C[l].double()
        U, S, _ = torch.linalg.svd(0.5 * (Cl + Cl.T))  # AlphaEdit: singular vectors with S < threshold
        U0 = U[:, S < threshold]
        assert 0 < U0.shape[1] < U.shape[1]
        P = U0 @ U0.T
        m = P.shape[0]
        # the AlphaEdit paper, no earlier keys: ΔW P = R K₁ᵀ P (K₁K₁ᵀ P + α I)⁻¹
        return R @ K.T @ P @ torch.linalg.inv(K @ K.T @ P + l2 * torch.eye(m, dtype=torch.float64))
    return rule


def _setup(models, name, editor, overrides):
    lm = models(name)
    weights = {l: lm.weight(l).detach().clone() for l in range(lm.n_layers)}
    ed = gp.editors.get(editor, **COMMON, **overrides)
    cfg = ed.resolve_config(lm)
    assert cfg.layers == (0, 1) and cfg.value.ref_rms == 0 and cfg.value.steps == STEPS
    ctxs = context_templates(lm, CONTEXT_LENGTHS[cfg.value.contexts])
    assert ctxs[0] == "{}" and len(ctxs) == 1 + len(CONTEXT_LENGTHS[cfg.value.contexts])
    return lm, weights, ed, cfg, ctxs


def _check_restored(lm, weights):
    for l, w in weights.items():
        assert torch.equal(lm.weight(l), w), f"weights of layer {l} changed"


SPREAD_CASES = [  # (editor, number of requests, value_contexts, extra overrides)
    ("memit", 1, "none", {}),
    # KL(P_new ‖ P_old) and KL(P_old ‖ P_new) agree to second order in δ: a heavier KL weight makes the direction
    # of the divergence show clearly within a few steps
    ("memit", 1, "none", {"value_kl": 1.0}),
    # model-written prefixes: the flat NLL mean over 6 prompts and the ½ bare + ½ prefixed key weighting
    ("memit", 1, "memit", {}),
    ("memit", 2, "memit", {}),
    ("alphaedit", 1, "memit", {}),
]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("editor,n_req,contexts,extra", SPREAD_CASES,
                         ids=[f"{e}-{n}req-ctx_{c}" + "".join(f"-{k[6:]}{v:g}" for k, v in x.items())
                              for e, n, c, x in SPREAD_CASES])
def test_spread_editor_matches_reference(models, requests_, model, editor, n_req, contexts, extra):
    lm, weights, ed, cfg, ctxs = _setup(models, model, editor, {"value_contexts": contexts, **extra})
    reqs = list(requests_[:n_req])
    upd = ed.compute(lm, reqs)
    _check_restored(lm, weights)
    assert upd.value.steps_run == STEPS

    ref = Reference(lm)
    layers = list(cfg.layers)
    L = layers[-1]
    hs, deltas, losses = zip(*(ref.value(r, ctxs, L, cfg.value) for r in reqs))
    h, delta = torch.stack(hs, 1), torch.stack(deltas, 1)
    _close(f"h[{model}]", upd.h, h)
    _close(f"h[{model}] (value)", upd.value.h, h)
    _close(f"delta[{model}]", upd.value.delta, delta)
    _close(f"z[{model}]", upd.z, h + delta)
    _close(f"nll_per_step[{model}]", torch.tensor(upd.value.losses), torch.tensor(losses).mean(0))

    C = {l: key_covariance(lm, layers, corpus=cfg.corpus, n_tokens=cfg.n_tokens, max_len=cfg.max_len)[l].C
         for l in layers}
    rule = (_memit_rule(C, cfg.lam) if editor == "memit"
            else _alphaedit_rule(C, cfg.projection_threshold, cfg.l2))
    assert editor == "memit" or cfg.projection_mode == "absolute"
    out = ref.spread(reqs, ctxs, layers, h + delta, rule)
    _check_restored(lm, weights)
    for l in layers:
        K, R, dW = out[l]
        _close(f"keys[{model} L{l}]", upd.keys[l], K)
        _close(f"resids[{model} L{l}]", upd.resids[l], R)
        _close(f"dW[{model} L{l}]", upd.deltas[l], dW)
        # the rule itself on geomprobe's own K and R (isolates the solver from upstream rounding)
        _close(f"dW_from_same_KR[{model} L{l}]", upd.deltas[l], rule(l, upd.keys[l].double(), upd.resids[l].double()))


@pytest.mark.parametrize("model", MODELS)
def test_rome_matches_reference(models, requests_, model):
    lm, weights, ed, cfg, ctxs = _setup(models, model, "rome", {})
    assert (cfg.value.contexts, cfg.value.norm, cfg.value.clamp) == ("rome", "mlp", 4.0) and len(ctxs) == 21
    req = requests_[0]
    upd = ed.compute(lm, [req])
    _check_restored(lm, weights)
    L = cfg.layers[-1]
    assert upd.layers == (L,) and upd.value.steps_run == STEPS

    ref = Reference(lm)
    h, delta, losses = ref.value(req, ctxs, L, cfg.value, at="mlp")  # ROME adds δ to the MLP output
    _close(f"h[{model}]", upd.h[:, 0], h)
    _close(f"delta[{model}]", upd.value.delta[:, 0], delta)
    _close(f"nll_per_step[{model}]", torch.tensor(upd.value.losses), torch.tensor(losses))

    C = key_covariance(lm, [L], corpus=cfg.corpus, n_tokens=cfg.n_tokens, max_len=cfg.max_len)[L].C.double()
    k_bar = ref.key(req, ctxs, L, weighting="flat")            # compute_u: flat mean over the 21 prompts
    k_bare = ref.read(*ref.prompt("{}", req), [L])["key", L]    # compute_v: the bare prompt's key
    u = torch.linalg.solve(C, k_bar.double())
    dW = torch.outer(delta.double(), u) / (k_bare.double() @ u)
    _close(f"keys[{model} L{L}]", upd.keys[L][:, 0], k_bar)
    _close(f"resids[{model} L{L}]", upd.resids[L][:, 0], delta)
    _close(f"dW[{model} L{L}]", upd.deltas[L], dW)
    _close(f"dW_k_bare[{model}]", upd.deltas[L].double() @ k_bare.double(), delta)  # ΔW k_bare = δ
    _check_restored(lm, weights)


@pytest.mark.parametrize("model", MODELS)
def test_value_targets_of_different_lengths_match_reference(models, requests_, model):
    """A 3-token and a 1-token target in one batch: the LM head runs only at each row's own target tokens and the
    final column (the last target token) is not run, as the reference's full forward of every prompt alone."""
    from dataclasses import replace

    lm, weights, ed, cfg, ctxs = _setup(models, model, "memit", {"value_contexts": "memit"})
    first, other = requests_
    reqs = [replace(first, target_new=f"{first.target_new} {other.target_true} {first.target_true}"), other]
    n_tok = [len(lm.tokenizer(" " + r.target_new)["input_ids"]) for r in reqs]
    assert n_tok[0] >= 3 and n_tok[1] == 1, n_tok
    upd = ed.compute(lm, reqs)
    _check_restored(lm, weights)
    ref = Reference(lm)
    hs, deltas, losses = zip(*(ref.value(r, ctxs, cfg.layers[-1], cfg.value) for r in reqs))
    _close(f"h[{model}]", upd.value.h, torch.stack(hs, 1))
    _close(f"delta[{model}]", upd.value.delta, torch.stack(deltas, 1))
    _close(f"nll_per_step[{model}]", torch.tensor(upd.value.losses), torch.tensor(losses).mean(0))
