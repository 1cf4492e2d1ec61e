"""``geomprobe bench``: performance targets measured side by side in one run, printed as ratios.

Sections (``--only``):

* ``covariance`` — all edit layers in one pass vs one pass per layer (early-stopping and full-model
  per-layer baselines), and the plain forward throughput.
* ``editors`` — RoSE vs MEMIT-Merge on the same batch: wall time and peak memory (paper Fig. 18:
  RoSE 13.1 s / 22.1 GB vs MEMIT-Merge 15.0 s / 24.7 GB on a 7B model).
* ``tolerance`` — the tolerance radius by the paper's procedure vs the fast estimator (prefix-cached) over
  ≥ 10 subjects: wall-time ratio (target ≥ 100×) and the largest disagreement in units of the reference step.
* ``hki`` — RoSE's HKI value optimisation on the built-in batch (one subject, 4 relations) with vs without
  prefix caching (:mod:`geomprobe.prefix`): seconds per request, ratio (target ≥ 3×) and the largest
  difference of the optimised δ relative to its norm (exactness).
* ``evaluation`` — the main table's evaluation (``prob``, ``token_acc``, ``gen`` on every form, locality
  reference included) of the built-in batch: plain padded batches with a pass per target / continuation / answer,
  vs the chat-template frame shared (:mod:`geomprobe.shared`), vs that plus one pass per prompt for all of them
  (:mod:`geomprobe.prompt_pass`): seconds per prompt, ratio plain / both (target ≥ 2×) and the largest
  difference of any metric value (exactness).
* ``interventions`` — diagnose's causal chain (δ patched and the δ-scaling curve in the unedited and the edited
  model, the tolerance along −δ̂ and along the miss; :func:`geomprobe.probes.transfer_tests`,
  :func:`~geomprobe.probes.directional_tolerance`) on the first prompt of each form of 2 subjects' requests, with
  each prompt's prefix prepared alone vs 16 prompt rows per padded forward (:func:`geomprobe.prefix.prepare_many`):
  seconds per prompt, ratio and the largest difference of any probability (exactness).
* ``catalogue`` — the catalogue's wall time per figure, read from ``figures/run.json`` (what the last
  ``geomprobe figures`` run measured; nothing is re-run).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

SECTIONS = ("covariance", "editors", "tolerance", "hki", "evaluation", "interventions", "catalogue")


def _first_per_subject(requests, n: int):
    seen, out = set(), []
    for r in requests:
        if r.subject not in seen:
            seen.add(r.subject)
            out.append(r)
        if len(out) == n:
            break
    return out


def _subjects(requests, n: int) -> list[str]:
    """The first ``n`` subjects of ``requests`` in file order."""
    return list(dict.fromkeys(r.subject for r in requests))[:n]


def _subject_batch(requests, n: int = 4):
    """The paper's Fig. 18 batch: ``n`` requests of the first subject with at least ``n`` relations."""
    subject = next(s for s in dict.fromkeys(r.subject for r in requests) if sum(r.subject == s for r in requests) >= n)
    return [r for r in requests if r.subject == subject][:n]


def bench_editors(lm, requests, names: Sequence[str] = ("memit-merge", "rose"), n_tokens: int = 20_000) -> pd.DataFrame:
    """Edit time and peak memory per editor on the same batch (covariance cache built before timing)."""
    from . import editors
    from .stats import key_covariance

    cfg = editors.preset_for(lm).with_(n_tokens=n_tokens)
    key_covariance(lm, list(cfg.layers), corpus=cfg.corpus, n_tokens=cfg.n_tokens, max_len=cfg.max_len,
                   progress=False)  # C is cached statistics, not editing work: build it once up front
    rows = []
    for name in names:
        upd = editors.get(name, config=cfg).compute(lm, requests)
        rows.append({"editor": name, "seconds": upd.seconds, "peak_memory_mb": upd.peak_memory_mb,
                     "value_seconds": upd.value.seconds, "steps_run": upd.value.steps_run,
                     "n_requests": len(requests), "n_columns": len(upd.columns)})
    return pd.DataFrame(rows)


