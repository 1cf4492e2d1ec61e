"""The figure pipeline: one shared workspace, the catalogue of ``analyses/<id>.py`` scripts, replotting.

Data flow: ``Workspace`` (model, requests, memoised edits / evaluations / probes) → ``analysis.compute(ws)``
→ tidy DataFrame → ``figures/<id>.csv`` → ``analysis.plot(df)`` → ``figures/<id>.png|.pdf``.  Every analysis
asks the workspace for what it needs; the workspace computes each edit, evaluation and probe once per run, so
``fig02a`` and ``fig07`` share the same RoSE update and its ρ.  ``--replot`` reads the CSVs and redraws
without loading a model.

An analysis module defines::

    ID = "fig02a_tolerance_radius"      # file stem and catalogue id
    PAPER = "RoSE Fig. 2a, 8"           # where the reader finds the paper's version
    WHAT = "one sentence: what the figure shows"
    COLUMNS = (...)                     # columns plot() needs (checked before plotting)
    def compute(ws) -> pandas.DataFrame
    def plot(df) -> matplotlib.figure.Figure
    def headline(df) -> str             # our numbers beside the paper's, from the CSV alone
    def write_extra(df, out) -> list[str]  # optional: more files from the CSV (e.g. a Markdown table)
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import torch

from .errors import GeomprobeError

#: The catalogue (DESIGN.md §6), in run order (cheap, shared work first).
CATALOGUE: tuple[str, ...] = (
    "fig04_key_similarity", "fig13_key_orthogonality_layers", "cov_spectrum", "whitened_key_similarity",
    "fig03_gradient_conflict", "fig02a_tolerance_radius", "fig02b_covariance_trap", "fig17_projection_variant",
    "fig07_geometric_restoration", "table_main_results", "fig06_ablation", "fig16_declarative_results",
    "fig18_overhead", "fig15_similar_subjects", "fig12_layer_sensitivity", "fig19_hki_sensitivity",
    "fig20_sequential_edits", "spectral_drift", "spectral_energy",
)

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

    n_subjects: int = 4
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


#: The default run is sized for 2 CPU cores (HKI's instruction-form templates make RoSE's value optimisation the
#: dominant cost there: about 30 s per request on SmolLM2); on a GPU use ``FULL``, the catalogue's own sizes.
FULL = Settings(sequential=(5, 10, 20, 40), revive_editors=("memit", "rose"), hki_templates=(2, 4, 6, 8, 10),
                sweep_subjects=2)
QUICK = Settings(n_subjects=2, editors=MAIN_EDITORS, trials=4, sequential=(2, 4), sequential_editors=("memit", "rose"),
                 revive_editors=("memit", "rose"),
                 hki_templates=(2, 4), layer_sweep=(1, 2), sweep_subjects=1, near_duplicate_pairs=2, value_steps=4,
                 perplexity_texts=6)


def _key(requests) -> tuple[str, ...]:
    return tuple(r.case_id or f"{r.subject}/{r.relation}" for r in requests)


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
            the requests, the mode, layer, value settings and seed) so an interrupted or partial re-run
            (``--only``) does not optimise them again.
    """

    def __init__(self, model: Any = "smollm2-135m", requests: Any = "same-subject", out: str | Path = "figures",
                 settings: Settings = Settings(), device: str | None = None, dtype: str | None = None,
                 log: Callable[[str], None] = print, cache: bool = False):
        self.cache = cache
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
            stats = key_covariance(self.lm, todo, corpus=cfg.corpus, n_tokens=cfg.n_tokens, max_len=cfg.max_len,
                                   progress=False)
            for l in todo:
                self._memo[("cov", l)] = stats[l].C
        return {l: self._memo[("cov", l)] for l in layers}

    # ---- edits -----------------------------------------------------------------------------------
    def editor(self, name: str, **overrides: Any):
        from . import editors

        return editors.get(name, config=self.config, **overrides)

    def values(self, mode: str, requests: Sequence | None = None, **overrides: Any):
        """Optimised targets in ``mode`` for ``requests`` (default: the shared batch), computed once."""
        from .editors import optimize_values

        requests = list(self.batch if requests is None else requests)
        key = ("values", mode, _key(requests), tuple(sorted(overrides.items())))

        def make():
            cfg = self.config.with_(**overrides) if overrides else self.config
            path = self._value_path(mode, requests, cfg) if self.cache else None
            if path is not None and path.exists():
                v = torch.load(path, weights_only=False)
                self.log(f"  value optimisation: {mode}, {len(requests)} requests: from cache {path.name}")
                return v
            self.log(f"  value optimisation: {mode}, {len(requests)} requests, layer {cfg.layers[-1]}")
            v = optimize_values(self.lm, requests, cfg.layers[-1], mode, cfg.value, seed=cfg.seed)
            self.log(f"    {v.steps_run} steps, {v.seconds:.1f} s, final nll {v.losses[-1]:.3f}")
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                torch.save(v, tmp)
                tmp.replace(path)
            return v

        return self.memo(key, make)

    def _value_path(self, mode: str, requests: Sequence, cfg) -> Path:
        import hashlib

        from .stats import cache_root, model_slug

        ident = {"model": dict(self.lm.identity), "dtype": str(self.lm.dtype), "mode": mode, "layer": cfg.layers[-1],
                 "value": asdict(cfg.value), "seed": cfg.seed, "requests": [r.to_dict() for r in requests]}
        sha = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]
        return cache_root() / "values" / model_slug(self.lm) / f"{mode}-{sha}.pt"

    def update(self, name: str, requests: Sequence | None = None, **overrides: Any):
        """The :class:`EditUpdate` of editor ``name`` on ``requests`` (default: the shared batch).

        Editors that share a value optimisation mode share its targets (``rose-no-iga`` reuses ``rose``'s HKI
        targets, ``rose-no-hki`` and ``memit-merge`` the joint ones, ``alphaedit`` and ``memit`` the
        per-request ones); each update's time and peak memory still count that optimisation.
        """
        requests = list(self.batch if requests is None else requests)
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
        """Tidy metrics of editor ``name`` (or ``"unedited"``) on every form, both protocols."""
        from .evaluate import evaluate

        requests = list(self.batch if requests is None else requests)

        def make():
            ref = self.reference(requests)
            kw = {"forms": EVAL_FORMS, "reference": ref, "protocols": ("prob", "token_acc")}
            if name == "unedited":
                df = evaluate(self.lm, requests, **kw)
            else:
                with self.update(name, requests).applied(self.lm):
                    df = evaluate(self.lm, requests, **kw)
            df.insert(0, "editor", name)
            return df

        return self.memo(("evaluation", name, _key(requests)), make)

    def tolerance(self, name: str, requests: Sequence | None = None, **overrides: Any) -> pd.DataFrame:
        """ρ for every request of ``update(name)`` (fast estimator)."""
        from .probes import tolerance_radius

        requests = list(self.batch if requests is None else requests)
        key = ("tolerance", name, _key(requests), tuple(sorted(overrides.items())))
        return self.memo(key, lambda: tolerance_radius(self.lm, self.update(name, requests, **overrides),
                                                       trials=self.settings.trials))

    def deviation(self, name: str, rules: Sequence[str] = ("update",), requests: Sequence | None = None,
                  **overrides: Any) -> pd.DataFrame:
        """Δ of ``update(name)`` and counterfactual rules at its last edit layer."""
        from .probes import activation_deviation

        requests = list(self.batch if requests is None else requests)
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


