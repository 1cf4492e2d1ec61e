"""Reports on disk and on the terminal: self-contained HTML (figures as base64 PNG), Markdown, JSON.

Each writer returns the paths it wrote: ``report.html``, ``report.md``, ``report.json`` and the figures as
``<name>.png`` next to them (the Markdown links the PNGs; the HTML embeds them and needs nothing else).
Requests are shown by their label (``subject · relation``); case ids stay in the JSON.  The writers and
summaries take the report as :func:`~geomprobe.report.diagnose` returns it (typed records) or as read back
from ``report.json`` (plain dicts).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .records import Measurement, Record, Verdict


# ---- cells ------------------------------------------------------------------------------------------------
def _cell(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞"
        return f"{v:.{digits}g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_cell(x) for x in v)
    return str(v)


def _pct(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.0f}%"


def md_table(rows: Sequence[dict], cols: Sequence[tuple[str, str]]) -> str:
    """Markdown table of ``rows`` with ``cols`` = (key, header); values already strings or formatted here."""
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(k)).replace("|", "\\|").replace("\n", "<br>") for k, _ in cols)
                     + " |")
    return "\n".join(lines)


def html_table(rows: Sequence[dict], cols: Sequence[tuple[str, str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in cols)
    body = []
    for r in rows:
        tr_cls = r.get("_class", "")
        cells = "".join(f"<td>{html.escape(_cell(r.get(k))).replace(chr(10), '<br>')}</td>" for k, _ in cols)
        body.append(f"<tr class='{tr_cls}'>{cells}</tr>")
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.86em}td,th{border:1px solid #ccc;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f3f3f3}tr.fail td:nth-child(3){color:#b3261e;font-weight:600}
tr.ok td:nth-child(3){color:#137333;font-weight:600}
tr.na td:nth-child(3){color:#666;font-style:italic}code{background:#f5f5f5;padding:0 3px}
img{max-width:100%;border:1px solid #eee}.meta{color:#555}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
"""


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=200, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _json_default(o):
    if isinstance(o, Record):
        return o.to_dict()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def _clean(o):
    """NaN / inf → None so the JSON is standard."""
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if isinstance(o, Record):
        return _clean(o.to_dict())
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_json(report: dict, path: Path) -> None:
    path.write_text(json.dumps(_clean(report), indent=1, default=_json_default, allow_nan=False) + "\n")


# ---- shared sections ----------------------------------------------------------------------------------------
_VERDICT_COLS = (("label", "request"), ("form", "form"), ("status", "status"),
                 ("cause", "cause (interventions)"), ("verdict", "paper's account"),
                 ("remedy", "remedy"), ("commands", "try"), ("rule_ids", "rules"))
_MEAS_COLS = (("label", "request"), ("form", "form"), ("criterion", "criterion"), ("before", "wins before"),
              ("after", "wins after"),
              ("rho", "ρ"), ("rho_rel", "ρ/‖h‖"), ("delta", "Δ"), ("ratio", "Δ/ρ"), ("delta_covariance", "Δ cov."),
              ("delta_identity", "Δ iso."), ("amplification", "cov./iso."), ("conflict", "conflict"),
              ("key_cosine", "key cos (form vs decl.)"), ("collision_cosine", "max key cos other subject"),
              ("written_share", "written share of δ"), ("patched_success", "δ patched wins"),
              ("edited_patched_success", "edited + δ wins"), ("crossing_scale", "crossing s"),
              ("miss_norm", "miss ‖v−δ‖"), ("rho_along_drift", "tol. along miss"),
              ("cumulative_drift", "cum. drift"), ("rho_along_delta", "tol. along −δ̂"))
_RULE_COLS = (("id", "rule"), ("when", "fires when"), ("remedy", "remedy"))


def verdicts_of(records) -> list[Verdict]:
    """Verdict records, typed (from a report in memory or read back from JSON)."""
    return [Verdict.from_dict(v) for v in records]


def measurements_of(records) -> list[Measurement]:
    """Measurement records, typed (from a report in memory or read back from JSON)."""
    return [Measurement.from_dict(m) for m in records]


