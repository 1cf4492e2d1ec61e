"""The figure catalogue: `geomprobe figures --quick` produces every catalogue id; `--replot` redraws from CSVs."""

import json

import pandas as pd
import pytest

from geomprobe.cli import main
from geomprobe.pipeline import CATALOGUE, analyses_dir, load_analysis, select


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
    import geomprobe.models.load as load

    def no_model(*a, **k):
        raise AssertionError("--replot must not load a model")

    monkeypatch.setattr(load, "load_model", no_model)
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
