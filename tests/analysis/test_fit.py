"""Scaling-law fits recover known laws; the Chinchilla runs reproduce published fits."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.bootstrap import bootstrap_fit, interval
from analysis.fitting import fit_law
from analysis.load import load_runs
from analysis.optim import lbfgs_batched

CHINCHILLA = Path(__file__).resolve().parents[3] / "shared" / "data" / "chinchilla"
TRUE = {"E": 1.8, "A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.37}


def synthetic(law_params: dict, noise: float, seed: int, n_side: int = 8) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    N, D = np.meshgrid(np.geomspace(1e7, 1e10, n_side), np.geomspace(1e9, 1e12, n_side))
    N, D = N.ravel(), D.ravel()
    p = law_params
    loss = p["E"] + p.get("A", 0) / N ** p.get("alpha", 0) + p.get("B", 0) / D ** p.get("beta", 0)
    loss = loss * np.exp(rng.normal(0, noise, loss.size))
    return pd.DataFrame({"n_params": N, "tokens": D, "compute": 6 * N * D, "loss": loss})


def test_lbfgs_batched_solves_many_quadratics_and_rosenbrock():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, 3))

    def quad(x, rows):
        d = x - centers[rows]
        return (d**2 * [1, 10, 100]).sum(1), 2 * d * [1, 10, 100]

    res = lbfgs_batched(quad, np.zeros((50, 3)))
    np.testing.assert_allclose(res.x, centers, atol=1e-5)

    def rosen(x, rows):
        a, b = x[:, 0], x[:, 1]
        f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
        g = np.stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)], 1)
        return f, g

    res = lbfgs_batched(rosen, np.array([[-1.2, 1.0], [2.0, 2.0]]), max_iter=2000)
    np.testing.assert_allclose(res.x, 1.0, atol=1e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_chinchilla_form_recovers_known_parameters_from_noisy_data(seed):
    df = synthetic(TRUE, noise=0.003, seed=seed)
    fit = fit_law(df, "chinchilla")
    p = fit.params
    assert abs(p["alpha"] - TRUE["alpha"]) < 0.03
    assert abs(p["beta"] - TRUE["beta"]) < 0.03
    assert abs(p["E"] - TRUE["E"]) < 0.05
    assert 0.5 < p["A"] / TRUE["A"] < 2 and 0.5 < p["B"] / TRUE["B"] < 2
    # the fitted law predicts the noiseless losses to within the noise
    clean = synthetic(TRUE, noise=0.0, seed=seed)
    pred = fit.predict(n_params=clean.n_params, tokens=clean.tokens)
    assert np.abs(np.log(pred / clean.loss)).max() < 0.01


def test_single_variable_law_recovers_known_parameters():
    truth = {"E": 1.5, "A": 50.0, "alpha": 0.3}
    df = synthetic(truth, noise=0.002, seed=3).drop_duplicates("n_params")
    p = fit_law(df, "n").params
    assert abs(p["alpha"] - 0.3) < 0.05 and abs(p["E"] - 1.5) < 0.05


def test_fewer_points_than_parameters_is_an_error():
    df = synthetic(TRUE, noise=0.0, seed=0).head(4)
    with pytest.raises(ValueError, match="5 parameters but only 4 data points"):
        fit_law(df, "chinchilla")


def test_bad_rows_are_dropped_with_a_warning_naming_them(tmp_path):
    df = synthetic(TRUE, noise=0.0, seed=0).head(8)
    df["run"] = [f"r{i}" for i in range(8)]
    df.loc[2, "loss"] = np.nan
    df.loc[5, "tokens"] = -1
    df.loc[6, "n_params"] = np.inf
    path = tmp_path / "runs.csv"
    df.to_csv(path, index=False)
    with pytest.warns(UserWarning, match=r"dropped 3 row.*r2, r5, r6"):
        loaded = load_runs(path)
    assert len(loaded) == 5


@pytest.mark.skipif(
    not CHINCHILLA.exists(), reason=f"{CHINCHILLA} is absent (the shared data folder)"
)
def test_approach_3_reproduces_epoch_refit_of_chinchilla_with_intervals():
    d = pd.read_csv(CHINCHILLA / "svg_extracted_data.csv")
    d = d.sort_values("loss").iloc[:-5]  # Epoch's recipe: drop the 5 highest-loss runs
    df = pd.DataFrame(
        {
            "n_params": d["Model Size"],
            "tokens": d["Training FLOP"] / (6 * d["Model Size"]),
            "compute": d["Training FLOP"],
            "loss": d["loss"],
        }
    )
    assert len(df) == 240
    start = time.perf_counter()
    fit = fit_law(df, "chinchilla")
    samples = bootstrap_fit(df, fit, resamples=4000, seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"fit + 4,000 bootstrap refits took {elapsed:.0f} s"
    # Epoch AI (Besiroglu et al. 2024), Huber-likelihood refit
    p = fit.params
    assert abs(p["alpha"] - 0.348) <= 0.003
    assert abs(p["beta"] - 0.366) <= 0.003
    assert abs(p["E"] - 1.817) <= 0.003
    assert abs(p["A"] / 482.01 - 1) <= 0.03
    assert abs(p["B"] / 2085.43 - 1) <= 0.05
    # their 95% intervals: A 285-744, B 1042-5810, E 1.769-1.871, α 0.317-0.373, β 0.331-0.415
    epoch = {
        "A": (285, 744, 0.1),
        "B": (1042, 5810, 0.15),
        "E": (1.769, 1.871, 0.01),
        "alpha": (0.317, 0.373, 0.01),
        "beta": (0.331, 0.415, 0.01),
    }
    for name, (lo, hi, tol) in epoch.items():
        mine = interval([s[name] for s in samples])
        rel = name in ("A", "B")
        assert abs(mine[0] - lo) <= (tol * lo if rel else tol), f"{name} low {mine[0]:.4g} vs {lo}"
        assert abs(mine[1] - hi) <= (tol * hi if rel else tol), f"{name} high {mine[1]:.4g} vs {hi}"
    a = np.array([s["beta"] / (s["alpha"] + s["beta"]) for s in samples])
    assert abs(p["beta"] / (p["alpha"] + p["beta"]) - 0.513) < 0.005
    assert 0.015 < a.std() < 0.025  # their standard error: 0.020