def measurements_frame(records) -> pd.DataFrame:
    """Measurement records as a tidy DataFrame (one row per request and form, columns the record fields)."""
    return pd.DataFrame([m.to_dict() for m in measurements_of(records)])


#: How each verdict status is shown (terminal, Markdown, HTML).
STATUS_TEXT = {"ok": "ok", "fails": "FAIL", "not-evaluable": "n/e"}


def status_of(v: Verdict) -> str:
    """``ok``, ``fails`` or ``not-evaluable``."""
    return v.status or ("ok" if v.ok else "fails")


def _verdict_rows(verdicts: Sequence) -> list[dict]:
    return [{"label": v.label or v.case_id, "form": v.form,
             "status": STATUS_TEXT.get(status_of(v), status_of(v)) if status_of(v) != "not-evaluable"
             else "not evaluated",
             "verdict": v.verdict, "remedy": "; ".join(([v.cause_remedy] if v.cause_remedy else []) + list(v.remedies))
             or "–",
             "cause": (f"{v.cause}: {v.cause_text} ("
                       + (f"confirmed by {v.confirmed_by}" if v.cause_confirmed else "not confirmed") + ")")
             if v.cause else "–",
             "commands": "\n".join(v.remedy_commands) or "–", "rule_ids": ", ".join(v.rules),
             "_class": {"ok": "ok", "fails": "fail"}.get(status_of(v), "na")} for v in verdicts_of(verdicts)]


def _criteria_line(measurements: Sequence) -> str | None:
    """``success criterion: ...`` naming each criterion used other than the request's target_true, with its
    count of request-forms (None when every request-form compared with its target_true)."""
    from .verdict import CRITERIA

    counts: dict[str, int] = {}
    for m in measurements_of(measurements):
        if m.not_evaluated is None and m.criterion:
            counts[m.criterion] = counts.get(m.criterion, 0) + 1
    if not counts or set(counts) == {"beats-true"}:
        return None
    return "success criterion: " + "; ".join(f"{n} request-form(s): {CRITERIA.get(c, c)} [{c}]"
                                             for c, n in counts.items())


def _meas_rows(measurements: Sequence) -> list[dict]:
    rows = []
    for m in (x.to_dict() for x in measurements_of(measurements)):
        m["label"] = m.get("label") or m.get("case_id")
        d, r = m.get("delta"), m.get("rho")
        ratio = (d / r if r else (math.inf if d else None)) if d is not None and r is not None else None
        rows.append({**m, "before": _pct(m.get("success_before")), "after": _pct(m.get("success_after")),
                     "ratio": ratio if m.get("form") != "declarative" else None})
    return rows


def _metric_rows(metrics: Sequence[dict]) -> list[dict]:
    return [{"form": m["form"], "protocol": m["protocol"], "before": _pct(m["before"]), "after": _pct(m["after"]),
             "n": m["n"]} for m in metrics]


_METRIC_COLS = (("form", "form"), ("protocol", "protocol"), ("before", "before"), ("after", "after"),
                ("n", "requests"))


def _html_doc(title: str, parts: list[str]) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n")


