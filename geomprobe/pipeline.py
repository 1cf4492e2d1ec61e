"""The figure pipeline: the catalogue of ``analyses/<id>.py`` scripts, drawing, replotting, the gallery index.

Data flow: :class:`~geomprobe.workspace.Workspace` (model, requests, memoised edits / evaluations / probes)
→ ``analysis.compute(ws)``
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

``geomprobe figures --quick`` is a smoke test (toy world, tiny settings): its figures and index say so and state
no finding (:data:`SMOKE`); ``run.json`` records ``"quick": true`` so ``--replot`` keeps the label.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType

import pandas as pd
import torch

from .errors import GeomprobeError
from .workspace import FULL, QUICK, Settings, Workspace

#: The catalogue (DESIGN.md §6), in run order (cheap, shared work first).
CATALOGUE: tuple[str, ...] = (
    "known_facts", "fig04_key_similarity", "fig13_key_orthogonality_layers", "cov_spectrum", "whitened_key_similarity",
    "fig03_gradient_conflict", "fig02a_tolerance_radius", "fig02b_covariance_trap", "fig17_projection_variant",
    "fig07_geometric_restoration", "why_forms_fail", "table_main_results", "fig06_ablation", "fig16_declarative_results",
    "iga_alpha_sweep",
    "fig18_overhead", "fig15_similar_subjects", "fig12_layer_sensitivity", "fig19_hki_sensitivity",
    "fig20_sequential_edits", "spectral_drift", "spectral_energy",
)

#: The main job (``geomprobe figures`` without ``--only``/``--all``): the figures behind the paper's five claims, the
#: main table and the causal diagnosis, all on the shared same-subject batch (``Settings.n_subjects`` subjects).
CORE: tuple[str, ...] = (
    "known_facts", "fig04_key_similarity", "fig13_key_orthogonality_layers", "cov_spectrum", "whitened_key_similarity",
    "fig03_gradient_conflict", "fig02a_tolerance_radius", "fig02b_covariance_trap", "fig17_projection_variant",
    "fig07_geometric_restoration", "why_forms_fail", "table_main_results", "fig06_ablation", "fig16_declarative_results",
)
#: ``--all`` adds these: ablations, sweeps, overhead, near duplicates, sequential editing (their own sizes).
EXTENDED: tuple[str, ...] = tuple(i for i in CATALOGUE if i not in CORE)

#: label of every figure title and index headline of a ``--quick`` run on the toy world
SMOKE = "SMOKE TEST (toy world, not a finding)"
#: the same for ``--quick`` settings on another model
SMOKE_OTHER = "SMOKE TEST (quick settings, not a finding)"

#: how the index reads the intervals in the headlines (:mod:`geomprobe.intervals`)
INTERVALS_NOTE = ("Scores read `estimate [low, high]`: a 95% percentile bootstrap interval resampling *subjects* "
                  "(requests of one subject are not independent), with n requests and n subjects beside it; "
                  "`A − B` differences are paired (both editors on the same resampled subjects), and a verdict "
                  "claims a difference only when that interval excludes 0.  A CSV written before the intervals "
                  "shows bare estimates and claims no difference.")


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


def select(only: str | Sequence[str] | None, everything: bool = True) -> list[str]:
    """The ids of ``only`` (comma-separated or a list), else the whole catalogue (``everything``) or :data:`CORE`."""
    if not only:
        return list(CATALOGUE if everything else CORE)
    ids = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
    bad = [i for i in ids if i not in CATALOGUE]
    if bad:
        raise GeomprobeError(f"unknown figure id(s) {', '.join(bad)}; use one of {', '.join(CATALOGUE)}")
    return ids


def smoke_label(model: str) -> str:
    """The label of a quick run of ``model``: :data:`SMOKE` on the toy world, else :data:`SMOKE_OTHER`."""
    return SMOKE if str(model).startswith("toy-") else SMOKE_OTHER


def smoke_title(fig, label: str, ident: str, model: str = "") -> None:
    """Replace the figure's title (its suptitle, else its first titled axes) by a smoke-test line: a quick run's
    verdicts are about a toy world, not the papers' findings, so the title states none."""
    text = (f"{label}: {model + ' ' if model else ''}ran {ident} end to end\n"
            "(pipeline check; these numbers test no claim of the papers)")
    sup = fig.get_suptitle() if hasattr(fig, "get_suptitle") else ""
    if sup:
        fig.suptitle(text, fontsize=8.5)
        return
    ax = next((a for a in fig.axes if a.get_title()), fig.axes[0] if fig.axes else None)
    if ax is None:
        fig.suptitle(text, fontsize=8.5)
    else:
        ax.set_title(text)


