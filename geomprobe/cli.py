"""The ``geomprobe`` command.  Bad input: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from .errors import GeomprobeError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def deco(fn):
        COMMANDS[name] = fn
        return fn
    return deco


@command("models")
def _models(args: argparse.Namespace) -> int:
    from .models.builtin import BUILTIN, TOY_DIR, dir_size

    for name, b in BUILTIN.items():
        path = TOY_DIR / name
        size = f"{dir_size(path) / 1e6:.1f} MB on disk" if path.is_dir() else "~98 MB GGUF, ~540 MB cached fp32"
        print(f"{name:14s} {b.architecture}\n{'':14s} {b.origin}; {size}")
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


def _layers(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        if "-" in text and "," not in text:
            lo, hi = text.split("-")
            return tuple(range(int(lo), int(hi) + 1))
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise GeomprobeError(f"--layers {text!r} is not a list like 4,5,6 or a range like 4-8") from None


@command("edit")
def _edit(args: argparse.Namespace) -> int:
    import geomprobe as gp
    from .evaluate import evaluate, reference_predictions, summarize, to_markdown  # noqa: F811

    lm = gp.load_model(args.model, dtype=args.dtype, device=args.device)
    requests = gp.load_requests(args.requests)
    if args.limit:
        requests = requests[: args.limit]
    overrides = {}
    if args.layers:
        overrides["layers"] = _layers(args.layers)
    editor = gp.editors.get(args.editor, **overrides)
    forms = tuple(args.forms.split(","))
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
    import geomprobe as gp
    from .editors.presets import preset_for
    from .stats import key_covariance

    lm = gp.load_model(args.model, dtype=args.dtype, device=args.device)
    layers = _layers(args.layers) or preset_for(lm).layers
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

    only = tuple(args.only.split(",")) if args.only else SECTIONS
    bad = [o for o in only if o not in SECTIONS]
    if bad:
        raise GeomprobeError(f"unknown bench section {bad[0]!r}; use {', '.join(SECTIONS)}")
    run_bench(model=args.model, requests=args.requests, only=only, out=Path(args.out) if args.out else None,
              device=args.device, n_subjects=args.subjects)
    return 0


@command("figures")
def _figures(args: argparse.Namespace) -> int:
    from .pipeline import run_figures

    run_figures(model=args.model, requests=args.requests, only=args.only, out=args.out, quick=args.quick,
                replot=args.replot, device=args.device, dtype=args.dtype, analyses=args.analyses, full=args.full,
                cache=not args.no_cache)
    return 0


def _overrides(items: Sequence[str] | None, layers: str | None) -> dict:
    """``--set KEY=VALUE`` editor options (numbers parsed; ``a,b`` → tuple) plus ``--layers``."""
    out: dict = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise GeomprobeError(f"--set {item!r} is not KEY=VALUE (e.g. --set value_clamp=2 or --set lam=50)")

        def num(t: str):
            for cast in (int, float):
                try:
                    return cast(t)
                except ValueError:
                    pass
            return t

        out[key.strip()] = tuple(num(t) for t in text.split(",")) if "," in text else num(text.strip())
    if layers:
        out["layers"] = _layers(layers)
    return out


@command("diagnose")
def _diagnose(args: argparse.Namespace) -> int:
    from .report.diagnose import check_editors, diagnose
    from .report.render import summary_diagnose

    check_editors([args.editor])
    report = diagnose(args.model, args.requests, editor=args.editor, out=args.out,
                      overrides=_overrides(args.set, args.layers), trials=args.trials, device=args.device,
                      dtype=args.dtype, log=lambda s: print(s, file=sys.stderr))
    print("\n".join(summary_diagnose(report)))
    return 0


@command("compare")
def _compare(args: argparse.Namespace) -> int:
    from .report.compare import compare
    from .report.diagnose import check_editors
    from .report.render import summary_compare

    editors = check_editors(args.editors.split(","))
    report = compare(args.model, args.requests, editors=editors, out=args.out,
                     overrides=_overrides(args.set, args.layers), trials=args.trials, device=args.device,
                     dtype=args.dtype, log=lambda s: print(s, file=sys.stderr))
    print("\n".join(summary_compare(report)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geomprobe", description="Geometric diagnostics of knowledge editing in LLMs.")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("models", help="list the built-in models, their sizes and where they come from")
    t = sub.add_parser("toy", help="toy worlds: `geomprobe toy train` retrains the shipped toy models")
    t.add_argument("action", choices=["train"])
    t.add_argument("--kind", choices=["gpt2", "llama", "all"], default="all")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="directory to write toy-<kind>/ into (default: the package's own)")
    e = sub.add_parser("edit", help="apply an editor to a request file; metrics before and after")
    e.add_argument("--model", required=True)
    e.add_argument("--requests", required=True, help="built-in name (same-subject, toy...) or a request file")
    e.add_argument("--editor", default="rose")
    e.add_argument("--layers", default=None, help="edit layers, e.g. 3,4,5 or 3-7 (default: the model's preset)")
    e.add_argument("--forms", default="declarative,paraphrase,question,instruction")
    e.add_argument("--limit", type=int, default=0, help="edit only the first N requests")
    e.add_argument("--out", default=None)
    s_ = sub.add_parser("stats", help="build (or check) the key covariance cache of the edit layers")
    s_.add_argument("--model", required=True)
    s_.add_argument("--layers", default=None)
    s_.add_argument("--corpus", default="builtin", help="builtin, a .txt/.jsonl file, or a datasets name")
    s_.add_argument("--n-tokens", type=int, default=100_000)
    s_.add_argument("--max-len", type=int, default=128)
    b = sub.add_parser("bench", help="performance targets as ratios measured in one run")
    b.add_argument("--model", default="smollm2-135m")
    b.add_argument("--requests", default="same-subject")
    b.add_argument("--only", default=None, help="comma-separated: covariance, editors, tolerance")
    b.add_argument("--subjects", type=int, default=10)
    b.add_argument("--out", default=None)
    b.add_argument("--device", default=None)
    for q in (e, s_):
        q.add_argument("--device", default=None)
        q.add_argument("--dtype", default=None)
    f = sub.add_parser("figures", help="regenerate the figure catalogue (analyses/<id>.py -> figures/<id>.*)")
    f.add_argument("--model", default="smollm2-135m")
    f.add_argument("--requests", default=None, help="built-in name or request file (default: same-subject; toy "
                                                    "for toy models)")
    f.add_argument("--only", default=None, help="comma-separated figure ids")
    f.add_argument("--out", default="figures")
    f.add_argument("--quick", action="store_true", help="toy world, few requests: the whole catalogue in minutes")
    f.add_argument("--full", action="store_true", help="the catalogue's own sizes (40 sequential edits, M = 2..10, "
                                                       "REVIVE on RoSE too): for a GPU")
    f.add_argument("--no-cache", action="store_true", help="re-optimise values even when cached on disk")
    f.add_argument("--replot", action="store_true", help="redraw from the CSVs in --out without loading a model")
    f.add_argument("--analyses", default=None, help="folder of analysis scripts (default: the checkout's analyses/)")
    f.add_argument("--device", default=None)
    f.add_argument("--dtype", default=None)
    dg = sub.add_parser("diagnose", help="why an edit fails: ρ, Δ, amplification, conflict, key cosines and a "
                                         "verdict per request and form -> report.html/.md/.json")
    dg.add_argument("--editor", default="memit")
    cp = sub.add_parser("compare", help="the same requests through several editors, side by side -> "
                                        "report.html/.md/.json")
    cp.add_argument("--editors", default="memit,memit-merge,alphaedit,rose", help="comma-separated editor names")
    for q, default_out in ((dg, "geomprobe-diagnose"), (cp, "geomprobe-compare")):
        q.add_argument("--model", required=True)
        q.add_argument("--requests", required=True, help="built-in name (same-subject, toy...) or a request file")
        q.add_argument("--out", default=default_out, help=f"report folder (default: ./{default_out})")
        q.add_argument("--layers", default=None, help="edit layers, e.g. 3,4,5 or 3-7 (default: the model's preset)")
        q.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="editor option on top of the preset, repeatable (value_clamp=2, lam=50, value_steps=40)")
        q.add_argument("--trials", type=int, default=10, help="noise draws per radius of the tolerance probe")
        q.add_argument("--device", default=None)
        q.add_argument("--dtype", default=None)
    d = sub.add_parser("demo", help="end-to-end key-geometry demo: model -> requests -> keys -> table + figure")
    d.add_argument("--model", default="smollm2-135m")
    d.add_argument("--requests", default="same-subject")
    d.add_argument("--out", default="figures")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        code = COMMANDS[args.cmd](args)
    except GeomprobeError as e:
        print(f"geomprobe: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("geomprobe: interrupted", file=sys.stderr)
        return 130
    if args.cmd not in ("models",):
        print(f"[{args.cmd} done in {time.perf_counter() - t0:.1f} s]", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
