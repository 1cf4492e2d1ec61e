"""The shared, memoised computations of one run: model, requests, optimised values, edits, evaluations, ρ, Δ,
covariances and sequential runs.

Both the figure pipeline (:mod:`geomprobe.pipeline`) and the reports (:mod:`geomprobe.report`) ask a
:class:`Workspace` for what they need; it computes each edit, evaluation and probe once per run, so two figures
(or a figure and a report) that need the same RoSE update and its ρ share them.  Optimised values can be kept
on disk (:class:`ValueCache`: safetensors + a JSON manifest, never pickle).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .errors import GeomprobeError

MAIN_EDITORS: tuple[str, ...] = ("memit", "memit-merge", "alphaedit", "rose", "rose-no-iga", "rose-no-hki", "rome")
FORMS: tuple[str, ...] = ("declarative", "question", "instruction")
#: Forms the workspace evaluates edits on (``paraphrase``: the declarative paraphrases, for the paraphrase score).
EVAL_FORMS: tuple[str, ...] = ("declarative", "paraphrase", "question", "instruction")


@dataclass(frozen=True)
class Settings:
    """Sizes of one catalogue run.

    Attributes:
        n_subjects: subjects of the shared same-subject edit batch (all their relations are edited together).
        editors: editors of the shared batch.
        trials: noise draws per radius (tolerance probe).
        sequential: numbers of edits after which the sequential-edit figures measure.
        sequential_editors: editors run sequentially.
        revive_editors: those of ``sequential_editors`` also run wrapped in REVIVE (spectral drift figure).
        hki_templates: values of M for the HKI sensitivity figure.
        layer_sweep: last edit layers for the layer-sensitivity figure (None: a spread over the model's depth).
        sweep_subjects: subjects edited in the layer / HKI sweeps.
        near_duplicate_pairs: near-duplicate subject pairs edited for fig15.
        value_steps: value optimisation steps (None: the model's preset).
        perplexity_texts: held-out sentences for the general-ability proxy.
    """

    n_subjects: int = 8
    editors: tuple[str, ...] = MAIN_EDITORS
    trials: int = 10
    sequential: tuple[int, ...] = (5, 10, 20)
    sequential_editors: tuple[str, ...] = ("memit", "alphaedit", "rose")
    revive_editors: tuple[str, ...] = ("memit",)
    hki_templates: tuple[int, ...] = (2, 4, 8)
    layer_sweep: tuple[int, ...] | None = None
    sweep_subjects: int = 1
    near_duplicate_pairs: int = 4
    value_steps: int | None = None
    perplexity_texts: int = 24


#: The default run: 8 subjects (32 requests) in the shared batch, the other figures sized for 2 CPU cores (RoSE's
#: HKI value optimisation, ~16 s per request on SmolLM2, and the causal chains, ~4 s per request-form and editor,
#: dominate there); on a GPU use ``FULL``, the catalogue's own sizes.
FULL = Settings(sequential=(5, 10, 20, 40), revive_editors=("memit", "rose"), hki_templates=(2, 4, 6, 8, 10),
                sweep_subjects=2)
QUICK = Settings(n_subjects=2, editors=MAIN_EDITORS, trials=4, sequential=(2, 4), sequential_editors=("memit", "rose"),
                 revive_editors=("memit", "rose"),
                 hki_templates=(2, 4), layer_sweep=(1, 2), sweep_subjects=1, near_duplicate_pairs=2, value_steps=4,
                 perplexity_texts=6)


def _key(requests) -> tuple[str, ...]:
    return tuple(r.case_id or f"{r.subject}/{r.relation}" for r in requests)


#: layout version of the value cache files (bump on any change: files of another version are recomputed)
VALUE_FORMAT = 1
#: the :class:`~geomprobe.editors.value.ValueResult` fields the cache stores (a result with other fields is not
#: cached, so a change there can never be read back wrongly)
_VALUE_FIELDS = ("layer", "groups", "members", "h", "delta", "losses", "relation_grads", "steps_run", "seconds",
                 "mode", "peak_memory_mb")


def _canonical(obj: Any) -> Any:
    """``obj`` as plain JSON types (tuples → lists, other objects → str), the form a manifest reads back."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _value_identity(value_cfg) -> dict:
    """The value settings that change the result (``prefix_cache`` only changes how fast it is computed)."""
    d = asdict(value_cfg)
    d.pop("prefix_cache", None)
    return d


class ValueCache:
    """Optimised values on disk, without pickle.

    ``<cache root>/values/<model slug>/<mode>-<sha>.safetensors`` holds the tensors (``h``, ``delta`` and each
    recorded relation gradient as ``grad.<i>``); ``<mode>-<sha>.json`` beside it holds everything else (groups,
    members, losses, steps, seconds, mode, peak memory, layer, the order of the gradients) and the identity the
    file name hashes (model identity and dtype, mode, layer, value settings, seed, the requests).  Reading uses
    :mod:`safetensors` and :mod:`json` only, so a planted or corrupt file cannot run code; a file that is torn,
    of another format or of another identity is ignored with a log line and the values are recomputed.  Writes are
    atomic (:func:`geomprobe.stats._atomic_write`); the tensors carry the manifest's ``sha`` in their metadata so a
    manifest and tensors of two different writes are never combined.
    """

    def __init__(self, lm, root: str | Path | None = None, log: Callable[[str], None] = print):
        from .stats import cache_root, model_slug

        self.lm = lm
        self.folder = cache_root(root) / "values" / model_slug(lm)
        self.log = log

    def identity(self, mode: str, requests: Sequence, cfg) -> dict:
        """What the values depend on, as plain JSON (the cache key)."""
        return _canonical({"model": dict(self.lm.identity), "dtype": str(self.lm.dtype), "mode": mode,
                           "layer": cfg.layers[-1], "value": _value_identity(cfg.value), "seed": cfg.seed,
                           "requests": [r.to_dict() for r in requests]})

    @staticmethod
    def sha(ident: dict) -> str:
        import hashlib

        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def path(self, ident: dict) -> Path:
        """The tensors file of ``ident`` (the manifest is the same path with ``.json``)."""
        return self.folder / f"{ident['mode']}-{self.sha(ident)}.safetensors"

    def save(self, ident: dict, v) -> bool:
        """Write ``v`` (a :class:`ValueResult`) under ``ident``; False (nothing written) if it cannot be stored."""
        from dataclasses import fields

        from .stats import _write_json, _write_tensors

        if tuple(f.name for f in fields(v)) != _VALUE_FIELDS:
            self.log(f"    value cache: ValueResult has fields {[f.name for f in fields(v)]}, not the cached "
                     "layout; not cached")
            return False
        tensors = {"h": v.h, "delta": v.delta}
        grads = []
        for step, per in v.relation_grads.items():
            for (subject, relation), g in per.items():
                tensors[f"grad.{len(grads)}"] = g
                grads.append([int(step), subject, relation])
        tensors = {k: t.detach().cpu().clone() for k, t in tensors.items()}  # no shared storage in the file
        sha = self.sha(ident)
        manifest = {"format": VALUE_FORMAT, "sha": sha, "identity": ident, "layer": int(v.layer),
                    "groups": list(v.groups), "members": [list(m) for m in v.members], "losses": list(v.losses),
                    "steps_run": int(v.steps_run), "seconds": float(v.seconds), "mode": v.mode,
                    "peak_memory_mb": float(v.peak_memory_mb), "grads": grads}
        path = self.path(ident)
        _write_tensors(path, tensors, {"sha": sha, "format": str(VALUE_FORMAT)})
        _write_json(path.with_suffix(".json"), manifest)
        return True

    def load(self, ident: dict):
        """The cached :class:`ValueResult` of ``ident``, bit-identical to the one saved; None when absent or not
        usable (logged)."""
        from safetensors import safe_open

        from .editors.value import ValueResult

        path = self.path(ident)
        man_path = path.with_suffix(".json")
        if not (path.is_file() and man_path.is_file()):
            return None
        try:
            man = json.loads(man_path.read_text("utf-8"))
            if man.get("format") != VALUE_FORMAT or man.get("identity") != ident or man.get("sha") != self.sha(ident):
                raise ValueError("manifest of another format or identity")
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("sha") != man["sha"]:
                    raise ValueError("tensors and manifest of different writes")
                h, delta = f.get_tensor("h"), f.get_tensor("delta")
                grads: dict[int, dict[tuple[str, str], torch.Tensor]] = {}
                for i, (step, subject, relation) in enumerate(man["grads"]):
                    grads.setdefault(int(step), {})[(subject, relation)] = f.get_tensor(f"grad.{i}")
            return ValueResult(layer=int(man["layer"]), groups=tuple(man["groups"]),
                               members=tuple(tuple(int(i) for i in m) for m in man["members"]), h=h, delta=delta,
                               losses=tuple(float(x) for x in man["losses"]), relation_grads=grads,
                               steps_run=int(man["steps_run"]), seconds=float(man["seconds"]), mode=man["mode"],
                               peak_memory_mb=float(man["peak_memory_mb"]))
        except Exception as e:  # noqa: BLE001 - any unreadable file means: recompute (nothing was executed)
            self.log(f"  value cache: ignoring {path.name} ({type(e).__name__}: {e}); recomputing")
            return None


class Workspace:
    """Model, requests and every shared, memoised computation of one catalogue run.

    Args:
        model: built-in name, HF id or local path, or an already loaded :class:`~geomprobe.models.LM`.
        requests: built-in set name or a request file (the shared same-subject batch comes from it), or a list
            of :class:`~geomprobe.data.EditRequest`.
        out: output folder.
        settings: :class:`Settings` (``QUICK`` for the toy run).
        device / dtype: model placement.
        log: progress printer.
        cache: keep optimised values on disk (``~/.cache/geomprobe/values/<model>/``, keyed by the model identity,
            the requests, the mode, layer, value settings and seed; safetensors + JSON, see :class:`ValueCache`) so
            an interrupted or partial re-run (``--only``) does not optimise them again.
    """

    def __init__(self, model: Any = "smollm2-135m", requests: Any = "same-subject", out: str | Path = "figures",
                 settings: Settings = Settings(), device: str | None = None, dtype: str | None = None,
                 log: Callable[[str], None] = print, cache: bool = False):
        self.cache = cache
        self._given: dict[str, Any] = {}  # name -> EditUpdate registered with register_update
        self._lm = None if isinstance(model, str) else model
        self.model_name = model if isinstance(model, str) else model.name
        self._memo: dict[Any, Any] = {}
        if isinstance(requests, str):
            self.requests_name = requests
        else:
            self.requests_name = "<given>"
            self._memo["all_requests"] = list(requests)
        self.out = Path(out)
        self.settings = settings
        self.device, self.dtype = device, dtype
        self.log = log

    # ---- model, data, config -------------------------------------------------------------------
    @property
    def lm(self):
        if self._lm is None:
            from .models import load_model

            kw = {"device": self.device} if self.device else {}
            if self.dtype:
                kw["dtype"] = self.dtype
            t0 = time.perf_counter()
            self._lm = load_model(self.model_name, **kw)
            self.log(f"loaded {self._lm.name} ({time.perf_counter() - t0:.1f} s)")
            from .data.derive import prepare_pools

            # pools for relations without built-in ones: rules, else the model's own rewrite (cached)
            prepare_pools(self.all_requests, lm=self._lm)
        return self._lm

    def memo(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()`` once per ``key`` for this run."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    @property
    def all_requests(self) -> list:
        from .data import load_requests

        return self.memo("all_requests", lambda: list(load_requests(self.requests_name)))

    def subjects_with(self, min_relations: int = 2) -> list[str]:
        """Subjects of the request set in file order that have at least ``min_relations`` requests."""
        count: dict[str, int] = {}
        for r in self.all_requests:
            count[r.subject] = count.get(r.subject, 0) + 1
        return [s for s, n in count.items() if n >= min_relations]

    def requests_of(self, subjects: Sequence[str]) -> list:
        wanted = set(subjects)
        return [r for r in self.all_requests if r.subject in wanted]

    @property
    def subjects(self) -> list[str]:
        """Subjects of the shared edit batch."""
        subs = self.subjects_with(2)[: self.settings.n_subjects]
        if not subs:
            raise GeomprobeError(f"{self.requests_name} has no subject with two or more requests; the same-subject "
                                 "figures need them (use --requests same-subject)")
        return subs

    @property
    def batch(self) -> list:
        """The shared same-subject edit batch (every request of :attr:`subjects`)."""
        return self.requests_of(self.subjects)

    @property
    def config(self):
        """The model's editor preset with the run's overrides."""
        from .editors import preset_for

        cfg = preset_for(self.lm)
        if self.settings.value_steps is not None:
            cfg = cfg.with_(value_steps=self.settings.value_steps)
        return cfg

    @property
    def edit_layer(self) -> int:
        return self.config.layers[-1]

    def covariance(self, layers: Sequence[int] | None = None) -> dict[int, torch.Tensor]:
        """``{layer: C}`` from the shared statistics cache (one pass for every layer asked)."""
        from .stats import key_covariance

        layers = sorted(set(layers if layers is not None else self.config.layers))
        todo = [l for l in layers if ("cov", l) not in self._memo]
        if todo:
            cfg = self.config
            stats = key_covariance(self.lm, todo, corpus=cfg.corpus, n_tokens=cfg.n_tokens, max_len=cfg.max_len)
            for l in todo:
                self._memo[("cov", l)] = stats[l].C
        return {l: self._memo[("cov", l)] for l in layers}

    # ---- edits -----------------------------------------------------------------------------------
    def register_update(self, name: str, update: Any) -> None:
        """Serve ``update`` (an :class:`~geomprobe.editors.update.EditUpdate` computed elsewhere, typically an edit
        imported with :meth:`EditUpdate.from_weights`) under ``name``: :meth:`update`, :meth:`evaluation`,
        :meth:`tolerance` and :meth:`deviation` then use it instead of computing an edit.

        The name must not be an editor's (nor ``"unedited"``); the update must be for this workspace's model.
        It serves only its own requests (an update cannot be recomputed for others) and takes no editor options.
        For an *imported* update (:attr:`EditUpdate.is_imported`) what needs the editor's settings — :meth:`editor`,
        the counterfactual rules of :meth:`deviation`, :meth:`sequential` — raises a one-line
        :class:`~geomprobe.errors.GeomprobeError` saying it is not available for an imported edit.
        """
        from .editors.config import parse_editor_name

        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise GeomprobeError(f"an edit's name must be a non-empty word, got {name!r}")
        if name == "unedited":
            raise GeomprobeError("'unedited' names the model before any edit; pick another name for the edit")
        try:
            parse_editor_name(name)
        except GeomprobeError:
            pass
        else:
            raise GeomprobeError(f"{name!r} is an editor's name; register the edit under another name")
        for attr in ("deltas", "layers", "requests", "check_model"):
            if not hasattr(update, attr):
                raise GeomprobeError(f"register_update takes an EditUpdate, not a {type(update).__name__}")
        old = self._given.get(name)
        if old is not None and old is not update:
            raise GeomprobeError(f"an edit named {name!r} is already registered; give each edit its own name")
        update.check_model(self.lm)
        self._given[name] = update

    def is_given(self, name: str) -> bool:
        """Whether ``name`` is an update registered with :meth:`register_update` (not an editor)."""
        return name in self._given

    def is_imported(self, name: str) -> bool:
        """Whether ``name`` is a registered update imported from edited weights (no editor settings)."""
        upd = self._given.get(name)
        return upd is not None and bool(getattr(upd, "is_imported", False))

    def _requests_for(self, name: str, requests: Sequence | None) -> list:
        """``requests``, defaulting to a registered update's own requests (else the shared batch)."""
        if requests is None:
            return list(self._given[name].requests) if name in self._given else list(self.batch)
        return list(requests)

    def _given_update(self, name: str, requests: Sequence, overrides: dict):
        upd = self._given[name]
        if overrides:
            raise GeomprobeError(f"{name!r} is a given edit; it takes no editor options ({', '.join(overrides)})")
        if _key(requests) != _key(upd.requests):
            raise GeomprobeError(f"the edit {name!r} was read for requests {list(_key(upd.requests))}, not "
                                 f"{list(_key(requests))}; import it again for those requests")
        return upd

    def editor(self, name: str, **overrides: Any):
        from .editors import get

        if name in self._given:
            what = "an imported edit" if self.is_imported(name) else "a given edit"
            raise GeomprobeError(f"{name!r} is {what}, not an editor: recomputing it (other layers, λ, value "
                                 "settings, sequential edits) is not available for it")
        return get(name, config=self.config, **overrides)

    def values(self, mode: str, requests: Sequence | None = None, **overrides: Any):
        """Optimised targets in ``mode`` for ``requests`` (default: the shared batch), computed once."""
        from .editors import optimize_values

        requests = list(self.batch if requests is None else requests)
        key = ("values", mode, _key(requests), tuple(sorted(overrides.items())))

        def make():
            cfg = self.config.with_(**overrides) if overrides else self.config
            cache = ValueCache(self.lm, log=self.log) if self.cache else None
            ident = cache.identity(mode, requests, cfg) if cache is not None else None
            v = cache.load(ident) if cache is not None else None
            if v is not None:
                self.log(f"  value optimisation: {mode}, {len(requests)} requests: from cache "
                         f"{cache.path(ident).name}")
                return v
            self.log(f"  value optimisation: {mode}, {len(requests)} requests, layer {cfg.layers[-1]}")
            v = optimize_values(self.lm, requests, cfg.layers[-1], mode, cfg.value, seed=cfg.seed)
            self.log(f"    {v.steps_run} steps, {v.seconds:.1f} s, final nll {v.losses[-1]:.3f}")
            if cache is not None:
                cache.save(ident, v)
            return v

        return self.memo(key, make)

    def update(self, name: str, requests: Sequence | None = None, **overrides: Any):
        """The :class:`EditUpdate` of editor ``name`` on ``requests`` (default: the shared batch).

        Editors that share a value optimisation mode share its targets (``rose-no-iga`` reuses ``rose``'s HKI
        targets, ``rose-no-hki`` and ``memit-merge`` the joint ones, ``alphaedit`` and ``memit`` the
        per-request ones); each update's time and peak memory still count that optimisation.
        """
        requests = self._requests_for(name, requests)
        if name in self._given:
            return self._given_update(name, requests, overrides)
        key = ("update", name, _key(requests), tuple(sorted(overrides.items())))

        def make():
            ed = self.editor(name, **overrides)
            value = None
            if ed.rule != "rank-one":
                value_over = {k: v for k, v in overrides.items() if k.startswith("value_") or k == "layers"}
                value = self.values(ed.mode, requests, **value_over)
            t0 = time.perf_counter()
            upd = ed.compute(self.lm, requests, value=value)
            self.log(f"  {name}: {len(requests)} requests, closed form {time.perf_counter() - t0:.1f} s, "
                     f"edit time {upd.seconds:.1f} s")
            return upd

        return self.memo(key, make)

    # ---- evaluation and probes ------------------------------------------------------------------
    def reference(self, requests: Sequence | None = None):
        from .evaluate import reference_predictions

        requests = list(self.batch if requests is None else requests)
        return self.memo(("reference", _key(requests)), lambda: reference_predictions(self.lm, requests))

    def evaluation(self, name: str, requests: Sequence | None = None) -> pd.DataFrame:
        """Tidy metrics of editor ``name`` (or ``"unedited"``) on every form, protocols ``prob``, ``token_acc`` and
        ``gen`` (greedy generation, exact match: the paper's criterion and the main table's headline).

        ``gen`` decodes ``max_new_tokens`` = the longest expected answer's token count + 1 (the one extra token
        shows whether the answer ends there: EOS, line break or sentence end), the fewest that cover every target;
        its locality compares with the unedited model's greedy answers, kept by a reference of that length.
        """
        from .evaluate import evaluate

        requests = self._requests_for(name, requests)

        def make():
            kw = self.evaluation_settings(requests)
            if name == "unedited":
                df = evaluate(self.lm, requests, **kw)
            else:
                with self.update(name, requests).applied(self.lm):
                    df = evaluate(self.lm, requests, **kw)
            df.insert(0, "editor", name)
            return df

        return self.memo(("evaluation", name, _key(requests)), make)

    def evaluation_settings(self, requests: Sequence | None = None) -> dict[str, Any]:
        """Keyword arguments of :func:`~geomprobe.evaluate.evaluate` for :meth:`evaluation`: every form, the three
        protocols, ``max_new_tokens`` and the unedited reference of that length (built once)."""
        from .evaluate import reference_predictions

        requests = list(self.batch if requests is None else requests)
        tok = self.lm.tokenizer
        answers = {r.target_new for r in requests} | {q.answer for r in requests for q in r.queries if q.answer}
        n_gen = 1 + max(len(tok(p + a, add_special_tokens=False)["input_ids"]) for a in answers for p in ("", " "))
        ref = self.memo(("reference", _key(requests), "gen", n_gen),
                        lambda: reference_predictions(self.lm, requests, max_new_tokens=n_gen))
        self._memo.setdefault(("reference", _key(requests)), ref)  # serves prob / token_acc locality as well
        return {"forms": EVAL_FORMS, "reference": ref, "protocols": ("prob", "token_acc", "gen"),
                "max_new_tokens": n_gen}

    def tolerance(self, name: str, requests: Sequence | None = None, **overrides: Any) -> pd.DataFrame:
        """ρ for every request of ``update(name)`` (fast estimator); for an imported edit, around the δ = z − h the
        edited model delivers (its stand-in value, :func:`~geomprobe.editors.imported.delivered_value`)."""
        from .probes import tolerance_radius

        requests = self._requests_for(name, requests)
        key = ("tolerance", name, _key(requests), tuple(sorted(overrides.items())))
        return self.memo(key, lambda: tolerance_radius(self.lm, self.update(name, requests, **overrides),
                                                       trials=self.settings.trials))

    def deviation(self, name: str, rules: Sequence[str] = ("update",), requests: Sequence | None = None,
                  **overrides: Any) -> pd.DataFrame:
        """Δ of ``update(name)`` and counterfactual rules at its last edit layer.  An imported edit has no editor
        settings (λ, α) for the counterfactual rules: only ``("update",)`` is available for it."""
        from .probes import activation_deviation

        requests = self._requests_for(name, requests)
        other = [r for r in rules if r != "update"]
        if other and self.is_imported(name):
            raise GeomprobeError(f"the counterfactual rule(s) {', '.join(other)} are not available for an imported "
                                 f"edit ({name!r}): they need the editor's λ / α; ask for rules=('update',)")
        upd = self.update(name, requests, **overrides)
        need_c = any(r in ("covariance", "projection") for r in rules)
        key = ("deviation", name, tuple(rules), _key(requests), tuple(sorted(overrides.items())))
        return self.memo(key, lambda: activation_deviation(
            self.lm, upd, rules=rules, covariances=self.covariance(upd.layers[-1:]) if need_c else None))

    # ---- sequential editing -------------------------------------------------------------------
    @property
    def sequential_requests(self) -> list:
        """``max(settings.sequential)`` requests for sequential editing: subjects after the shared batch first."""
        n = max(self.settings.sequential)
        batch = set(self.subjects)
        pool = [r for r in self.all_requests if r.subject not in batch] + self.batch
        if len(pool) < n:
            raise GeomprobeError(f"{self.requests_name} holds {len(pool)} requests; sequential figures need {n}")
        return pool[:n]

    def heldout_texts(self) -> list[str]:
        """Sentences for the perplexity proxy: true facts (prompt + true answer) of requests that are never
        edited in the sequential run, topped up with the built-in general sentences for non-toy models."""
        from .stats import SENTENCES

        edited = set(_key(self.sequential_requests))
        facts = [f"{r.prompt.replace('{}', r.subject)} {r.target_true}." for r in self.all_requests
                 if (r.case_id or f"{r.subject}/{r.relation}") not in edited and r.target_true]
        n = self.settings.perplexity_texts
        if len(facts) < n and not self.model_name.startswith("toy-"):
            facts += list(SENTENCES)
        if not facts:
            facts = [f"{r.prompt.replace('{}', r.subject)} {r.target_true}." for r in self.all_requests]
        return facts[:n]

    def sequential(self, name: str) -> dict[str, Any]:
        """Edit ``sequential_requests`` with ``name`` in batches, one after another, measuring after each of
        ``settings.sequential`` edits.

        Returns ``{"metrics": DataFrame (instruction/question/declarative metrics on every request edited so far,
        column n_edits), "weights": {n_edits: {layer: W_t}}, "w0": {layer: W_0}, "perplexity": {n_edits: ppl},
        "seconds": {n_edits: cumulative edit time}}``; the model's weights are restored bit-exactly afterwards.
        """
        from .editors.update import restoring
        from .evaluate import evaluate, reference_predictions
        from .probes import perplexity

        def make():
            reqs = self.sequential_requests
            ed = self.editor(name)
            layers = list(ed.resolve_config(self.lm).layers)
            texts = self.heldout_texts()
            ref = self.memo(("reference", _key(reqs)), lambda: reference_predictions(self.lm, reqs))
            w0 = {l: self.lm.weight(l).detach().float().cpu().clone() for l in layers}
            out = {"metrics": [], "weights": {}, "w0": w0, "perplexity": {0: perplexity(self.lm, texts)},
                   "seconds": {0: 0.0}}
            history, start, spent = [], 0, 0.0
            with restoring(self.lm, layers):
                for n in sorted(self.settings.sequential):
                    chunk = reqs[start:n]
                    upd = ed.compute(self.lm, chunk, history=history)
                    upd.apply(self.lm)
                    history.append(upd)
                    spent += upd.seconds
                    start = n
                    df = evaluate(self.lm, reqs[:n], forms=EVAL_FORMS, reference=ref, protocols=("prob",))
                    df.insert(0, "n_edits", n)
                    df.insert(0, "editor", name)
                    out["metrics"].append(df)
                    out["weights"][n] = {l: self.lm.weight(l).detach().float().cpu().clone() for l in layers}
                    out["perplexity"][n] = perplexity(self.lm, texts)
                    out["seconds"][n] = spent
                    self.log(f"  {name}: {n} sequential edits, {spent:.1f} s, perplexity {out['perplexity'][n]:.2f}")
            out["metrics"] = pd.concat(out["metrics"], ignore_index=True)
            return out

        return self.memo(("sequential", name), make)
