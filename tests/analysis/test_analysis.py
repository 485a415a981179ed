"""Every law, approaches 1 and 2, the backtest and the design warnings, on synthetic runs
drawn from known laws."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from analysis import approaches
from analysis.cli import main as analyze_main
from analysis.fitting import fit_law
from analysis.laws import LAWS
from analysis.load import load_runs
from analysis.study import analyze
from analysis.validity import backtest, design_warnings

CHIN = {"E": 1.8, "A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.37}


N_GRID, D_GRID = np.geomspace(1e7, 1e10, 7), np.geomspace(1e9, 1e12, 7)


def grid(n=N_GRID, d=D_GRID) -> pd.DataFrame:
    N, D = (a.ravel() for a in np.meshgrid(n, d))
    return pd.DataFrame(
        {"run": [f"r{i}" for i in range(N.size)], "n_params": N, "tokens": D, "compute": 6 * N * D}
    )


def with_loss(df, law, params, noise=0.002, seed=0):
    rng = np.random.default_rng(seed)
    out = df.copy()
    clean = LAWS[law].predict(params, **{v: df[v] for v in LAWS[law].variables})
    out["loss"] = clean * np.exp(rng.normal(0, noise, len(df)))
    return out


@pytest.mark.parametrize(
    "law, truth, tol",
    [
        ("n", {"E": 1.5, "A": 60.0, "alpha": 0.3}, {"alpha": 0.05, "E": 0.05}),
        ("d", {"E": 1.5, "B": 200.0, "beta": 0.3}, {"beta": 0.05, "E": 0.05}),
        ("c", {"E": 1.5, "A": 2000.0, "alpha": 0.15}, {"alpha": 0.03, "E": 0.05}),
        ("n_pure", {"A": 20.0, "alpha": 0.076}, {"alpha": 0.005, "A": 2.0}),
        ("d_pure", {"B": 30.0, "beta": 0.095}, {"beta": 0.005, "B": 3.0}),
        ("c_pure", {"A": 60.0, "alpha": 0.05}, {"alpha": 0.005, "A": 6.0}),
        (
            "kaplan_nd",
            {"N_c": 8.8e13, "D_c": 5.4e13, "alpha_N": 0.076, "alpha_D": 0.095},
            {"alpha_N": 0.01, "alpha_D": 0.01},
        ),
    ],
)
def test_every_law_recovers_known_parameters(law, truth, tol):
    runs = grid()
    if len(LAWS[law].variables) == 1:
        runs = runs.drop_duplicates(LAWS[law].variables[0])
    fit = fit_law(with_loss(runs, law, truth), law)
    for name, t in tol.items():
        assert abs(fit.params[name] - truth[name]) <= t, (
            f"{name}: {fit.params[name]} vs {truth[name]}"
        )


def isoflop_runs(budgets=(1e18, 1e19, 1e20, 1e21), span=10.0, k=9, noise=0.0, seed=0):
    rows = []
    for c in budgets:
        n_opt = approaches.chinchilla_optimum(CHIN, [c])["N_opt"][0]
        for n in np.geomspace(n_opt / span, n_opt * span, k):
            rows.append(
                {"run": f"C{c:.0e}-N{n:.3g}", "n_params": n, "tokens": c / (6 * n), "compute": c}
            )
    return with_loss(pd.DataFrame(rows), "chinchilla", CHIN, noise=max(noise, 1e-9), seed=seed)


def test_chinchilla_optimum_solves_the_constrained_minimum():
    c = 1e21
    opt = approaches.chinchilla_optimum(CHIN, [c])
    ns = np.geomspace(opt["N_opt"][0] / 3, opt["N_opt"][0] * 3, 2001)
    loss = LAWS["chinchilla"].predict(CHIN, n_params=ns, tokens=c / (6 * ns))
    assert abs(np.log(ns[np.argmin(loss)] / opt["N_opt"][0])) < 0.01
    assert opt["a"] == pytest.approx(0.37 / 0.71) and opt["b"] == pytest.approx(0.34 / 0.71)


def test_approach_2_recovers_the_exponents_of_the_law_behind_the_runs():
    result = approaches.isoflop(isoflop_runs(noise=0.001))
    assert abs(result["a"] - 0.37 / 0.71) < 0.03
    assert abs(result["b"] - 0.34 / 0.71) < 0.03
    assert len(result["minima"]) == 4 and not result["notes"]


def test_approach_2_drops_a_minimum_at_the_edge_and_warns_of_too_few_budgets():
    runs = isoflop_runs(budgets=(1e19, 1e20))
    lopsided = runs[runs["n_params"] <= runs.groupby("compute")["n_params"].transform("median")]
    with pytest.warns(UserWarning) as caught, pytest.raises(ValueError, match="2 compute budgets"):
        approaches.isoflop(lopsided)
    text = " ".join(str(w.message) for w in caught)
    assert "outside the grid" in text and "only 0 IsoFLOP budget" in text


def test_approach_1_follows_the_compute_optimal_frontier():
    runs = with_loss(
        grid(np.geomspace(1e6, 1e10, 25), np.geomspace(1e8, 1e12, 25)), "chinchilla", CHIN, 1e-9
    )
    result = approaches.envelope(runs)
    assert abs(result["a"] - 0.37 / 0.71) < 0.08 and abs(result["b"] - 0.34 / 0.71) < 0.08


def test_backtest_predicts_held_out_largest_models():
    runs = with_loss(grid(), "chinchilla", CHIN, noise=0.002)
    bt = backtest(runs, LAWS["chinchilla"])
    assert bt["held_out"].startswith("n_params = 1e+10") and len(bt["relative_error"]) == 7
    assert bt["mean_abs_relative_error"] < 0.01


def test_constant_tokens_per_parameter_is_flagged():
    n = np.geomspace(1e7, 1e10, 8)
    runs = pd.DataFrame({"run": range(8), "n_params": n, "tokens": 20 * n, "compute": 120 * n * n})
    runs = with_loss(runs, "chinchilla", CHIN)
    assert any("constant D/N ratio" in w for w in design_warnings(runs, LAWS["chinchilla"]))


def test_study_gives_intervals_for_every_parameter_and_derived_quantity():
    runs = with_loss(grid(), "chinchilla", CHIN, noise=0.003)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = analyze(runs, "chinchilla", resamples=200, seed=1)
    params = study.result["params"]
    assert set(params) == {"E", "A", "B", "alpha", "beta", "a", "b"}
    for name, p in params.items():
        assert p["low"] <= p["value"] <= p["high"], name
    assert params["alpha"]["low"] < 0.34 < params["alpha"]["high"]
    row = study.result["compute_optimal"][0]
    assert set(row) == {
        "compute",
        "N_opt",
        "D_opt",
        "tokens_per_param",
        "loss",
        "loss_prediction_interval",
    }
    assert row["N_opt"]["low"] < row["N_opt"]["value"] < row["N_opt"]["high"]
    # a run's loss scatters about the law: its interval is wider than the law's own
    lo, hi = row["loss_prediction_interval"]
    assert lo < row["loss"]["low"] <= row["loss"]["high"] < hi


def test_parquet_and_jsonl_inputs_load_like_csv(tmp_path):
    runs = with_loss(grid(), "chinchilla", CHIN)
    runs.to_parquet(tmp_path / "runs.parquet")
    runs.to_json(tmp_path / "runs.jsonl", orient="records", lines=True)
    a, b = load_runs(tmp_path / "runs.parquet"), load_runs(tmp_path / "runs.jsonl")
    assert len(a) == len(b) == len(runs)
    np.testing.assert_allclose(a["loss"], b["loss"])


def test_report_command_writes_fit_figures_and_markdown(tmp_path, capsys):
    runs = isoflop_runs(noise=0.002)
    runs.to_csv(tmp_path / "runs.csv", index=False)
    out = tmp_path / "out"
    assert (
        analyze_main(
            ["report", str(tmp_path / "runs.csv"), "--out", str(out), "--bootstrap", "100"]
        )
        == 0
    )
    fit = json.loads((out / "fit.json").read_text())
    assert {"E", "A", "B", "alpha", "beta", "a", "b"} <= set(fit["params"])
    assert all({"value", "low", "high"} <= set(p) for p in fit["params"].values())
    assert fit["approach_2"] and abs(fit["approach_2"]["a"] - 0.37 / 0.71) < 0.05
    for name in (
        "loss_vs_n_and_d",
        "loss_vs_compute",
        "isoflop",
        "optimal_allocation",
        "residuals",
    ):
        assert (out / f"{name}.png").stat().st_size > 10_000 and (out / f"{name}.svg").exists()
    report = (out / "report.md").read_text()
    assert "## Backtest" in report and "![isoflop](isoflop.png)" in report
    assert "backtest:" in capsys.readouterr().out


def test_analysis_never_imports_torch():
    import subprocess
    import sys

    code = (
        "import sys, analysis.cli, analysis.study, analysis.plot, analysis.report; "
        "sys.exit('torch' in sys.modules)"
    )
    assert (
        subprocess.run(
            [sys.executable, "-c", code], cwd=str(__import__("pathlib").Path(__file__).parents[2])
        ).returncode
        == 0
    )