def bench_tolerance(lm, requests, n_subjects: int = 10, trials: int = 10, editor: str = "memit") -> pd.DataFrame:
    """Reference vs fast tolerance radius on one request per subject, same noise directions."""
    from . import editors
    from .probes.tolerance import tolerance_radius

    reqs = _first_per_subject(requests, n_subjects)
    upd = editors.get(editor, config=editors.preset_for(lm).with_(n_tokens=5_000)).compute(lm, reqs)
    out = []
    for method in ("reference", "fast"):
        t0 = time.perf_counter()
        df = tolerance_radius(lm, upd, trials=trials, method=method)
        df["total_seconds"] = time.perf_counter() - t0
        out.append(df)
    return pd.concat(out, ignore_index=True)


def bench_hki(lm, requests, steps: int | None = None) -> dict[str, Any]:
    """HKI value optimisation with vs without prefix caching on the same requests, same settings."""
    from dataclasses import replace

    from . import editors
    from .editors.value import optimize_values

    cfg = editors.get("rose").resolve_config(lm)
    vc = cfg.value if steps is None else replace(cfg.value, steps=steps)
    optimize_values(lm, requests[:1], cfg.layers[-1], "hki", replace(vc, steps=1))  # warm-up (context prefixes)
    out: dict[str, Any] = {"n_requests": len(requests), "steps": vc.steps}
    results = {}
    for cached in (False, True):
        t0 = time.perf_counter()
        results[cached] = optimize_values(lm, requests, cfg.layers[-1], "hki", replace(vc, prefix_cache=cached))
        out["cached_s" if cached else "full_s"] = time.perf_counter() - t0
    a, b = results[False].delta, results[True].delta
    out["ratio"] = out["full_s"] / out["cached_s"]
    out["max_rel_delta_diff"] = float((a - b).norm() / a.norm().clamp_min(1e-12))
    out["steps_run"] = [results[False].steps_run, results[True].steps_run]
    return out


def bench_evaluation(lm, requests, max_new_tokens: int = 4) -> dict[str, Any]:
    """The unedited model's evaluation of ``requests`` (reference included), same settings, three ways: ``plain``
    (every target, argmax continuation and greedy answer runs its prompt again, padded batches), ``shared``
    (the chat-template frame once per batch, :mod:`geomprobe.shared`) and ``pass`` (the default: besides, each
    prompt once for all of them, :mod:`geomprobe.prompt_pass`).  ``ratio`` = plain / pass."""
    from . import prompt_pass, shared
    from .evaluate import evaluate, reference_predictions

    out: dict[str, Any] = {"n_requests": len(requests)}
    frames = {}
    for arm, sh, pp in (("plain", False, False), ("shared", True, False), ("pass", True, True)):
        with shared.enabled(sh), prompt_pass.enabled(pp):
            t0 = time.perf_counter()
            ref = reference_predictions(lm, requests, max_new_tokens=max_new_tokens)
            frames[arm] = evaluate(lm, requests, reference=ref, generation=True, max_new_tokens=max_new_tokens)
            out[f"{arm}_s"] = time.perf_counter() - t0
    a = frames["plain"]
    keys = [c for c in a.columns if c != "value"]
    out["n_rows"] = len(a)
    out["n_prompts"] = int(a.groupby(["request", "form", "prompt_idx"]).ngroups)
    out["max_value_diff"] = max(float((m["value_x"] - m["value_y"]).abs().max())
                                for m in (a.merge(frames[arm], on=keys) for arm in ("shared", "pass")))
    out["ratio"] = out["plain_s"] / out["pass_s"]
    out["ratio_shared"] = out["plain_s"] / out["shared_s"]
    return out


