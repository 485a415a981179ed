"""Loss to task error (``analysis.downstream``, ``lab-analyze predict --metric``): the law
y = ε − k·exp(−γL) recovered from simulated runs, an accuracy as well as an error, the
chained interval holding on larger runs, and bad columns refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main as analyze_main
from analysis.downstream import fit_form, fit_metric, value
from analysis.laws import LAWS

LOSS_LAW = {"E": 1.8, "A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.37}
TASK = {"epsilon": 0.85, "k": 2.4, "gamma": 0.75}


def ladder(sizes, seed: int, noise: float = 0.006) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n, d = (a.ravel() for a in np.meshgrid(sizes, np.geomspace(2e8, 2e10, 5)))
    loss = LAWS["chinchilla"].predict(LOSS_LAW, n_params=n, tokens=d)
    loss = loss * np.exp(rng.normal(0, 0.004, n.size))
    err = value(TASK, loss) + rng.normal(0, noise, n.size)
    return pd.DataFrame({"N": n, "D": d, "loss": loss, "err": err, "acc": 1 - err})


def test_the_law_is_recovered_for_an_error_and_an_accuracy():
    rng = np.random.default_rng(1)
    loss = rng.uniform(2.2, 4.5, 60)
    y = value(TASK, loss) + rng.normal(0, 0.002, loss.size)
    params, at_bound = fit_form(loss, y)
    assert not at_bound
    for k in TASK:
        assert params[k] == pytest.approx(TASK[k], rel=0.1), params
    acc, _ = fit_form(loss, 1 - y)  # an accuracy: the same form with k < 0
    assert acc["k"] == pytest.approx(-TASK["k"], rel=0.1) and acc["gamma"] == pytest.approx(
        params["gamma"], rel=1e-6
    )


def test_a_linear_relation_says_the_curvature_is_not_identified():
    loss = np.linspace(2.0, 4.0, 20)
    df = pd.DataFrame({"loss": loss, "m": 0.1 * loss + 0.3, "n_params": np.repeat([1e6, 1e7], 10)})
    fit = fit_metric(df, "m", resamples=10)
    assert any("not identified" in n for n in fit.notes), fit.notes


def test_chained_intervals_hold_on_larger_runs():
    """Fitted on 4 sizes, the metric of runs 3x to 30x larger (up to 0.8 nats below the
    fitted losses), each run's loss predicted with a 95% interval that holds: the chained
    intervals hold them, pooled over 8 ladders, and are wider than the metric law's
    interval at a known loss (the loss step is in them)."""
    inside, wider = [], []
    for seed in range(8):
        small = ladder(np.geomspace(1e6, 3e7, 4), seed=2 * seed).rename(columns={"N": "n_params"})
        large = ladder(np.array([1e8, 3e8, 1e9]), seed=2 * seed + 1)
        fit = fit_metric(small, "err", resamples=100, seed=seed)
        rng = np.random.default_rng(seed)
        sd = 0.01  # the loss predictions' log error, and their 95% interval with it
        predicted = large["loss"].to_numpy() * np.exp(rng.normal(0, sd, len(large)))
        low, high = predicted * np.exp(-1.96 * sd), predicted * np.exp(1.96 * sd)
        y, lo, hi = fit.chain(predicted, low, high, 0.95, seed=seed)
        inside += list((lo <= large["err"]) & (large["err"] <= hi))
        known_lo, known_hi = fit.interval_at_loss(predicted)
        wider += list(hi - lo > known_hi - known_lo)
        assert y == pytest.approx(fit.predict(predicted))
    assert np.mean(inside) >= 0.9, np.mean(inside)
    assert np.mean(wider) >= 0.9


def test_predict_writes_the_metric_beside_the_loss(tmp_path, capsys):
    small = ladder(np.geomspace(1e6, 3e7, 4), seed=0)
    runs = tmp_path / "runs.csv"
    small.to_csv(runs, index=False)
    argv = ["predict", str(runs), "--law", "chinchilla", "--bootstrap", "50", "--metric", "acc"]
    assert analyze_main([*argv, "--at", "1e8", "2e9", "--out", str(tmp_path / "o")]) == 0
    result = json.loads((tmp_path / "o" / "predict.json").read_text())
    (p,) = result["predictions"]
    m = p["metric"]
    assert m["column"] == "acc" and m["low"] < m["predicted"] < m["high"]
    assert m["predicted"] == pytest.approx(value(result["metric"]["params"], p["predicted"]))
    assert result["metric"]["params"]["k"] < 0  # an accuracy rises as the loss falls
    assert result["metric"]["runs"] == len(small) and result["metric"]["backtest"]["folds"] >= 1
    assert "acc from the loss: y(L) = epsilon - k*exp(-gamma*L)" in capsys.readouterr().out


def test_a_bad_metric_column_is_one_line_before_any_fit(tmp_path, capsys):
    runs = tmp_path / "runs.csv"
    ladder(np.geomspace(1e6, 3e7, 4), seed=0).assign(word="x").to_csv(runs, index=False)
    base = ["predict", str(runs), "--at", "1e8", "1e10", "--out", str(tmp_path / "o")]
    assert analyze_main([*base, "--metric", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'nope': no such column" in err and "err" in err
    assert analyze_main([*base, "--metric", "word"]) == 2
    assert "holds no numbers" in capsys.readouterr().err
    assert analyze_main(["predict", "--from", "fit.json", "--at", "1", "1", "--metric", "err"]) == 2
    assert "give PATH" in capsys.readouterr().err
