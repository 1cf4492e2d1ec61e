"""The ``geomprobe`` command.  Bad input: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

from .errors import GeomprobeError
from .progress import is_quiet, set_quiet

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def deco(fn):
        COMMANDS[name] = fn
        return fn
    return deco


@command("models")
def _models(args: argparse.Namespace) -> int:
    from .models.builtin import BUILTIN, TOY_DIR, dir_size

    w = max(map(len, BUILTIN)) + 1
    for name, b in BUILTIN.items():
        path = TOY_DIR / name
        size = f"{dir_size(path) / 1e6:.1f} MB on disk" if path.is_dir() else b.size
        print(f"{name:{w}s} {b.architecture}\n{'':{w}s} {b.origin}; {size}")
    return 0


@command("relations")
def _relations(args: argparse.Namespace) -> int:
    from .data.forms import builtin_templates

    def one(pool, form):
        return next((t for f, t in pool.train if f == form), None)

    print("Relations with built-in template pools ({} = the subject).  A request's relation must be one of these, "
          "or its request file brings its own pools under \"templates\".\n")
    for rel, pool in builtin_templates().items():
        counts = {f: sum(1 for g, _ in pool.train if g == f) for f in ("declarative", "question", "instruction")}
        print(f"{rel}: {len(pool.train)} train templates ({counts['declarative']} declarative, {counts['question']} "
              f"question, {counts['instruction']} instruction), {len(pool.eval_questions)} held-out eval questions")
        print(f"  declarative:  {pool.declarative}")
        for form in ("question", "instruction"):
            ex = one(pool, form) or (pool.eval_questions[0] if form == "question" and pool.eval_questions else None)
            if ex:
                print(f"  {form + ':':13s} {ex}")
    return 0


@command("templates")
def _templates(args: argparse.Namespace) -> int:
    from . import templates_cmd
    from .data import load_requests

    reqs = load_requests(args.requests)
    lm = None
    if args.model:
        from .models import load_model

        lm = load_model(args.model, **({"device": args.device} if args.device else {}))
    result = templates_cmd.run(reqs, args.out, lm)
    print(templates_cmd.summary(result))
    return 0


@command("editors")
def _editors(args: argparse.Namespace) -> int:
    from .editors import EDITORS, PRESETS
    from .editors.options import REVIVE_TEXT, describe_editor, editor_options

    preset = PRESETS.get(args.model) if args.model else None
    if args.model and preset is None:
        raise GeomprobeError(f"no preset named {args.model!r}; presets: {', '.join(PRESETS)} (any other model: "
                             "layers at 15-30% depth with the defaults)")
    print("Editors (--editor NAME, --editors a,b,c):")
    for name in EDITORS:
        print(f"  {name:12s} {describe_editor(name)}")
    print(f"  {REVIVE_TEXT}")
    where = f"{args.model} preset" if preset else "default (a model's preset may change it)"
    print("\nOptions (--set KEY=VALUE, repeatable; value_* are value optimisation settings):")
    print(f"  {'key':22s} {'type':6s} {where}")
    for key, opt in editor_options().items():
        shown = opt.default_text
        if preset is not None:
            v = getattr(preset.value, key[6:]) if key.startswith("value_") else getattr(preset, key)
            shown = ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
        print(f"  {key:22s} {opt.type_name:6s} {shown:14s} {opt.doc}")
    return 0


@command("toy")
def _toy(args: argparse.Namespace) -> int:
    from .models.builtin import TOY_DIR
    from .toy.train import train_toy

    kinds = ["gpt2", "llama"] if args.kind == "all" else [args.kind]
    for kind in kinds:
        out = Path(args.out) / f"toy-{kind}" if args.out else TOY_DIR / f"toy-{kind}"
        report = train_toy(kind, out, seed=args.seed)
        print(json.dumps({"kind": kind, "out": str(out), **{k: v for k, v in report.items() if k != "history"}},
                         indent=1, default=str))
    return 0


@command("demo")
def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(model=args.model, requests=args.requests, out=Path(args.out))
    return 0


@command("edit")
def _edit(args: argparse.Namespace) -> int:
    from . import editors
    from .data import load_requests
    from .evaluate import evaluate, reference_predictions, summarize, to_markdown
    from .models import load_model

    requests = load_requests(args.requests)
    if args.limit:
        requests = requests[: args.limit]
    editor = editors.get(args.editor, **args.overrides)
    forms = args.form_list
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    weights = {l: lm.rewrite_module(l).weight.detach().clone() for l in range(lm.n_layers)}
    ref = reference_predictions(lm, requests)
    before = evaluate(lm, requests, forms=forms, reference=ref)
    update = editor.compute(lm, requests, log=None)
    with update.applied(lm):
        after = evaluate(lm, requests, forms=forms, reference=ref)
    import torch

    if not all(torch.equal(lm.rewrite_module(l).weight, w) for l, w in weights.items()):
        raise GeomprobeError("the model's weights changed during `edit` (a bug); please report it")
    before["stage"], after["stage"] = "before", "after"
    table = []
    for stage, df in (("before", before), ("after", after)):
        t = summarize(df)
        t.insert(0, "stage", stage)
        table.append(t)
    import pandas as pd

    summary = pd.concat(table, ignore_index=True)
    print(f"{update.editor} on {lm.name}: {len(requests)} requests, layers {list(update.layers)}, "
          f"{update.seconds:.1f} s, peak {update.peak_memory_mb:.0f} MB")
    print(to_markdown(summary))
    from .evaluate import CRITERIA

    crit = after[(after["protocol"] == "prob") & (after["criterion"] != "")].groupby("criterion")["request"].nunique()
    if set(crit.index) - {"beats-true"}:  # say what `prob` compared with where a request has no target_true
        print("prob criterion: " + "; ".join(f"{n} request(s): {CRITERIA.get(c, c)} [{c}]" for c, n in crit.items()))
    from .data.forms import eval_prompts
    from .report.common import not_evaluated_reason

    for r in requests:  # forms without prompts are named, never silently missing from the table
        for form in (f for f in forms if f in ("question", "instruction")):
            if not eval_prompts(r, form, lm.tokenizer):
                print(f"not evaluated: {r.subject} · {r.relation} ({form}): {not_evaluated_reason(r, form)}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        pd.concat([before, after]).to_csv(out / "metrics.csv", index=False)
        summary.to_csv(out / "summary.csv", index=False)
        (out / "summary.md").write_text(to_markdown(summary) + "\n")
        (out / "update.json").write_text(json.dumps({
            "editor": update.editor, "layers": list(update.layers), "seconds": update.seconds,
            "peak_memory_mb": update.peak_memory_mb, "hparams": update.hparams, "columns": list(update.columns),
            "delta_norms": {str(k): v for k, v in update.delta_norms().items()}, "losses": list(update.value.losses),
            "model": update.model}, indent=1, default=str))
        print(f"wrote {out}/metrics.csv, summary.csv, summary.md, update.json")
    return 0


@command("stats")
def _stats(args: argparse.Namespace) -> int:
    from .editors.presets import preset_for
    from .models import load_model
    from .stats import key_covariance

    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    layers = args.layer_tuple or preset_for(lm).layers
    stats = key_covariance(lm, list(layers), corpus=args.corpus, n_tokens=args.n_tokens, max_len=args.max_len,
                           progress=True)
    from .linalg import condition_number, effective_rank

    for layer, s in stats.items():
        print(f"layer {layer}: C {tuple(s.C.shape)} from {s.n_tokens} tokens; condition number "
              f"{condition_number(s.C):.3g}, effective rank {effective_rank(s.C):.1f}")
    return 0


@command("bench")
def _bench(args: argparse.Namespace) -> int:
    from .bench import SECTIONS, run_bench

    only = tuple(o.strip() for o in args.only.split(",")) if args.only else SECTIONS
    run_bench(model=args.model, requests=args.requests, only=only, out=Path(args.out) if args.out else None,
              device=args.device, n_subjects=args.subjects)
    return 0


@command("figures")
def _figures(args: argparse.Namespace) -> int:
    from .pipeline import run_figures

    run_figures(model=args.model, requests=args.requests, only=args.only, out=args.out, quick=args.quick,
                replot=args.replot, device=args.device, dtype=args.dtype, analyses=args.analyses, full=args.full,
                cache=not args.no_cache, everything=args.all, n_subjects=args.subjects,
                **({"log": _log} if is_quiet() else {}))
    return 0


@command("validate")
def _validate(args: argparse.Namespace) -> int:
    from .validate import markdown, validate

    editors = [e.strip() for e in args.editors.split(",") if e.strip()]
    res = validate(args.model, args.requests, editors=editors, subjects=args.subjects, chunk=args.chunk,
                   relations=args.relations or None, per_form=args.per_form or None, out=args.out, seed=args.seed,
                   device=args.device, dtype=args.dtype, log=_log)
    print(markdown(res["table"], "all"))
    c = res["causes"]
    for (editor, form), g in c[c["cause"] != "confirmed"].groupby(["editor", "form"], sort=False):
        shares = ", ".join(f"{r['cause']} {r['share']:.0%}" for _, r in g.iterrows() if r["count"])
        conf = c[(c["editor"] == editor) & (c["form"] == form) & (c["cause"] == "confirmed")]["share"]
        print(f"{editor} · {form}: {int(g['n_failed'].iloc[0])} failing; {shares}; confirmed {float(conf.iloc[0]):.0%}")
    if res["files"]:
        print(f"wrote {', '.join(res['files'])} to {args.out}")
    return 0


@command("diagnose")
def _diagnose(args: argparse.Namespace) -> int:
    from .report.common import IMPORTED_NAME, check_edited
    from .report.diagnose import diagnose
    from .report.render import summary_diagnose

    if args.edited is None:
        if args.name is not None:
            raise GeomprobeError("--name names an edit made elsewhere; pass it with --edited PATH")
        report = diagnose(args.model, args.requests, editor=args.editor, out=args.out, overrides=args.overrides,
                          trials=args.trials, device=args.device, dtype=args.dtype, log=_log)
    else:  # an edit made elsewhere: checked here, before the model loads
        if getattr(args, "editor_given", False):
            raise GeomprobeError("--editor and --edited exclude each other: diagnose one editor, or one edit made "
                                 "elsewhere (`geomprobe compare --editors ... --edited NAME=PATH` runs both)")
        if args.overrides:
            raise GeomprobeError(f"--layers / --set ({', '.join(args.overrides)}) configure an editor; an edit made "
                                 "elsewhere (--edited) brings its own layers and settings")
        name = args.name or IMPORTED_NAME
        check_edited({name: args.edited})
        report = diagnose(args.model, args.requests, out=args.out, edited=args.edited, name=name,
                          trials=args.trials, device=args.device, dtype=args.dtype, log=_log)
    print("\n".join(summary_diagnose(report)))
    return 0


@command("compare")
def _compare(args: argparse.Namespace) -> int:
    from .report.common import check_edited, parse_edited
    from .report.compare import compare
    from .report.render import summary_compare

    edited = check_edited(parse_edited(args.edited or ()), editors=args.editor_list)  # before the model loads
    report = compare(args.model, args.requests, editors=args.editor_list, out=args.out, edited=edited,
                     overrides=args.overrides, trials=args.trials, device=args.device, dtype=args.dtype, log=_log)
    print("\n".join(summary_compare(report)))
    return 0


def _log(message: str) -> None:
    """Status lines of the long commands: stderr, silent under ``--quiet``."""
    if not is_quiet():
        print(message, file=sys.stderr, flush=True)


MODEL_HELP = ("built-in name (toy-gpt2, toy-llama, smollm2-135m, qwen2.5-coder-0.5b: see `geomprobe models`), a "
              "local model directory, or a model hub id")
REQUESTS_HELP = ("built-in set (same-subject, near-duplicates, toy) or a request file (geomprobe JSON, S2RKE, "
                 "CounterFact, EasyEdit, KnowEdit, ZsRE, LoCoMo)")
EDITOR_HELP = "editor name (see `geomprobe editors`): rome, memit, memit-merge, alphaedit, rose, ..., revive(<name>)"
LAYERS_HELP = "edit layers, e.g. 3,4,5 or 3-7 (default: the model's preset)"
SET_HELP = ("editor option on top of the model's preset, repeatable: KEY=VALUE with KEY a field listed by "
            "`geomprobe editors` (e.g. value_clamp=2, lam=50, value_steps=40)")
DEVICE_HELP = "cpu, cuda, cuda:1... (default: CUDA when available, else CPU)"
DTYPE_HELP = "float32, bfloat16 or float16 (default: float32 on CPU, the checkpoint's dtype on CUDA)"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``geomprobe edit: error: ... (see `geomprobe edit --help`)``, exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


class _Given(argparse.Action):
    """Stores the value and records that the option was given (``args.<dest>_given``), so a default can be told
    apart from the same value given explicitly."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after every option's help, except where the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    fmt = {"formatter_class": _HelpFormatter}
    common = _Parser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars or status lines (also: GEOMPROBE_QUIET=1)")
    common.add_argument("--templates", default=argparse.SUPPRESS, metavar="FILE",
                        help="reviewed template pools (as `geomprobe templates` writes them) used everywhere")
    p = _Parser(prog="geomprobe", description="Geometric diagnostics of knowledge editing in LLMs.",
                                epilog="`geomprobe COMMAND --help` for a command's options.", **fmt)
    p.add_argument("-q", "--quiet", action="store_true", default=False,
                   help="no progress bars or status lines (also: GEOMPROBE_QUIET=1)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", dest="global_set",
                   help="editor option for edit/diagnose/compare, as their own --set (see `geomprobe editors`)")
    p.add_argument("--templates", default=None, metavar="FILE",
                   help="reviewed template pools (as `geomprobe templates` writes them) used everywhere: HKI's "
                        "training templates and the question/instruction prompts of evaluation")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(name: str, help: str):
        return sub.add_parser(name, help=help, description=help, parents=[common], **fmt)

    add("models", "list the built-in models, their sizes and where they come from")
    add("relations", "list the relations with built-in template pools, one example per form")
    tp = add("templates", "write the template pools of a request file's relations (train pool for HKI, held-out "
                          "pool for evaluation, and where each comes from) to review and pass back with --templates")
    tp.add_argument("--requests", required=True, help="request file (any supported layout)")
    tp.add_argument("--out", default="templates.json", help="output JSON")
    tp.add_argument("--model", default=None, help="instruction-tuned model that rewrites templates no rule covers "
                                                  "(default: rules only; uncovered relations get a generic pool)")
    tp.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: CUDA when available, else CPU)")
    ed_ = add("editors", "list the editors and the editor options --set accepts, with types and defaults")
    ed_.add_argument("--model", default=None, help="show this model's preset values instead of the defaults "
                                                   "(a preset name, e.g. smollm2-135m; default: the defaults)")
    t = add("toy", "toy worlds: `geomprobe toy train` retrains the shipped toy models")
    t.add_argument("action", choices=["train"], help="what to do")
    t.add_argument("--kind", choices=["gpt2", "llama", "all"], default="all", help="which toy model")
    t.add_argument("--seed", type=int, default=0, help="training seed")
    t.add_argument("--out", default=None, help="directory to write toy-<kind>/ into (default: the package's own)")
    e = add("edit", "apply an editor to a request file; metrics before and after (weights left unchanged)")
    e.add_argument("--model", required=True, help=MODEL_HELP)
    e.add_argument("--requests", required=True, help=REQUESTS_HELP)
    e.add_argument("--editor", default="rose", help=EDITOR_HELP)
    e.add_argument("--layers", default=None, help=LAYERS_HELP)
    e.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    e.add_argument("--forms", default="declarative,paraphrase,question,instruction",
                   help="comma-separated forms to evaluate (locality on neighbourhood prompts comes with them)")
    e.add_argument("--limit", type=int, default=0, help="edit only the first N requests (default: 0 = all)")
    e.add_argument("--out", default=None, help="folder for metrics.csv, summary.csv/.md, update.json "
                                               "(default: print only)")
    s_ = add("stats", "build (or check) the key covariance cache of the edit layers")
    s_.add_argument("--model", required=True, help=MODEL_HELP)
    s_.add_argument("--layers", default=None, help="layers, e.g. 3,4,5 or 3-7 (default: the model's preset)")
    s_.add_argument("--corpus", default="builtin", help="builtin, a .txt/.jsonl file, or a datasets name")
    s_.add_argument("--n-tokens", type=int, default=100_000, help="tokens to estimate C on")
    s_.add_argument("--max-len", type=int, default=128, help="documents are truncated to this many tokens")
    b = add("bench", "performance targets as ratios measured in one run")
    b.add_argument("--model", default="smollm2-135m", help=MODEL_HELP)
    b.add_argument("--requests", default="same-subject", help=REQUESTS_HELP)
    b.add_argument("--only", default=None, help="comma-separated: covariance, editors, tolerance (default: all)")
    b.add_argument("--subjects", type=int, default=10, help="subjects to edit")
    b.add_argument("--out", default=None, help="folder for the bench results (default: print only)")
    b.add_argument("--device", default=None, help=DEVICE_HELP)
    for q in (e, s_):
        q.add_argument("--device", default=None, help=DEVICE_HELP)
        q.add_argument("--dtype", default=None, help=DTYPE_HELP)
    f = add("figures", "regenerate the figure catalogue (analyses/<id>.py -> figures/<id>.*)")
    f.add_argument("--model", default="smollm2-135m", help=MODEL_HELP)
    f.add_argument("--requests", default=None, help=REQUESTS_HELP + " (default: same-subject; toy for toy models)")
    f.add_argument("--only", default=None, help="comma-separated figure ids (default: the core figures: the "
                                                "paper's claims, the main table, the causal diagnosis)")
    f.add_argument("--all", action="store_true", help="every figure of the catalogue (adds ablations, sweeps, "
                                                      "overhead and sequential editing to the core)")
    f.add_argument("--subjects", type=int, default=None, help="subjects of the shared edit batch (default 8; "
                                                              "4 requests each)")
    f.add_argument("--out", default="figures", help="output folder")
    f.add_argument("--quick", action="store_true", help="toy world, few requests: the whole catalogue in minutes")
    f.add_argument("--full", action="store_true", help="the catalogue's own sizes (40 sequential edits, M = 2..10, "
                                                       "REVIVE on RoSE too), every figure: for a GPU")
    f.add_argument("--no-cache", action="store_true", help="re-optimise values even when cached on disk")
    f.add_argument("--replot", action="store_true", help="redraw from the CSVs in --out without loading a model")
    f.add_argument("--analyses", default=None, help="folder of analysis scripts (default: the checkout's analyses/)")
    f.add_argument("--device", default=None, help=DEVICE_HELP)
    f.add_argument("--dtype", default=None, help=DTYPE_HELP)
    dg = add("diagnose", "why an edit fails: ρ, Δ, amplification, conflict, key cosines and a verdict per request "
                         "and form -> report.html/.md/.json")
    dg.add_argument("--editor", default="memit", action=_Given, help=EDITOR_HELP)
    dg.add_argument("--edited", default=None, metavar="PATH",
                    help="diagnose an edit made elsewhere instead of an editor: its saved weights (a save_pretrained "
                         "directory, a .safetensors/.pt/.bin state dict, or a {layer: ΔW} file); --model is the "
                         "unedited model, --requests the requests it wrote (default: none, run --editor)")
    dg.add_argument("--name", default=None, help="the --edited edit's name in the report (default: imported)")
    cp = add("compare", "the same requests through several editors, side by side -> report.html/.md/.json")
    cp.add_argument("--editors", default="memit,memit-merge,alphaedit,rose",
                    help="comma-separated editor names (see `geomprobe editors`)")
    cp.add_argument("--edited", action="append", default=None, metavar="NAME=PATH",
                    help="an edit made elsewhere to compare beside the editors, repeatable: NAME (not an editor's "
                         "name) labels it, PATH is its saved weights as for `diagnose --edited`; --model is the "
                         "unedited model (default: none)")
    for q, default_out in ((dg, "geomprobe-diagnose"), (cp, "geomprobe-compare")):
        q.add_argument("--model", required=True, help=MODEL_HELP)
        q.add_argument("--requests", required=True, help=REQUESTS_HELP)
        q.add_argument("--out", default=default_out, help="report folder")
        q.add_argument("--layers", default=None, help=LAYERS_HELP)
        q.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
        q.add_argument("--trials", type=int, default=10, help="noise draws per radius of the tolerance probe")
        q.add_argument("--device", default=None, help=DEVICE_HELP)
        q.add_argument("--dtype", default=None, help=DTYPE_HELP)
    va = add("validate", "do the diagnose criteria predict failure? every request-form of N subjects under each "
                         "editor: AUC and accuracy on held-out subjects, causes of the failures -> why_forms_fail.png")
    va.add_argument("--model", default="smollm2-135m", help=MODEL_HELP)
    va.add_argument("--requests", default="same-subject", help=REQUESTS_HELP)
    va.add_argument("--editors", default="memit-merge,rose-no-hki,rose,memit", help="comma-separated editor names")
    va.add_argument("--subjects", type=int, default=40, help="subjects (with 2+ requests each, file order)")
    va.add_argument("--relations", type=int, default=2, help="requests per subject (file order; 0 = all)")
    va.add_argument("--per-form", type=int, default=1, help="prompts per form the patches and directional searches "
                                                            "run on (0 = all; the outcome uses every prompt)")
    va.add_argument("--chunk", type=int, default=8, help="subjects edited together (each chunk from the unedited "
                                                         "weights)")
    va.add_argument("--seed", type=int, default=0, help="seed of the fit / held-out subject split")
    va.add_argument("--out", default="figures/validation", help="output folder")
    va.add_argument("--device", default=None, help=DEVICE_HELP)
    va.add_argument("--dtype", default=None, help=DTYPE_HELP)
    d = add("demo", "end-to-end key-geometry demo: model -> requests -> keys -> table + figure")
    d.add_argument("--model", default="smollm2-135m", help=MODEL_HELP)
    d.add_argument("--requests", default="same-subject", help=REQUESTS_HELP)
    d.add_argument("--out", default="figures", help="output folder")
    return p