def figure(mod: ModuleType, df: pd.DataFrame, smoke: str | None = None):
    """Check the columns ``plot`` needs and draw (a smoke-test title when ``smoke`` is a label)."""
    missing = [c for c in mod.COLUMNS if c not in df.columns]
    if missing:
        raise GeomprobeError(f"{mod.ID}.csv lacks columns {missing}; regenerate it with geomprobe figures --only {mod.ID}")
    if df.empty:
        raise GeomprobeError(f"{mod.ID}: no data to plot; the analysis measured nothing (check the request set)")
    fig = mod.plot(df)
    if smoke:
        from .tables import model_of

        smoke_title(fig, smoke, mod.ID, model_of(df))
    return fig


def draw(mod: ModuleType, df: pd.DataFrame, out: Path, smoke: str | None = None) -> list[str]:
    """Check the columns ``plot`` needs, draw, write PNG + PDF (and the analysis' extra files)."""
    from .plots.style import save

    files = save(figure(mod, df, smoke), out / mod.ID)
    extra = getattr(mod, "write_extra", None)  # optional: extra outputs from the CSV (e.g. a Markdown table)
    if extra is not None:
        more = list(extra(df, out))
        for f in more if smoke else ():  # a smoke test's Markdown tables say so too
            if f.endswith(".md"):
                text = Path(f).read_text()
                Path(f).write_text(f"> **{smoke}.**  Pipeline check (`geomprobe figures --quick`); "
                                   "nothing below is a finding of the papers.\n\n" + text)
        files += more
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
                log: Callable[[str], None] = print, full: bool = False, cache: bool = True,
                everything: bool = False, n_subjects: int | None = None) -> list[Entry]:
    """Run (or, with ``replot``, redraw from CSVs) the catalogue; write ``<out>/index.md`` and ``run.json``.

    Without ``only`` it runs :data:`CORE` (the main job), or the whole :data:`CATALOGUE` with ``everything``,
    ``quick``, ``full`` or ``replot``.  ``n_subjects`` overrides the subjects of the shared batch.
    """
    ids = select(only, everything or quick or full or replot)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mods = {i: load_analysis(i, analyses) for i in ids}
    settings = QUICK if quick else FULL if full else Settings()
    if n_subjects is not None:
        if n_subjects < 1:
            raise GeomprobeError(f"--subjects must be at least 1, got {n_subjects}")
        settings = replace(settings, n_subjects=n_subjects)
    if quick and model == "smollm2-135m":
        model = "toy-llama"
    if requests is None:
        requests = "toy" if model.startswith("toy-") else "same-subject"
    ws = None if replot else Workspace(model, requests, out, settings, device, dtype, log, cache=cache and not quick)
    before = _read_run(out)  # run.json as this run found it: every index write starts from it
    if replot:
        smoke = smoke_label(before.get("run", {}).get("model", "")) if _was_quick(before.get("run", {})) else None
    else:
        smoke = smoke_label(model) if quick else None
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
        files = draw(mod, df, out, smoke)
        secs = time.perf_counter() - t0
        head = mod.headline(df)
        entry = Entry(ident, mod.WHAT, mod.PAPER, f"{smoke}: {head}" if smoke else head, None if replot else secs,
                      [str(csv), *files])
        log(f"    {entry.headline}  ({secs:.1f} s)")
        entries.append(entry)
        if not replot and n < len(ids):  # an interrupted run keeps the figures it made, with their provenance
            _write_index(out, entries, ws, time.perf_counter() - t_all, replot, quick=quick, before=before,
                         unfinished=f"{n} of {len(ids)} figures so far")
    total = time.perf_counter() - t_all
    _write_index(out, entries, ws, total, replot, quick=quick, before=before)
    log(f"wrote {len(entries)} figures to {out}/ ({total:.1f} s); index: {out}/index.md")
    return entries


def _read_run(out: Path) -> dict:
    """``<out>/run.json``, or {} when absent or unreadable."""
    try:
        return json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def _was_quick(run: dict) -> bool:
    """Whether a recorded run is a ``--quick`` smoke test (older run.json files: its settings are ``QUICK``'s)."""
    if "quick" in run:
        return bool(run["quick"])
    return bool(run) and json.dumps(run.get("settings"), sort_keys=True, default=str) == json.dumps(
        asdict(QUICK), sort_keys=True, default=str)


