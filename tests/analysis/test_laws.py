"""The published law forms: each recovers the parameters behind synthetic runs, predicts
what its formula says, and is fitted the way its authors fitted it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.interpolate import Akima1DInterpolator

from analysis.fitting import fit, fit_law
from analysis.isoflop import akima_slopes
from analysis.laws import LAWS, Fixed


def grid(noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e10, 7), np.geomspace(1e9, 1e12, 7)))
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"n_params": n, "tokens": d, "noise": rng.normal(0, noise, n.size)})


def test_tied_exponents_recover_the_law_behind_the_runs():
    true = {"E": 1.9, "A": 600.0, "B": 3000.0, "alpha": 0.36}
    df = grid(0.002, seed=1)
    df["loss"] = LAWS["chinchilla_tied"].predict(true, **df) * np.exp(df["noise"])
    f = fit(df, "chinchilla_tied", resamples=50)
    for name, value in true.items():
        assert f.params[name] == pytest.approx(value, rel=0.1), name
        lo, hi = f.intervals()[name]
        assert lo <= value <= hi, name


def test_gadre_form_is_the_tied_law_in_n_and_m_fitted_by_least_squares():
    true = {"E": 1.8, "a": 150.0, "b": 280.0, "alpha": 0.27}
    df = grid()
    df["loss"] = LAWS["gadre"].predict(true, **df)
    n, m = df["n_params"], df["tokens"] / df["n_params"]
    formula = true["E"] + true["a"] / n ** true["alpha"] + true["b"] / (m * n) ** true["alpha"]
    np.testing.assert_allclose(df["loss"], formula)
    f = fit_law(df, "gadre")
    assert LAWS["gadre"].fit_space == "squares"
    for name, value in true.items():
        assert f.params[name] == pytest.approx(value, rel=1e-4), name


def test_the_full_data_constrained_law_follows_its_formula():
    law = LAWS["data_constrained_full"]
    p = {"E": 1.87, "A": 520.0, "alpha": 0.35, "B": 1500.0, "beta": 0.35}
    p.update(R_D_star=15.0, R_N_star=5.0)
    n, d, u = 4e9, 8e10, 1e10  # 8 epochs of 10B tokens, on a model far above N_opt(U)
    g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    n_opt = g * (u * g) ** (p["beta"] / p["alpha"])  # N_opt where D_opt = U
    un = min(n_opt, n)
    n_eff = un + un * 5.0 * (1 - np.exp(-(n / un - 1) / 5.0))
    d_eff = u + u * 15.0 * (1 - np.exp(-(d / u - 1) / 15.0))
    expected = p["E"] + p["A"] / n_eff ** p["alpha"] + p["B"] / d_eff ** p["beta"]
    assert float(law.predict(p, n_params=n, tokens=d, unique_tokens=u)) == pytest.approx(expected)
    assert n_eff < n  # excess parameters are worth less
    # fresh data and a model below N_opt(U): Chinchilla's law itself
    fresh = law.predict(p, n_params=1e8, tokens=1e10, unique_tokens=1e10)
    base = p["E"] + p["A"] / 1e8 ** p["alpha"] + p["B"] / 1e10 ** p["beta"]
    assert float(fresh) == pytest.approx(base)


def test_parameters_held_fixed_are_not_fitted_and_unknown_ones_are_refused():
    true = {"E": 1.8, "A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.37}
    df = grid()
    df["loss"] = LAWS["chinchilla"].predict(true, **df)
    f = fit_law(df, "chinchilla", fixed={"E": 1.8, "alpha": 0.34})
    assert set(f.params) == {"A", "B", "beta"}
    assert f.params["B"] == pytest.approx(2000.0, rel=1e-3)
    assert f.predict(1e8, 1e10) == pytest.approx(
        float(LAWS["chinchilla"].predict(true, n_params=1e8, tokens=1e10))
    )
    with pytest.raises(ValueError, match="no parameter 'gamma'"):
        Fixed(LAWS["chinchilla"], (("gamma", 1.0),))


def test_akima_slopes_are_scipys():
    rng = np.random.default_rng(0)
    for _ in range(100):
        x = np.sort(rng.uniform(0, 10, rng.integers(3, 15)))
        y = rng.normal(0, 1, x.size)
        np.testing.assert_allclose(akima_slopes(x, y), Akima1DInterpolator(x, y)(x, 1), atol=1e-9)