def _prepare(args: argparse.Namespace) -> None:
    """Every check that needs no model, before any model loads: model name, request file, editor names,
    ``--layers``, ``--set``, forms, counts, dtype and device; then the edit layers against the model's layer count
    (read from its config.json), the request file's contents and what every editor needs of them (all editors of
    ``compare`` before the first computes).  Parsed values land on ``args``."""
    from .editors.options import check_editors, check_model, check_requests, parse_layers, parse_overrides

    cmd = args.cmd
    if getattr(args, "templates", None):
        from .data.forms import load_templates_file

        load_templates_file(args.templates)
    if getattr(args, "model", None) and cmd != "editors" and not getattr(args, "replot", False):
        check_model(args.model)
    if getattr(args, "requests", None):
        check_requests(args.requests)
    if cmd in ("edit", "diagnose"):
        args.editor = check_editors([args.editor])[0]
    if cmd == "compare":  # `--editors ""` with --edited: compare imported edits only
        no_editors = args.edited and not args.editors.strip(" ,")
        args.editor_list = [] if no_editors else check_editors(args.editors)
    if hasattr(args, "layers"):
        args.layer_tuple = parse_layers(args.layers)
    if args.global_set:
        if not hasattr(args, "set"):
            raise GeomprobeError(f"--set is an editor option; `geomprobe {cmd}` takes none (use it with edit, "
                                 "diagnose or compare)")
        args.set = list(args.global_set) + list(args.set or ())
    if hasattr(args, "set"):
        args.overrides = parse_overrides(args.set, args.layers)
    if hasattr(args, "forms"):
        from .evaluate import FORMS

        args.form_list = tuple(f.strip() for f in args.forms.split(",") if f.strip())
        bad = [f for f in args.form_list if f not in FORMS] or ([] if args.form_list else [""])
        if bad:
            raise GeomprobeError(f"--forms {args.forms!r}: unknown form {bad[0]!r}; use a comma-separated subset of "
                                 f"{', '.join(FORMS)}")
    if cmd == "validate":
        check_editors(args.editors)
    for name, low in (("limit", 0), ("trials", 1), ("n_tokens", 1), ("max_len", 1), ("subjects", 1), ("chunk", 1)):
        v = getattr(args, name, None)
        if v is not None and v < low:
            raise GeomprobeError(f"--{name.replace('_', '-')} {v}: must be at least {low}")
    if cmd == "bench" and args.only:
        from .bench import SECTIONS

        bad = [o.strip() for o in args.only.split(",") if o.strip() not in SECTIONS]
        if bad:
            raise GeomprobeError(f"unknown bench section {bad[0]!r}; use {', '.join(SECTIONS)}")
    _check_layer_range(args)
    _check_request_contents(args)
    if getattr(args, "dtype", None) or getattr(args, "device", None):
        from .models.load import _dtype, _resolve_device

        if getattr(args, "dtype", None):
            _dtype(args.dtype)
        if getattr(args, "device", None):
            try:
                _resolve_device(args.device)
            except RuntimeError:
                raise GeomprobeError(f"--device {args.device!r} is not a device; use cpu, cuda or cuda:N") from None


