"""Intervals calibrated on the ladder's own backtests: the conformal quantile, the
extrapolation-error rate κ, coverage out of sample where the law holds and where it bends,
and the choice of runs and law by backtest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.calibration import (
    Calibration,
    conformal_quantile,
    distance,
    fit_kappa,
    local_sigma,
    residual_sigma,
)
from analysis.choice import choose
from analysis.laws import LAWS
from analysis.validity import backtest, backtest_cuts, distinct_sizes, rolling_backtest


def test_conformal_quantile_is_the_finite_sample_rank_and_says_when_too_few():
    scores = np.random.default_rng(0).permutation(np.arange(1.0, 40.0))  # 1..39
    q, enough = conformal_quantile(scores, 0.95)
    assert enough and q == 38.0  # the ceil((39 + 1) * 0.95) = 38th smallest
    q, enough = conformal_quantile(scores[:10], 0.95)
    assert not enough and q == scores[:10].max()


def test_kappa_recovers_the_growth_of_the_error_with_distance():
    rng = np.random.default_rng(1)
    d = rng.uniform(0, 3, 4000)
    sigma, kappa = 0.01, 0.03
    e = rng.normal(0, np.sqrt(sigma**2 + (kappa * d) ** 2))
    assert fit_kappa(e, sigma, 0.0, d) == pytest.approx(kappa, rel=0.1)
    # errors that do not grow with the distance: kappa at its lower bound
    flat = rng.normal(0, sigma, 4000)
    assert fit_kappa(flat, sigma, 0.0, d) < 3e-3


def test_distance_counts_only_what_lies_beyond_the_fitted_runs():
    largest = {"n_params": 1e8, "tokens": 1e10}
    d = distance({"n_params": np.array([1e7, 1e9, 1e9]), "tokens": [1e9, 1e10, 1e11]}, largest)
    assert d[0] == 0 and d[1] == pytest.approx(np.log(10))
    assert d[2] == pytest.approx(np.sqrt(2) * np.log(10))
    cal = Calibration.from_json({"kappa": 0.02, "scores": [0.5, 1.0, 1.5], "folds": 2})
    lo, hi = cal.interval(np.log([2.0, 2.0]), 0.01, 0.0, np.array([0.0, 2.0]), 0.95)
    assert hi[1] - lo[1] > hi[0] - lo[0]  # farther out, wider


def ladder(bend: float, seed: int = 1) -> pd.DataFrame:
    """8 sizes × 5 token counts from Chinchilla's law, bent at large N by ``bend``: the loss
    falls faster than the law extrapolates, by exp(−bend·0.002·ln(N/1e7)²)."""
    rng = np.random.default_rng(seed)
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e10, 8), np.geomspace(1e9, 1e12, 5)))
    loss = (1.8 + 400 / n**0.34 + 2000 / d**0.37) * np.exp(-bend * 0.002 * np.log(n / 1e7) ** 2)
    loss = loss * np.exp(rng.normal(0, 0.005, n.size))
    return pd.DataFrame({"n_params": n, "tokens": d, "compute": 6 * n * d, "loss": loss})


@pytest.mark.parametrize("bend", [0.0, 4.0])
def test_calibrated_intervals_hold_out_of_sample_where_the_bootstrap_does_not(bend):
    law = LAWS["chinchilla"]
    inside = 0
    for seed in (1, 2, 3):  # 25 checks a ladder: one ladder's coverage moves by ±5 points
        rb = rolling_backtest(ladder(bend, seed), law, resamples=100)
        # every fold holds 3 sizes or more (E + A/N^alpha takes three): 5 of the 8 sizes cut
        assert rb["checked"] == 25 and rb["folds"] == 5
        inside += round(rb["coverage"] * rb["checked"])
        if bend == 0:  # the law holds: narrower than the bootstrap's
            assert rb["median_width"] < rb["bootstrap_median_width"]
            assert rb["calibration"]["kappa"] < 5e-3  # the bent ladders': above it
        else:  # the law bends: the bootstrap misses, the calibration widens with distance
            assert rb["bootstrap_coverage"] < min(0.85, rb["coverage"] - 0.1)
            assert rb["calibration"]["kappa"] > 5e-3
            assert rb["median_width"] > rb["bootstrap_median_width"]
    assert inside / 75 >= 0.88


def test_the_backtest_leaves_out_a_faulty_smallest_size_and_keeps_a_clean_ladder_whole():
    df = ladder(0.0)
    clean = choose(df, "chinchilla")
    assert clean["runs"] == "all runs" and clean["law"] == "chinchilla"  # alpha != beta
    assert {c["law"] for c in clean["candidates"]} == {"chinchilla", "chinchilla_tied"}
    faulty = df.copy()
    smallest = faulty["n_params"] == faulty["n_params"].min()
    faulty.loc[smallest, "loss"] *= 1.0 + 0.08 * np.log10(1e12 / faulty.loc[smallest, "tokens"])
    chosen = choose(faulty, "chinchilla", ("chinchilla",))
    assert chosen["runs"] == "without the smallest size"
    assert chosen["mask"].sum() == len(df) - smallest.sum()
    scores = {c["runs"]: c["score"] for c in chosen["candidates"]}
    assert scores["without the smallest size"] < 0.95 * scores["all runs"]


def test_the_scatter_follows_the_runs_tokens_per_parameter():
    """Least-trained runs that sit far from the law widen the scatter near their D/N, not
    at the well-trained targets; one D/N, or no D/N, gives the one scatter."""
    rng = np.random.default_rng(3)
    ratio = np.log(np.repeat([5.0, 10, 20, 40, 80, 160, 320, 640], 6))
    resid = rng.normal(0, np.where(ratio < np.log(6), 0.08, 0.01))
    one = residual_sigma(resid, 4)
    near = local_sigma(resid, 4, ratio, np.log([5.0, 20, 640]))
    assert near[0] > 0.05 and near[2] < 0.015 and near[2] < near[1] < one < near[0]
    assert local_sigma(resid, 4, ratio, None) == one
    assert np.allclose(local_sigma(resid, 4, np.zeros(resid.size), [0.0, 1.0]), one)


def test_sizes_a_float_apart_are_one_size_and_no_cut_splits_them():
    """Tables that compute N per run as a float (Epoch AI's Chinchilla extraction) list one
    model as 73.8200M and 73.8203M: the backtest must not fit one and "predict" the other."""
    df = ladder(0.0)
    twin = df["n_params"].isin(np.unique(df["n_params"])[[1, 3, 6]]) & (df["tokens"] > 1e11)
    df.loc[twin, "n_params"] *= 1 + 3e-6
    assert df["n_params"].nunique() == 11 and distinct_sizes(df["n_params"]).size == 8
    law = LAWS["chinchilla"]
    for cut in backtest_cuts(df, law):
        below = df["n_params"] <= cut
        assert not (
            set(distinct_sizes(df.loc[below, "n_params"]))
            & set(distinct_sizes(df.loc[~below, "n_params"]))
        )
    # the largest size held out whole: every one of its 5 runs, twins included
    held = backtest(df, law)
    assert len(held["relative_error"]) == 5