def _write_index(out: Path, entries: list[Entry], ws: Workspace | None, total: float, replot: bool,
                 quick: bool = False, before: dict | None = None, unfinished: str | None = None) -> None:
    """``index.md`` (gallery with headline numbers) and ``run.json`` (settings and timings) for the entries.

    ``before``: run.json as the run found it (default: read now); the run writes after every figure, each time
    from the same ``before``, so an interrupted run leaves a consistent gallery of what it made, its
    ``unfinished`` note (e.g. "3 of 14 figures so far") in run.json and at the top of index.md."""
    old = _read_run(out) if before is None else json.loads(json.dumps(before))
    run_json = out / "run.json"
    figures = {e["id"]: e for e in old.get("figures", [])}
    meta = old.get("run", {}) if replot or ws is None else {
        "model": ws.lm.name, "requests": ws.requests_name, "quick": quick, "settings": asdict(ws.settings),
        "device": str(ws.lm.device_of(ws.edit_layer)), "dtype": str(ws.lm.dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(), "total_seconds": round(total, 1),
        "date": time.strftime("%Y-%m-%d %H:%M"), **({"unfinished": unfinished} if unfinished else {}),
    }
    if not replot and ws is not None and old.get("run"):
        if _set_up(meta) == _set_up(old["run"]):
            if not set(CORE) <= {e.id for e in entries} and not old["run"].get("unfinished"):
                # a partial re-run of the same set-up (less than the main job's core; an unfinished run is
                # replaced): keep the whole run's total, record what was redone
                redo = {"ids": [e.id for e in entries], "seconds": round(total, 1), "date": meta["date"],
                        **({"unfinished": unfinished} if unfinished else {})}
                meta = {**old["run"], "reruns": [*old["run"].get("reruns", []), redo]}
        else:  # another set-up: a figure kept from before says which run made it
            earlier = {k: old["run"].get(k) for k in ("settings", "device", "dtype", "torch_threads", "date")}
            for f in figures.values():
                f.setdefault("set_up", earlier)
    for e in entries:
        prev = figures.get(e.id, {})
        figures[e.id] = {**asdict(e), "seconds": e.seconds if e.seconds is not None else prev.get("seconds"),
                         **({"set_up": prev["set_up"]} if replot and "set_up" in prev else {})}
    ordered = [figures[i] for i in CATALOGUE if i in figures]
    run_json.write_text(json.dumps({"run": meta, "figures": ordered}, indent=1, default=str) + "\n")
    smoke = smoke_label(meta.get("model", "")) if _was_quick(meta) else None
    lines = ["# Figures", "",
             *([f"**{smoke}.**  `geomprobe figures --quick` runs the whole catalogue on the toy world with tiny "
                "settings to check the pipeline end to end; no title or number here is a finding of the papers.  "
                "Run without `--quick` for the figures.", ""] if smoke else []),
             f"Generated by `geomprobe figures` on **{meta.get('model', '?')}** ({meta.get('requests', '?')}, "
             f"{meta.get('device', '?')}, {meta.get('dtype', '?')}; total {meta.get('total_seconds', '?')} s, "
             f"{meta.get('date', '?')}).  Each figure: `<id>.png|.pdf`, its data `<id>.csv`, "
             "the script `analyses/<id>.py`.  `geomprobe figures --replot` redraws from the CSVs.", "",
             *([f"**Unfinished run** ({meta['unfinished']}): still running, or stopped before its last figure.", ""]
               if meta.get("unfinished") else []),
             INTERVALS_NOTE, "",
             *[f"Re-run since with `--only {','.join(r['ids'])}` ({r['seconds']} s, {r['date']}"
               f"{'; unfinished: ' + r['unfinished'] if r.get('unfinished') else ''})." for r in meta.get("reruns", [])], *([""] if meta.get("reruns") else []),
             *([f"Figures whose time cell says *earlier run* were not regenerated by this run (it ran "
                f"{meta.get('settings', {}).get('n_subjects', '?')} subjects); they keep the set-up of the run that "
                "made them (`geomprobe figures --all` regenerates every figure).", ""]
               if any("set_up" in f for f in ordered) else []),
             "| figure | what it shows | measured here (paper) | paper ref | time |", "|---|---|---|---|---|"]
    for f in ordered:
        secs = f"{f['seconds']:.0f} s" if f.get("seconds") is not None else ""
        if "set_up" in f:
            su = f["set_up"] or {}
            secs += (f" (*earlier run*: {(su.get('settings') or {}).get('n_subjects', '?')} subjects, "
                     f"{su.get('date', '?')})")
        lines.append(f"| [{f['id']}]({f['id']}.png) | {f['what']} | {f['headline']} | {f['paper']} | {secs} |")
    lines += ["", *claims_section(out, meta)]
    (out / "index.md").write_text("\n".join(lines) + "\n")


def _set_up(run: dict) -> str:
    """What makes two runs comparable, as JSON (tuples and lists alike)."""
    return json.dumps({k: v for k, v in run.items() if k not in ("total_seconds", "date", "reruns", "unfinished")},
                      sort_keys=True, default=str)


def claims_section(out: Path, meta: dict) -> list[str]:
    """The paper's five claims (:mod:`geomprobe.claims`) measured from this folder's CSVs and from every model
    sub-folder with its own ``run.json`` (e.g. ``figures/qwen2.5-coder-0.5b/``), side by side."""
    from .claims import claims_markdown

    if _was_quick(meta):
        return []
    folders = {str(meta.get("model", out.name)): out}
    for sub in sorted(p for p in out.iterdir() if p.is_dir() and (p / "run.json").is_file()):
        folders[str(_read_run(sub).get("run", {}).get("model", sub.name))] = sub
    return ["## The paper's claims, side by side", "",
            "Each claim is decided from the CSVs of the figure named in its cell, with 95% subject-bootstrap "
            "intervals and n; the rules are in `geomprobe/claims.py` (a claim holds only when its interval clears "
            "the threshold; otherwise it is not decided).", "", *claims_markdown(folders)]


def add_arguments(p: argparse.ArgumentParser, only: bool = True) -> argparse.ArgumentParser:
    """The options of ``geomprobe figures`` on ``p`` (without ``--only`` for ``python analyses/<id>.py``)."""
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--requests", default=None, help="built-in name or request file (default: same-subject; toy "
                                                    "for toy models)")
    if only:
        p.add_argument("--only", default=None, help="comma-separated figure ids (default: the core figures)")
        p.add_argument("--all", action="store_true", help="every figure of the catalogue")
    p.add_argument("--subjects", type=int, default=None, help="subjects of the shared edit batch (default 8)")
    p.add_argument("--out", default="figures")
    p.add_argument("--quick", action="store_true", help="smoke test: toy world, few requests, the whole catalogue "
                                                        "in minutes (titles say it is no finding)")
    p.add_argument("--full", action="store_true", help="the catalogue's own sizes (40 sequential edits, M = 2..10, "
                                                       "REVIVE on RoSE too): for a GPU")
    p.add_argument("--no-cache", action="store_true", help="re-optimise values even when cached on disk")
    p.add_argument("--replot", action="store_true", help="redraw from the CSVs in --out without loading a model")
    p.add_argument("--analyses", default=None, help="folder of analysis scripts (default: the checkout's analyses/)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    return p


def run_from_args(args: argparse.Namespace, only: str | None = None) -> list[Entry]:
    """:func:`run_figures` with the options of :func:`add_arguments` (``only`` overrides ``args.only``)."""
    return run_figures(model=args.model, requests=args.requests, only=only or getattr(args, "only", None),
                       out=args.out, quick=args.quick, replot=args.replot, device=args.device, dtype=args.dtype,
                       analyses=args.analyses, full=args.full, cache=not args.no_cache,
                       everything=getattr(args, "all", False), n_subjects=args.subjects)


def main(file: str, argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python analyses/<id>.py [geomprobe figures options]``: run this one figure.

    Parses the options itself (no import of :mod:`geomprobe.cli`, which imports this module); bad input is one
    line on stderr and exit code 2, as with ``geomprobe figures``."""
    ident = Path(file).stem
    p = add_arguments(argparse.ArgumentParser(prog=f"python analyses/{ident}.py",
                                              description=f"Run the figure {ident} alone (geomprobe figures "
                                                          f"--only {ident})."), only=False)
    args = p.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.analyses is None:
        args.analyses = str(Path(file).resolve().parent)
    try:
        run_from_args(args, only=ident)
    except GeomprobeError as e:
        print(f"geomprobe: error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(0)


__all__ = ["CATALOGUE", "CORE", "EXTENDED", "INTERVALS_NOTE", "SMOKE", "SMOKE_OTHER", "add_arguments", "analyses_dir", "draw", "figure",
           "load_analysis", "main", "run_figures", "run_from_args", "select", "smoke_label", "smoke_title"]