def _fig_html(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


_GLOSSARY = ("ρ: tolerance radius of the optimised value on the declarative edit prompt (largest isotropic noise "
             "norm at the last edit layer under which P(target) > 0.5 in more than 90% of draws; criterion prob>0.5, the "
             "paper's). "
             "Δ: ‖ΔW_L (k_form − k_decl)‖, the output deviation the edit produces at the last edit layer when the "
             "prompt changes from the declarative form (mean over the form's prompts); same units as ρ. "
             "Δ cov. / Δ iso.: the same with the MEMIT covariance rule / the isotropic rule on identical K, R. "
             "conflict: mean 1 − |cos| between the gradients of the subject's relations at step 0. "
             "wins: share of the form's prompts on which the target wins under the record's criterion (prob "
             "protocol): beats-true — P(target_new) > P(target_true); beats-greedy — the request has no target_true, "
             "P(target_new) > P(the unedited model's own greedy answer, taken before the edit); prob>0.5 — neither "
             "exists, P(target_new) > 0.5. n/e: not evaluated (the form has no prompts; the verdict says why).")


# ---- diagnose ---------------------------------------------------------------------------------------------------
def diagnose_figures(report: dict) -> dict[str, tuple[Any, str]]:
    from ..plots.report import plot_diagnose

    from .verdict import evaluable

    df = measurements_frame([m for m in measurements_of(report["measurements"]) if evaluable(m)])
    if df.empty:
        return {}
    return {"deviation_vs_radius": (plot_diagnose(df), "Δ per request and form (bars; hatched: the form fails) "
                                    "against the request's ρ (black dash); markers: Δ of the covariance (×) and "
                                    "isotropic (○) rules on the same keys and residuals.")}


def _header(report: dict, kind: str) -> tuple[str, str]:
    m = report["model"]
    who = report["editor"] if kind == "diagnose" else ", ".join(report["editors"])
    title = f"geomprobe {kind}: {who} on {m['name']}"
    meta = (f"model {m['name']} ({m['n_layers']} layers, d={m['d_model']}, m={m['d_mlp']}, {m['dtype']}); "
            f"{len(report['requests'])} requests; overrides {report['overrides'] or 'none'}; "
            f"wall time {report['wall_seconds']:.1f} s; {report['created']}; geomprobe {report['geomprobe_version']}; "
            f"weights bit-identical afterwards: {'yes' if report['weights_unchanged'] else 'NO'}")
    return title, meta


def imported_lines(info: dict | None) -> list[str]:
    """What a report says about an edit made elsewhere (``report["imported"]`` / ``per_editor[e]["imported"]``):
    where it came from, how ρ was measured and what is not available for it; [] for an editor's edit."""
    if not info:
        return []
    exact = info.get("reapply_exact")
    lines = [f"imported edit {info.get('name')} from {info.get('origin')} ({info.get('form')}"
             + ("" if exact is None else f"; re-applied bit for bit: {'yes' if exact else 'no'}")
             + f"; keys {info.get('key_weighting')}): no value optimisation, ρ measured around the δ = z − h the "
               "edited model delivers at its last changed layer"]
    na = info.get("not_available") or {}
    if na:
        lines.append("not available for an imported edit: " + "; ".join(
            f"{k} ({str(v).removeprefix('not available for an imported edit: ')})" for k, v in na.items()))
    return lines


def _edit_line(report: dict) -> str:
    e = report["edit"]
    if report.get("imported"):
        return (f"imported edit {report['editor']} (no value optimisation), layers {report['layers']}, "
                f"‖ΔW‖ per layer {_cell(list(e['delta_norms'].values()))}")
    return (f"editor {report['editor']} (value mode {report['editor_mode']}, rule {report['editor_rule']}), "
            f"layers {report['layers']}, edit time {e['seconds']:.1f} s, peak memory {e['peak_memory_mb']:.0f} MB, "
            f"value loss {_cell(e['value_loss_first'])} → {_cell(e['value_loss_last'])} "
            f"in {e['value_steps_run']} steps")


def write_diagnose(report: dict, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    figs = {name: (_png(fig), cap) for name, (fig, cap) in diagnose_figures(report).items()}
    files = []
    for name, (png, _) in figs.items():
        (out / f"{name}.png").write_bytes(png)
        files.append(str(out / f"{name}.png"))
    title, meta = _header(report, "diagnose")
    edit_line = _edit_line(report)
    extra = imported_lines(report.get("imported"))
    verdicts, meas = _verdict_rows(report["verdicts"]), _meas_rows(report["measurements"])
    md = [f"# {title}", "", meta, "", edit_line, "", *(x for line in extra for x in (line, "")),
          "## Verdicts", "", md_table(verdicts, _VERDICT_COLS), "",
          "## Metrics before / after", "", md_table(_metric_rows(report["metrics"]), _METRIC_COLS), "",
          "## Measurements", "", _GLOSSARY, "", md_table(meas, _MEAS_COLS), "", "## Figures", ""]
    md += [f"![{n}]({n}.png)\n\n{cap}\n" for n, (_, cap) in figs.items()]
    md += ["## Verdict rules", "", "Thresholds: " + ", ".join(f"{k} = {v}" for k, v in report["thresholds"].items()),
           "", md_table(report["rules"], _RULE_COLS), "", "Machine-readable: `report.json` (schema "
           f"`{report['schema']}`)."]
    (out / "report.md").write_text("\n".join(md) + "\n")
    parts = [f"<h1>{html.escape(title)}</h1><p class='meta'>{html.escape(meta)}</p><p>{html.escape(edit_line)}</p>",
             *(f"<p>{html.escape(line)}</p>" for line in extra),
             "<h2>Verdicts</h2>", html_table(verdicts, _VERDICT_COLS, "verdicts"),
             "<h2>Metrics before / after</h2>", html_table(_metric_rows(report["metrics"]), _METRIC_COLS),
             "<h2>Measurements</h2>", f"<p class='meta'>{html.escape(_GLOSSARY)}</p>", html_table(meas, _MEAS_COLS),
             "<h2>Figures</h2>", *(_fig_html(n, png, cap) for n, (png, cap) in figs.items()),
             "<h2>Verdict rules</h2>", "<p>Thresholds: " + html.escape(", ".join(
                 f"{k} = {v}" for k, v in report["thresholds"].items())) + "</p>",
             html_table(report["rules"], _RULE_COLS),
             f"<p class='meta'>Machine-readable: report.json (schema {html.escape(report['schema'])}).</p>"]
    (out / "report.html").write_text(_html_doc(title, parts))
    files = [str(out / "report.html"), str(out / "report.md"), str(out / "report.json"), *files]
    report["files"] = files
    write_json(report, out / "report.json")
    return files


def summary_diagnose(report: dict) -> list[str]:
    """A few terminal lines: one per request and form (ok / FAIL + the verdict), then the files."""
    if report.get("imported"):
        lines = [f"imported edit {report['editor']} on {report['model']['name']}: {len(report['requests'])} requests, "
                 f"changed layers {report['layers']}"]
        lines += ["  " + line for line in imported_lines(report["imported"])]
    else:
        lines = [f"{report['editor']} on {report['model']['name']}: {len(report['requests'])} requests, layers "
                 f"{report['layers']}, edit {report['edit']['seconds']:.1f} s"]
    verdicts = verdicts_of(report["verdicts"])
    width = max([len(v.label or v.case_id or "") for v in verdicts] + [10])
    for v in verdicts:
        lines.append(f"  {v.label or v.case_id:<{width}s} {v.form:<12s} {STATUS_TEXT.get(status_of(v), '?'):<4s}  "
                     f"{v.verdict}")
        pad = " " * (width + 2 + 12 + 1)
        if getattr(v, "cause", None):
            how = ("confirmed by " + v.confirmed_by if getattr(v, "cause_confirmed", None)
                   else "not confirmed: its intervention was not measured")
            lines.append(f"  {pad}cause ({how}): {v.cause}: {v.cause_text}")
            if v.cause_remedy:
                lines.append(f"  {pad}  remedy: {v.cause_remedy}")
        for rem in v.remedies:
            lines.append(f"  {pad}remedy (paper's account): {rem}")
        for cmd in v.remedy_commands:
            lines.append(f"  {pad}  try: {cmd}")
    n_ok = sum(status_of(v) == "ok" for v in verdicts)
    n_na = sum(status_of(v) == "not-evaluable" for v in verdicts)
    crit = _criteria_line(report["measurements"])
    if crit:
        lines.append(crit)
    na = f" ({n_na} more not evaluated: no prompts of that form)" if n_na else ""
    lines.append(f"{n_ok}/{len(verdicts) - n_na} request-forms ok{na}; weights bit-identical afterwards: "
                 f"{'yes' if report['weights_unchanged'] else 'NO'}; wall time {report['wall_seconds']:.1f} s")
    if report.get("files"):
        lines.append("wrote " + ", ".join(report["files"]))
    return lines


# ---- compare ----------------------------------------------------------------------------------------------------
_TABLE_COLS = (("editor", "editor"), ("form", "form"), ("before", "wins before"), ("after", "wins after"),
               ("token_acc", "token acc. after"), ("n_ok", "forms ok"), ("rho", "median ρ"),
               ("rho_rel", "median ρ/‖h‖"), ("delta", "median Δ"), ("delta_lt_rho", "Δ<ρ rate"),
               ("edit_seconds", "edit time (s)"), ("peak_memory_mb", "peak memory (MB)"))


def _table_rows(table: Sequence[dict]) -> list[dict]:
    return [{**t, "before": _pct(t["success_before"]), "after": _pct(t["success_after"]),
             "token_acc": _pct(t["token_acc_after"]), "n_ok": _n_ok_text(t),
             "rho": t["rho_median"], "rho_rel": t["rho_rel_median"], "delta": t["delta_median"],
             "delta_lt_rho": _pct(t["delta_lt_rho_rate"])} for t in table]


def _n_evaluated(t: dict) -> int:
    return int(t["n_requests"]) - int(t.get("n_not_evaluated") or 0)


def _n_ok_text(t: dict) -> str:
    """``ok/evaluated`` (plus ``, n n/e`` when some requests could not be evaluated on the form)."""
    na = int(t.get("n_not_evaluated") or 0)
    return f"{t['n_ok']}/{_n_evaluated(t)}" + (f", {na} n/e" if na else "")


def compare_figures(report: dict) -> dict[str, tuple[Any, str]]:
    from ..plots.report import plot_compare_deviation, plot_compare_metrics

    from .verdict import evaluable

    meas = measurements_frame([m for ed in report["per_editor"].values() for m in measurements_of(ed["measurements"])
                               if evaluable(m)])
    rows = pd.DataFrame([{"editor": t["editor"], "form": t["form"], "before": t["success_before"],
                          "after": t["success_after"]} for t in report["table"]])
    figs = {}
    if not meas.empty:
        figs["deviation_vs_radius"] = (plot_compare_deviation(meas), "Δ on the question and instruction forms per "
                                       "editor (box) against the editor's ρ (shaded: interquartile range over "
                                       "requests; dashed: median).")
    if not rows.empty:
        figs["metrics_before_after"] = (plot_compare_metrics(rows), "Share of prompts on which the edit's target "
                                        "wins after each editor (bars) and before any edit (black tick), per form.")
    return figs


def write_compare(report: dict, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    figs = {name: (_png(fig), cap) for name, (fig, cap) in compare_figures(report).items()}
    files = []
    for name, (png, _) in figs.items():
        (out / f"{name}.png").write_bytes(png)
        files.append(str(out / f"{name}.png"))
    title, meta = _header(report, "compare")
    table = _table_rows(report["table"])
    md = [f"# {title}", "", meta, "", "## Side by side", "", _GLOSSARY, "", md_table(table, _TABLE_COLS), "",
          "## Figures", ""]
    md += [f"![{n}]({n}.png)\n\n{cap}\n" for n, (_, cap) in figs.items()]
    parts = [f"<h1>{html.escape(title)}</h1><p class='meta'>{html.escape(meta)}</p>", "<h2>Side by side</h2>",
             f"<p class='meta'>{html.escape(_GLOSSARY)}</p>", html_table(table, _TABLE_COLS),
             "<h2>Figures</h2>", *(_fig_html(n, png, cap) for n, (png, cap) in figs.items())]
    for ed, d in report["per_editor"].items():
        extra = imported_lines(d.get("imported"))
        what = (f"layers {d['layers']}, edit time {d['edit']['seconds']:.1f} s" if not extra else
                f"changed layers {d['layers']}")
        md += [f"## {ed}: verdicts", "", what, "", *(x for line in extra for x in (line, "")),
               md_table(_verdict_rows(d["verdicts"]), _VERDICT_COLS), "", md_table(_meas_rows(d["measurements"]),
                                                                                  _MEAS_COLS), ""]
        parts += [f"<h2>{html.escape(ed)}: verdicts</h2>",
                  f"<p>{html.escape(what)}</p>", *(f"<p>{html.escape(line)}</p>" for line in extra),
                  html_table(_verdict_rows(d["verdicts"]), _VERDICT_COLS, "verdicts"),
                  html_table(_meas_rows(d["measurements"]), _MEAS_COLS)]
    md += ["## Verdict rules", "", md_table(report["rules"], _RULE_COLS), "",
           f"Machine-readable: `report.json` (schema `{report['schema']}`)."]
    parts += ["<h2>Verdict rules</h2>", html_table(report["rules"], _RULE_COLS),
              f"<p class='meta'>Machine-readable: report.json (schema {html.escape(report['schema'])}).</p>"]
    (out / "report.md").write_text("\n".join(md) + "\n")
    (out / "report.html").write_text(_html_doc(title, parts))
    files = [str(out / "report.html"), str(out / "report.md"), str(out / "report.json"), *files]
    report["files"] = files
    write_json(report, out / "report.json")
    return files


def _pct_ci(t: dict) -> str:
    """``after`` with its subject-bootstrap interval, e.g. ``"62% [38, 88]"`` (no interval: one subject)."""
    lo, hi = t.get("success_after_low"), t.get("success_after_high")
    if lo is None or hi is None:
        return _pct(t["success_after"])
    return f"{_pct(t['success_after'])} [{100 * lo:.0f}, {100 * hi:.0f}]"


def summary_compare(report: dict) -> list[str]:
    lines = [f"{', '.join(report['editors'])} on {report['model']['name']}: {len(report['requests'])} requests",
             f"  {'editor':<12s} {'form':<12s} {'before':>6s} {'after [95% CI]':>17s} {'ok':>5s} {'med ρ':>8s} "
             f"{'med Δ':>8s} {'Δ<ρ':>5s} {'edit s':>7s} {'peak MB':>8s}"]
    for t in report["table"]:
        lines.append(f"  {t['editor']:<12s} {t['form']:<12s} {_pct(t['success_before']):>6s} "
                     f"{_pct_ci(t):>17s} {t['n_ok']:>2d}/{_n_evaluated(t):<2d} "
                     f"{_cell(t['rho_median']):>8s} {_cell(t['delta_median']):>8s} {_pct(t['delta_lt_rho_rate']):>5s} "
                     f"{t['edit_seconds']:>7.1f} {t['peak_memory_mb']:>8.0f}")
    for ed, d in report["per_editor"].items():
        if d.get("imported"):
            lines += [f"  {ed}: " + line for line in imported_lines(d["imported"])]
        fails = [v for v in verdicts_of(d["verdicts"]) if status_of(v) == "fails"]
        if fails:
            lines.append(f"  {ed} fails on:")
        for v in fails:
            lines.append(f"    {v.label or v.case_id} ({v.form}): {', '.join(v.rules)}")
            for cmd in v.remedy_commands:
                lines.append(f"      try: {cmd}")
    first = next(iter(report["per_editor"].values()), None)
    if first is not None:
        na = [v for v in verdicts_of(first["verdicts"]) if status_of(v) == "not-evaluable"]
        if na:
            lines.append(f"  not evaluated ({len(na)} request-form(s), every editor):")
        for v in na:
            lines.append(f"    {v.label or v.case_id} ({v.form}): {v.verdict.split(': ', 1)[-1]}")
        crit = _criteria_line(first["measurements"])
        if crit:
            lines.append("  " + crit)
    n_sub = max((t.get("n_subjects") or 0 for t in report["table"]), default=0)
    lines.append(f"  after: share of requests whose target wins, 95% interval resampling the {n_sub} subjects")
    lines.append(f"weights bit-identical afterwards: {'yes' if report['weights_unchanged'] else 'NO'}; "
                 f"wall time {report['wall_seconds']:.1f} s")
    if report.get("files"):
        lines.append("wrote " + ", ".join(report["files"]))
    return lines


__all__ = ["imported_lines", "measurements_frame", "measurements_of", "md_table", "summary_compare", "summary_diagnose", "write_compare", "write_diagnose", "write_json",
           "verdicts_of"]
