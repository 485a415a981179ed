"""The Python API (``import analysis``) and the command line give the same fit; the lab's
own tables (``runs.csv``, ``runs.parquet``) read back as the sweep folder they came from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from conftest import SWEEP_LAW, synthetic_sweep  # noqa: E402

import analysis  # noqa: E402
from analysis.cli import main as analyze_main  # noqa: E402
from lab.config.record import DEFAULT_C_CONVENTION, DEFAULT_LOSS, DEFAULT_N_CONVENTION  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return synthetic_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def study(sweep):
    return analysis.analyze(analysis.load_runs(sweep), resamples=50, warn=False)


SOURCES = (".", "runs.csv", "runs.parquet")  # the folder, and the two tables it writes


def test_a_sweep_folder_its_csv_and_its_parquet_load_alike(sweep):
    frames = [analysis.load_runs(sweep / source) for source in SOURCES]
    for df in frames[1:]:
        pd.testing.assert_frame_equal(df, frames[0], check_dtype=False)
        assert df.attrs["conventions"] == frames[0].attrs["conventions"]
    # the same frame is the same fit: the folder's is the study below, the CSV's is fitted
    # by the command line (next test) and compared with it


def test_the_command_line_and_the_api_share_every_default_and_give_the_same_fit(
    sweep, study, tmp_path
):
    out = tmp_path / "cli"
    assert (
        analyze_main(["fit", str(sweep / "runs.csv"), "--bootstrap", "50", "--out", str(out)]) == 0
    )
    cli = json.loads((out / "fit.json").read_text())
    # the API's defaults are the command line's: every convention, the law, the bootstrap seed
    assert study.df.attrs["conventions"] == {
        "n_params": DEFAULT_N_CONVENTION,
        "compute": DEFAULT_C_CONVENTION,
        "loss": DEFAULT_LOSS,
    }
    assert cli["n_points"] == 16 and cli["conventions"] == study.df.attrs["conventions"]
    for name, p in cli["params"].items():
        ours = study.result["params"][name]
        assert (ours["value"], ours["low"], ours["high"]) == pytest.approx(
            (p["value"], p["low"], p["high"]), rel=1e-9
        )
    n_opt = study.result["compute_optimal"][0]["N_opt"]
    assert cli["compute_optimal"][0]["N_opt"] == pytest.approx(n_opt, rel=1e-9)


@pytest.mark.parametrize("source", SOURCES[1:])
def test_table_compare_lr_and_noise_read_the_sweeps_own_tables(sweep, tmp_path, capsys, source):
    path = str(sweep / source)
    assert analyze_main(["table", path]) == 0
    assert "+size=s3,data.tokens=30000000" in capsys.readouterr().out
    out = ["--out", str(tmp_path), "--bootstrap", "0"]
    assert analyze_main(["compare", path, "--by", "model.name", *out]) == 0
    assert len(json.loads((tmp_path / "compare.json").read_text())["groups"]) == 4
    # read, then refused for what the runs hold (no lr sweep, no repeated seeds), not for
    # the kind of input they came in
    assert analyze_main(["lr", path, *out]) == 2
    assert "no learning-rate sweep to read" in capsys.readouterr().err
    assert analyze_main(["noise", path]) == 2
    assert "at least 2 seeds" in capsys.readouterr().err


def test_a_fit_predicts_on_scalars_and_arrays_with_intervals(study):
    fit = study.fit
    assert set(fit.params) == set(SWEEP_LAW)
    lo, hi = fit.intervals(0.95)["alpha"]
    assert lo < fit.params["alpha"] < hi
    one = fit.predict(3e6, 1e8)
    assert isinstance(one, float) and one == pytest.approx(fit.predict(n_params=3e6, tokens=1e8))
    many = fit.predict([3e6, 1e7], [1e8, 1e8])
    assert many.shape == (2,) and many[0] == pytest.approx(one) and many[1] < one
    p = fit.predict_interval(3e6, 1e8)  # a scalar: numpy's AxisError before
    assert isinstance(p.low, float) and p.low < p.predicted < p.high
    half = fit.predict_interval([3e6, 1e7], [1e8, 1e8], level=0.5)
    assert half.low.shape == (2,) and half.high[0] - half.low[0] < p.high - p.low
    with pytest.raises(TypeError, match="n_params"):
        fit.predict(3e6)
    bare = analysis.Fit(fit.law, fit.params, fit.theta, fit.objective, 16, True)
    with pytest.raises(ValueError, match="resamples"):
        bare.intervals()


def test_figures_return_the_figure_draw_on_given_axes_and_save_one_argument_away(study, tmp_path):
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    assert analysis.loss_vs_variables(study, ax=axes[:2]) is fig
    assert analysis.loss_vs_compute(study, ax=axes[2]) is fig
    assert axes[2].get_lines() and axes[0].get_xscale() == "log"
    with pytest.raises(ValueError, match="2 panel"):
        analysis.loss_vs_variables(study, ax=axes[0])
    own = analysis.residuals(study, path=tmp_path / "res")
    assert own is not fig and (tmp_path / "res.png").stat().st_size > 0
    assert (tmp_path / "res.svg").read_text().rstrip().endswith("</svg>")
    plt.close("all")


def test_importing_analysis_loads_no_torch():
    code = "import sys, analysis, analysis.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_lr_reads_a_plain_table_of_runs_like_fit_does(tmp_path, capsys):
    """The one input contract: a table with published column names and a learning-rate
    column is an lr sweep, as a sweep folder is."""
    rows = []
    for n in (1e6, 4e6, 16e6):
        best = 0.01 * (n / 1e6) ** -0.3
        for lr in best * np.array([0.25, 0.5, 1.0, 2.0, 4.0]) * 1.1:
            loss = 3 + 0.05 * np.log(lr / best) ** 2 - 0.1 * np.log10(n)
            rows.append({"N": n, "D": 20 * n, "learning_rate": lr, "L": loss})
    path = tmp_path / "lr_runs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    assert analyze_main(["lr", str(path), "--bootstrap", "20", "--out", str(tmp_path / "a")]) == 0
    result = json.loads((tmp_path / "a" / "lr.json").read_text())
    assert result["law"]["params"]["gamma"]["value"] == pytest.approx(0.3, abs=0.01)
    assert len(result["sweeps"]) == 3
    pd.DataFrame(rows).drop(columns="learning_rate").to_csv(path, index=False)
    assert analyze_main(["lr", str(path)]) == 2
    assert "no learning-rate column" in capsys.readouterr().err