def _check_layer_range(args: argparse.Namespace) -> None:
    """``--layers`` (or ``--set layers=``) inside the model's layers, known from its config.json without loading
    weights (built-in models, local directories, cached hub ids; otherwise checked right after loading)."""
    from .editors.options import check_layers, model_layer_count

    layers = (getattr(args, "overrides", None) or {}).get("layers") or getattr(args, "layer_tuple", None)
    if layers and getattr(args, "model", None):
        flag = "--layers" if getattr(args, "layer_tuple", None) else "--set layers="
        check_layers(layers, model_layer_count(args.model), args.model, flag=flag)


def _check_request_contents(args: argparse.Namespace) -> None:
    """The request file parsed, every evaluation prompt rendered (a subject missing from a query), and what each
    editor needs of the requests — before the model loads, for every editor of ``compare``."""
    if args.cmd not in ("edit", "diagnose", "compare"):
        return
    from .data import load_requests
    from .editors.options import check_requests_for

    reqs = list(load_requests(args.requests))
    if not reqs:
        raise GeomprobeError(f"--requests {args.requests!r} holds no requests")
    if args.cmd == "edit" and args.limit:
        reqs = reqs[: args.limit]
    from .data.forms import eval_prompts

    forms = args.form_list if args.cmd == "edit" else ("declarative", "question", "instruction")
    for r in reqs:
        for form in forms:
            eval_prompts(r, form)
    for name in (args.editor_list if args.cmd == "compare" else [args.editor]):
        check_requests_for(name, reqs)


