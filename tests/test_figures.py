"""The figure catalogue: `geomprobe figures --quick` produces every catalogue id; `--replot` redraws from CSVs."""

import json
import shutil

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from geomprobe.cli import main
from geomprobe.pipeline import CATALOGUE, CORE, EXTENDED, SMOKE, analyses_dir, figure, load_analysis, select


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    code = main(["figures", "--quick", "--out", str(out)])
    assert code == 0
    return out


def test_every_catalogue_id_has_an_analysis_script():
    folder = analyses_dir()
    assert sorted(p.stem for p in folder.glob("*.py")) == sorted(CATALOGUE)
    for ident in CATALOGUE:
        mod = load_analysis(ident)
        assert mod.ID == ident and mod.WHAT and mod.PAPER and mod.COLUMNS


def test_quick_run_writes_png_pdf_and_csv_for_every_id(quick_run):
    for ident in CATALOGUE:
        png, pdf, csv = (quick_run / f"{ident}.{ext}" for ext in ("png", "pdf", "csv"))
        assert png.stat().st_size > 5_000, ident
        assert pdf.stat().st_size > 1_000, ident
        df = pd.read_csv(csv)
        assert len(df) > 0, ident
        missing = [c for c in load_analysis(ident).COLUMNS if c not in df.columns]
        assert not missing, (ident, missing)
    index = (quick_run / "index.md").read_text()
    assert all(f"[{i}]({i}.png)" in index for i in CATALOGUE)
    run = json.loads((quick_run / "run.json").read_text())
    assert run["run"]["model"] == "toy-llama" and len(run["figures"]) == len(CATALOGUE)


def test_replot_redraws_from_csvs_alone(quick_run, monkeypatch):
    import geomprobe.models
    import geomprobe.models.load
    from geomprobe.workspace import Workspace

    def no_model(*a, **k):
        raise AssertionError("--replot must not load a model")

    # what the code calls: Workspace.lm does `from .models import load_model` (the package's name), so patch
    # that name, the loader module's, and the workspace's lm itself
    monkeypatch.setattr(geomprobe.models, "load_model", no_model)
    monkeypatch.setattr(geomprobe.models.load, "load_model", no_model)
    monkeypatch.setattr(Workspace, "lm", property(no_model))
    before = {i: (quick_run / f"{i}.png").stat().st_mtime_ns for i in CATALOGUE}
    assert main(["figures", "--replot", "--out", str(quick_run)]) == 0
    for ident in CATALOGUE:
        assert (quick_run / f"{ident}.png").stat().st_mtime_ns > before[ident], ident