# ---- the catalogue ---------------------------------------------------------------------------------
def analyses_dir(path: str | Path | None = None) -> Path:
    """The folder of ``analyses/<id>.py`` scripts: ``path``, else the repository's ``analyses/``."""
    d = Path(path) if path else Path(__file__).resolve().parents[1] / "analyses"
    if not (d / "fig04_key_similarity.py").exists():
        raise GeomprobeError(f"no figure analyses in {d}; run from a geomprobe checkout or pass --analyses DIR")
    return d


def load_analysis(ident: str, folder: str | Path | None = None) -> ModuleType:
    path = analyses_dir(folder) / f"{ident}.py"
    if not path.exists():
        raise GeomprobeError(f"unknown figure id {ident!r}; use one of {', '.join(CATALOGUE)}")
    spec = importlib.util.spec_from_file_location(f"geomprobe_analyses.{ident}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for attr in ("ID", "PAPER", "WHAT", "COLUMNS", "compute", "plot", "headline"):
        if not hasattr(mod, attr):
            raise GeomprobeError(f"analysis {path} lacks {attr}; see geomprobe/pipeline.py for the contract")
    return mod


def select(only: str | Sequence[str] | None) -> list[str]:
    if not only:
        return list(CATALOGUE)
    ids = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
    bad = [i for i in ids if i not in CATALOGUE]
    if bad:
        raise GeomprobeError(f"unknown figure id(s) {', '.join(bad)}; use one of {', '.join(CATALOGUE)}")
    return ids


def draw(mod: ModuleType, df: pd.DataFrame, out: Path) -> list[str]:
    """Check the columns ``plot`` needs, draw, write PNG + PDF."""
    from .plots.style import save

    missing = [c for c in mod.COLUMNS if c not in df.columns]
    if missing:
        raise GeomprobeError(f"{mod.ID}.csv lacks columns {missing}; regenerate it with geomprobe figures --only {mod.ID}")
    if df.empty:
        raise GeomprobeError(f"{mod.ID}: no data to plot; the analysis measured nothing (check the request set)")
    files = save(mod.plot(df), out / mod.ID)
    extra = getattr(mod, "write_extra", None)  # optional: extra outputs from the CSV (e.g. a Markdown table)
    if extra is not None:
        files += list(extra(df, out))
    return files


@dataclass
class Entry:
    id: str
    what: str
    paper: str
    headline: str
    seconds: float | None = None
    files: list[str] = field(default_factory=list)


def run_figures(model: str = "smollm2-135m", requests: str | None = None, only: str | Sequence[str] | None = None,
                out: str | Path = "figures", quick: bool = False, replot: bool = False, device: str | None = None,
                dtype: str | None = None, analyses: str | Path | None = None,
                log: Callable[[str], None] = print, full: bool = False, cache: bool = True) -> list[Entry]:
    """Run (or, with ``replot``, redraw from CSVs) the catalogue; write ``<out>/index.md`` and ``run.json``."""
    ids = select(only)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mods = {i: load_analysis(i, analyses) for i in ids}
    settings = QUICK if quick else FULL if full else Settings()
    if quick and model == "smollm2-135m":
        model = "toy-llama"
    if requests is None:
        requests = "toy" if model.startswith("toy-") else "same-subject"
    ws = None if replot else Workspace(model, requests, out, settings, device, dtype, log, cache=cache and not quick)
    entries, t_all = [], time.perf_counter()
    for n, ident in enumerate(ids, 1):
        mod = mods[ident]
        csv = out / f"{ident}.csv"
        t0 = time.perf_counter()
        if replot:
            if not csv.exists():
                raise GeomprobeError(f"{csv} is missing; run geomprobe figures --only {ident} first")
            df = pd.read_csv(csv)
            log(f"[{n}/{len(ids)}] {ident}: redraw from {csv}")
        else:
            log(f"[{n}/{len(ids)}] {ident}: computing")
            df = mod.compute(ws)
            df.to_csv(csv, index=False)
        files = draw(mod, df, out)
        secs = time.perf_counter() - t0
        entry = Entry(ident, mod.WHAT, mod.PAPER, mod.headline(df), None if replot else secs,
                      [str(csv), *files])
        log(f"    {entry.headline}  ({secs:.1f} s)")
        entries.append(entry)
    total = time.perf_counter() - t_all
    _write_index(out, entries, ws, total, replot)
    log(f"wrote {len(entries)} figures to {out}/ ({total:.1f} s); index: {out}/index.md")
    return entries


def _write_index(out: Path, entries: list[Entry], ws: Workspace | None, total: float, replot: bool) -> None:
    """``index.md`` (gallery with headline numbers) and ``run.json`` (settings and timings) for the entries."""
    old = {}
    run_json = out / "run.json"
    if run_json.exists():
        try:
            old = json.loads(run_json.read_text())
        except (OSError, ValueError):
            old = {}
    figures = {e["id"]: e for e in old.get("figures", [])}
    for e in entries:
        prev = figures.get(e.id, {})
        figures[e.id] = {**asdict(e), "seconds": e.seconds if e.seconds is not None else prev.get("seconds")}
    meta = old.get("run", {}) if replot or ws is None else {
        "model": ws.lm.name, "requests": ws.requests_name, "settings": asdict(ws.settings),
        "device": str(ws.lm.device_of(ws.edit_layer)), "dtype": str(ws.lm.dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(), "total_seconds": round(total, 1),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    def set_up(run: dict) -> str:  # what makes two runs comparable, as JSON (tuples and lists alike)
        return json.dumps({k: v for k, v in run.items() if k not in ("total_seconds", "date", "reruns")},
                          sort_keys=True, default=str)

    if (not replot and ws is not None and len(entries) < len(CATALOGUE) and old.get("run")
            and set_up(meta) == set_up(old["run"])):
        # a partial re-run of the same set-up: keep the whole run's total, record what was redone
        redo = {"ids": [e.id for e in entries], "seconds": round(total, 1), "date": meta["date"]}
        meta = {**old["run"], "reruns": [*old["run"].get("reruns", []), redo]}
    ordered = [figures[i] for i in CATALOGUE if i in figures]
    run_json.write_text(json.dumps({"run": meta, "figures": ordered}, indent=1, default=str) + "\n")
    lines = ["# Figures", "",
             f"Generated by `geomprobe figures` on **{meta.get('model', '?')}** ({meta.get('requests', '?')}, "
             f"{meta.get('device', '?')}, {meta.get('dtype', '?')}; total {meta.get('total_seconds', '?')} s, "
             f"{meta.get('date', '?')}).  Each figure: `<id>.png|.pdf`, its data `<id>.csv`, "
             "the script `analyses/<id>.py`.  `geomprobe figures --replot` redraws from the CSVs.", "",
             *[f"Re-run since with `--only {','.join(r['ids'])}` ({r['seconds']} s, {r['date']})." for r in
               meta.get("reruns", [])], *([""] if meta.get("reruns") else []),
             "| figure | what it shows | measured here (paper) | paper ref | time |", "|---|---|---|---|---|"]
    for f in ordered:
        secs = f"{f['seconds']:.0f} s" if f.get("seconds") is not None else ""
        lines.append(f"| [{f['id']}]({f['id']}.png) | {f['what']} | {f['headline']} | {f['paper']} | {secs} |")
    (out / "index.md").write_text("\n".join(lines) + "\n")


def main(file: str) -> None:
    """Entry point of ``python analyses/<id>.py [geomprobe figures options]``: run this one figure."""
    import sys

    from .cli import main as cli_main

    sys.exit(cli_main(["figures", "--only", Path(file).stem, *sys.argv[1:]]))


__all__ = ["CATALOGUE", "FORMS", "FULL", "MAIN_EDITORS", "QUICK", "Settings", "Workspace", "analyses_dir", "draw",
           "load_analysis", "main", "run_figures", "select"]