class _DropDeprecations(logging.Filter):
    """Third-party deprecation chatter (transformers' ``past_key_values`` ... deprecated) that a user cannot act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("deprecated" in msg or "past_key_values" in msg or "will be removed" in msg)


_HF_LOGGERS = ("transformers", "transformers.utils.generic", "transformers.modeling_utils",
               "transformers.generation.utils", "transformers.configuration_utils",
               "transformers.tokenization_utils_base", "transformers.modeling_attn_mask_utils")


def _quiet_third_party() -> Callable[[], None]:
    """Filter third-party deprecation warnings for this CLI run; returns the function that undoes it."""
    catcher = warnings.catch_warnings()
    catcher.__enter__()
    for cat in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=cat, module=r"(transformers|torch|huggingface_hub|accelerate"
                                                               r"|tokenizers|safetensors)(\..*)?$")
    warnings.filterwarnings("ignore", message=r".*past_key_values.*")
    flt = _DropDeprecations()
    loggers = [logging.getLogger(n) for n in _HF_LOGGERS]
    for lg in loggers:
        lg.addFilter(flt)

    def undo() -> None:
        for lg in loggers:
            lg.removeFilter(flt)
        catcher.__exit__(None, None, None)

    return undo


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # bad syntax: one line on stderr (see _Parser.error)
    except SystemExit as e:
        if e.code in (0, None):  # --help
            raise
        return int(e.code) if isinstance(e.code, int) else 2
    previous = set_quiet(True) if args.quiet else None
    undo = _quiet_third_party()
    t0 = time.perf_counter()
    try:
        try:
            _prepare(args)
        except (ValueError, TypeError) as e:  # anything the checks above did not word themselves
            raise GeomprobeError(f"invalid option: {e}") from None
        code = COMMANDS[args.cmd](args)
    except GeomprobeError as e:
        print(f"geomprobe: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("geomprobe: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `geomprobe relations | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep the interpreter's final flush quiet
        return 0
    finally:
        undo()
        if args.quiet:
            set_quiet(previous)
    if args.cmd not in ("models", "relations", "editors") and not args.quiet and not is_quiet():
        print(f"[{args.cmd} done in {time.perf_counter() - t0:.1f} s]", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