def bench_interventions(lm, requests, editor: str = "memit-merge", n_tokens: int | None = None) -> dict[str, Any]:
    """The causal chain's interventions with every prompt alone (its prefix prepared alone, its searches' calls
    each a forward) vs grouped (:data:`~geomprobe.probes.tolerance.PRIME_ROWS` prompts' prefixes per padded forward,
    :data:`~geomprobe.probes.tolerance.GROUP_PROMPTS` prompts' search calls per resumed forward), same edit
    (``n_tokens``: covariance sample of the edit, default the preset's)."""
    from . import editors
    from .probes import tolerance
    from .probes.tolerance import directional_tolerance
    from .probes.transfer import transfer_tests

    cfg = editors.preset_for(lm)
    upd = editors.get(editor, config=cfg if n_tokens is None else cfg.with_(n_tokens=n_tokens)).compute(lm, requests)
    knobs = (tolerance.PRIME_ROWS, tolerance.GROUP_PROMPTS)
    out: dict[str, Any] = {"n_requests": len(requests), "editor": editor, "grouped_rows": knobs[0],
                           "grouped_prompts": knobs[1]}
    frames = {}
    try:
        for arm, (rows, group) in (("alone", (1, 1)), ("grouped", knobs)):
            tolerance.PRIME_ROWS, tolerance.GROUP_PROMPTS = rows, group
            t0 = time.perf_counter()
            base, _ = transfer_tests(lm, upd, criterion="auto", per_form=1)
            direc = directional_tolerance(lm, upd, criterion="auto", per_form=1)
            out[f"{arm}_s"] = time.perf_counter() - t0
            frames[arm] = (base, direc)
    finally:
        tolerance.PRIME_ROWS, tolerance.GROUP_PROMPTS = knobs
    (a, da), (b, db) = frames["alone"], frames["grouped"]
    cols = [c for c in a.columns if c.startswith("p_")]
    out["n_prompts"] = len(a)
    out["max_prob_diff"] = float((a[cols] - b[cols]).abs().max().max())
    radii = [c for c in da.columns if c.startswith("rho_along")]
    out["same_successes"] = bool((a["patched_success"] == b["patched_success"]).all()
                                 and (da["predicted"] == db["predicted"]).all())
    gap = (da[radii] - db[radii]).abs().to_numpy() / da["step"].to_numpy()[:, None]
    out["max_radius_diff_steps"] = float(pd.DataFrame(gap).max().max()) if gap.size else 0.0
    out["ratio"] = out["alone_s"] / out["grouped_s"]
    return out


def bench_catalogue(run_json: Path = Path("figures/run.json")) -> list[dict[str, Any]]:
    """Per figure id: wall seconds of the last catalogue run (``figures/run.json``)."""
    if not Path(run_json).is_file():
        return []
    data = json.loads(Path(run_json).read_text("utf-8"))
    return [{"id": f["id"], "seconds": float(f.get("seconds") or 0)} for f in data.get("figures", [])]