def test_replot_refuses_a_csv_without_the_plot_columns(tmp_path, capsys):
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "fig04_key_similarity.csv", index=False)
    assert main(["figures", "--replot", "--only", "fig04_key_similarity", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "lacks columns" in err and len([l for l in err.splitlines() if l.startswith("geomprobe: error")]) == 1


def test_unknown_figure_id_is_one_line_exit_2(capsys):
    assert main(["figures", "--only", "fig99_nope", "--out", "/tmp/unused"]) == 2
    assert "unknown figure id" in capsys.readouterr().err
    assert select("fig04_key_similarity, cov_spectrum") == ["fig04_key_similarity", "cov_spectrum"]


def test_partial_rerun_keeps_the_gallery_and_records_itself(quick_run):
    before = json.loads((quick_run / "run.json").read_text())
    assert main(["figures", "--quick", "--only", "fig04_key_similarity", "--out", str(quick_run)]) == 0
    after = json.loads((quick_run / "run.json").read_text())
    assert len(after["figures"]) == len(CATALOGUE)
    assert after["run"]["total_seconds"] == before["run"]["total_seconds"]
    assert after["run"]["reruns"][-1]["ids"] == ["fig04_key_similarity"]
    assert "Re-run since with `--only fig04_key_similarity`" in (quick_run / "index.md").read_text()


def test_quick_run_is_labelled_a_smoke_test_and_replot_keeps_the_label(quick_run):
    run = json.loads((quick_run / "run.json").read_text())
    assert run["run"]["quick"] is True
    index = (quick_run / "index.md").read_text().splitlines()
    assert index[2].startswith(f"**{SMOKE}.**")  # at the top, under the heading
    rows = [l for l in index if l.startswith("| [")]
    assert len(rows) == len(CATALOGUE) and all(f"| {SMOKE}: " in r for r in rows)
    for ident in CATALOGUE:  # every title says smoke test, none states a finding (the analysis' own title)
        mod = load_analysis(ident)
        df = pd.read_csv(quick_run / f"{ident}.csv")
        fig = figure(mod, df, smoke=SMOKE)
        titles = [fig.get_suptitle()] + [a.get_title() for a in fig.axes]
        main_title = next(t for t in titles if t)
        assert main_title.startswith(SMOKE), (ident, main_title)
        own = figure(mod, df)  # the same CSV, not in smoke mode: the analysis' verdict title
        own_title = next(t for t in [own.get_suptitle()] + [a.get_title() for a in own.axes] if t)
        assert not own_title.startswith("SMOKE") and own_title not in titles, ident
        plt.close(fig)
        plt.close(own)
    assert main(["figures", "--replot", "--only", "fig06_ablation", "--out", str(quick_run)]) == 0
    index = (quick_run / "index.md").read_text()
    assert index.splitlines()[2].startswith(f"**{SMOKE}.**")
    assert f"| {SMOKE}: " in next(l for l in index.splitlines() if l.startswith("| [fig06_ablation]"))


def test_a_full_run_index_has_no_smoke_label(tmp_path):
    from geomprobe.pipeline import _write_index

    (tmp_path / "run.json").write_text(json.dumps({"run": {"model": "smollm2-135m", "quick": False}, "figures": [
        {"id": "fig04_key_similarity", "what": "w", "paper": "p", "headline": "h", "seconds": 1.0}]}))
    _write_index(tmp_path, [], None, 0.0, replot=True)
    assert "SMOKE" not in (tmp_path / "index.md").read_text()


def test_analysis_script_entry_parses_its_own_options(capsys, tmp_path):
    """``python analyses/<id>.py`` parses its options without geomprobe.cli (no import circle)."""
    from geomprobe.pipeline import main as script_main

    with pytest.raises(SystemExit) as e:
        script_main(str(analyses_dir() / "fig04_key_similarity.py"), ["--replot", "--out", str(tmp_path)])
    assert e.value.code == 2 and "is missing" in capsys.readouterr().err


def test_main_job_is_the_core_and_all_is_the_catalogue():
    assert select(None, everything=False) == list(CORE)
    assert select(None) == list(CATALOGUE)
    assert set(CORE) | set(EXTENDED) == set(CATALOGUE) and not set(CORE) & set(EXTENDED)
    # every figure that decides one of the paper's claims is in the main job
    from geomprobe.claims import CLAIMS

    assert {c.figure for c in CLAIMS} <= set(CORE)


def test_a_run_with_another_set_up_marks_the_figures_it_kept(quick_run, tmp_path):
    folder = tmp_path / "figs"
    shutil.copytree(quick_run, folder)
    assert main(["figures", "--quick", "--subjects", "3", "--only", "fig04_key_similarity", "--out",
                 str(folder)]) == 0
    run = json.loads((folder / "run.json").read_text())
    assert run["run"]["settings"]["n_subjects"] == 3 and "reruns" not in run["run"]
    kept = {f["id"]: f for f in run["figures"]}
    assert "set_up" not in kept["fig04_key_similarity"]
    assert all(f["set_up"]["settings"]["n_subjects"] == 2 for i, f in kept.items() if i != "fig04_key_similarity")
    index = (folder / "index.md").read_text()
    assert index.count("*earlier run*: 2 subjects") == len(CATALOGUE) - 1
    # a replot keeps each figure's own set-up
    assert main(["figures", "--replot", "--out", str(folder)]) == 0
    assert (folder / "index.md").read_text().count("*earlier run*: 2 subjects") == len(CATALOGUE) - 1


def test_an_interrupted_run_keeps_the_figures_it_made(tmp_path, monkeypatch):
    import types

    from geomprobe import pipeline

    real = pipeline.load_analysis

    def load(ident, folder=None):
        mod = real(ident, folder)
        if ident != "fig13_key_orthogonality_layers":
            return mod
        broken = types.ModuleType(mod.__name__)
        broken.__dict__.update(mod.__dict__)
        broken.compute = lambda ws: (_ for _ in ()).throw(KeyboardInterrupt())  # Ctrl-C in the second figure
        return broken

    monkeypatch.setattr(pipeline, "load_analysis", load)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_figures(quick=True, only="fig04_key_similarity,fig13_key_orthogonality_layers", out=tmp_path,
                             log=lambda s: None)
    run = json.loads((tmp_path / "run.json").read_text())
    assert [f["id"] for f in run["figures"]] == ["fig04_key_similarity"]
    assert run["run"]["unfinished"] == "1 of 2 figures so far"
    assert "**Unfinished run** (1 of 2 figures so far)" in (tmp_path / "index.md").read_text()
    monkeypatch.setattr(pipeline, "load_analysis", real)
    pipeline.run_figures(quick=True, only="fig04_key_similarity,fig13_key_orthogonality_layers", out=tmp_path,
                         log=lambda s: None)
    run = json.loads((tmp_path / "run.json").read_text())
    assert "unfinished" not in run["run"] and len(run["figures"]) == 2
    assert "Unfinished" not in (tmp_path / "index.md").read_text()