def run_bench(model: str = "smollm2-135m", requests: str = "same-subject", only: Sequence[str] = SECTIONS,
              out: Path | None = None, device: str | None = None, n_subjects: int = 10) -> dict[str, Any]:
    from . import editors
    from .data import load_requests
    from .models import load_model
    from .stats import bench_covariance

    lm = load_model(model, device=device)
    reqs = load_requests(requests)
    layers = list(editors.preset_for(lm).layers)
    report: dict[str, Any] = {"model": lm.name, "device": str(lm.input_device), "dtype": str(lm.dtype)}
    if "covariance" in only:
        c = bench_covariance(lm, layers, n_tokens=4_000, max_len=128)
        report["covariance"] = c
        print(f"covariance, layers {layers}, {c['n_tokens']} tokens: one pass {c['one_pass_s']:.2f} s | per layer, "
              f"early stop {c['per_layer_s']:.2f} s ({c['speedup']:.2f}x) | per layer, full model "
              f"{c['per_layer_full_s']:.2f} s ({c['speedup_vs_full']:.2f}x; target >= {0.8 * len(layers):.1f}x) | "
              f"one pass {c['one_pass_tok_s']:.0f} tok/s vs plain forward {c['forward_tok_s']:.0f} tok/s")
    if "editors" in only:
        # the paper's Fig. 18 batch: 4 requests; here one subject with its 4 relations (a same-subject batch)
        batch = _subject_batch(reqs)
        subjects = [batch[0].subject]
        e = bench_editors(lm, batch)
        report["editors"] = e.to_dict("records")
        m, r = e.set_index("editor").loc["memit-merge"], e.set_index("editor").loc["rose"]
        print(f"editors, {len(batch)} requests / {len(subjects)} subjects: RoSE {r.seconds:.1f} s, "
              f"{r.peak_memory_mb:.0f} MB | MEMIT-Merge {m.seconds:.1f} s, {m.peak_memory_mb:.0f} MB | "
              f"time ratio RoSE/MEMIT-Merge {r.seconds / m.seconds:.2f} (target <= 1; paper 13.1/15.0 = 0.87)")
    if "tolerance" in only:
        t = bench_tolerance(lm, reqs, n_subjects=n_subjects)
        ref, fast = t[t.method == "reference"].reset_index(), t[t.method == "fast"].reset_index()
        ratio = ref["total_seconds"].iloc[0] / fast["total_seconds"].iloc[0]
        gap = float(((ref["value"] - fast["value"]).abs() / ref["step"]).max())
        report["tolerance"] = {"n": len(ref), "reference_s": float(ref["total_seconds"].iloc[0]),
                               "fast_s": float(fast["total_seconds"].iloc[0]), "ratio": float(ratio),
                               "max_disagreement_steps": gap, "reference_evals": int(ref["evaluations"].sum()),
                               "fast_evals": int(fast["evaluations"].sum()),
                               "per_request": [{"subject": s, "reference_steps": round(a / st, 3),
                                                "fast_steps": round(b / st, 3), "reference_evals": int(ea),
                                                "fast_evals": int(eb)} for s, a, b, st, ea, eb in
                                               zip(ref["subject"], ref["value"], fast["value"], ref["step"],
                                                   ref["evaluations"], fast["evaluations"])]}
        print(f"tolerance radius, {len(ref)} subjects: reference {ref['total_seconds'].iloc[0]:.1f} s vs fast "
              f"{fast['total_seconds'].iloc[0]:.2f} s -> {ratio:.0f}x (target >= 100x); largest disagreement "
              f"{gap:.2f} reference steps (target <= 1)")
    if "hki" in only:
        h = bench_hki(lm, _subject_batch(reqs))
        report["hki"] = h
        n = h["n_requests"]
        print(f"HKI value optimisation, {n} requests / 1 subject, {h['steps']} steps: full forward "
              f"{h['full_s'] / n:.1f} s/request vs prefix-cached {h['cached_s'] / n:.1f} s/request -> "
              f"{h['ratio']:.2f}x (target >= 3x); |δ_full − δ_cached| / |δ| = {h['max_rel_delta_diff']:.1e}")
    if "evaluation" in only:
        ev = bench_evaluation(lm, _subject_batch(reqs))
        report["evaluation"] = ev
        n = ev["n_prompts"]
        print(f"evaluation, {ev['n_requests']} requests, {n} prompts (prob, token_acc, gen; locality reference "
              f"included): plain {1e3 * ev['plain_s'] / n:.0f} ms/prompt, shared frame "
              f"{1e3 * ev['shared_s'] / n:.0f} ms/prompt ({ev['ratio_shared']:.2f}x), shared frame + one pass per "
              f"prompt {1e3 * ev['pass_s'] / n:.0f} ms/prompt -> {ev['ratio']:.2f}x (target >= 2x); largest "
              f"metric difference {ev['max_value_diff']:.1e}")
    if "interventions" in only:
        iv = bench_interventions(lm, [r for s in _subjects(reqs, 2) for r in reqs if r.subject == s])
        report["interventions"] = iv
        n = iv["n_prompts"]
        print(f"interventions ({iv['editor']}, {iv['n_requests']} requests, {n} prompts: transfer tests and two "
              f"directional tolerances): every prompt alone {iv['alone_s'] / n:.2f} s/prompt vs grouped "
              f"({iv['grouped_rows']} prefixes per padded forward, {iv['grouped_prompts']} prompts' search calls "
              f"per resumed forward) {iv['grouped_s'] / n:.2f} s/prompt -> {iv['ratio']:.2f}x; largest probability "
              f"difference {iv['max_prob_diff']:.1e}, radii differ by at most {iv['max_radius_diff_steps']:.0f} "
              f"grid steps, same successes: {iv['same_successes']}")
    if "catalogue" in only:
        cat = bench_catalogue()
        report["catalogue"] = cat
        if cat:
            total = sum(c["seconds"] for c in cat)
            print(f"catalogue (last `geomprobe figures` run, figures/run.json): {total / 60:.1f} min in all; "
                  + ", ".join(f"{c['id']} {c['seconds']:.0f} s" for c in sorted(cat, key=lambda c: -c["seconds"])))
        else:
            print("catalogue: no figures/run.json here; run `geomprobe figures` first")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "bench.json").write_text(json.dumps(report, indent=1, default=str))
    return report
