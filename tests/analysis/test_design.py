"""``lab-analyze design``: the next runs within a budget that most shrink a target's
interval, better than a uniform grid of the same compute by its criterion and in
simulation, written as a sweep file the lab composes; bad inputs refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_sweep

from analysis.cli import main as analyze_main
from lab.cli.ladder import model_sizes

SIZES = "nano,micro,tiny,mini,small"
TARGET = ["--target", "2.7e6", "1e8"]


def test_design_beats_a_uniform_grid_and_writes_a_sweep_the_lab_composes(tmp_path, capsys):
    from lab.config.composition import compose
    from lab.config.schema import register_configs

    sweep = synthetic_sweep(tmp_path / "runs")
    sweeps = tmp_path / "sweeps"
    name = f"design_{tmp_path.name.replace('-', '_')}"
    ladder = {"sizes": model_sizes, "sweeps_dir": lambda: sweeps}
    argv = ["design", str(sweep), *TARGET, "--budget", "3e14", "--sizes", SIZES]
    argv += ["--simulate", "0", "--bootstrap", "60", "--sweep", name]
    assert analyze_main([*argv, "--out", str(tmp_path / "o")], ladder=ladder) == 0
    result = json.loads((tmp_path / "o" / "design.json").read_text())
    assert 0 < result["compute"] <= 3e14 and len(result["runs"]) >= 2
    assert result["expected_sd_after"] < result["expected_sd_uniform"]
    assert result["expected_sd_after"] < 0.8 * result["expected_sd_before"]
    assert "lab-sweep " + name in capsys.readouterr().out
    # the sweep composes into the runs proposed: each model and token budget, repeats as seeds
    register_configs(sweeps_dir=sweeps)
    files = sorted((sweeps / f"{name}_runs").glob("run*.yaml"))
    assert len(files) == len(result["runs"])
    seen = set()
    for i, proposed in enumerate(result["runs"]):
        cfg = compose([f"+sweeps={name}", f"+{name}_runs=run{i}"])
        assert cfg.model.name == proposed["label"]
        assert cfg.data.tokens == round(proposed["tokens"])
        key = (cfg.model.name, cfg.data.tokens, cfg.train.seed)
        assert key not in seen  # a run chosen twice trains twice, with another seed
        seen.add(key)
    # a second design of that name replaces it; a sweep of the researcher's is never touched
    assert analyze_main([*argv, "--out", str(tmp_path / "o")], ladder=ladder) == 0
    (sweeps / "mine.yaml").write_text("# @package _global_\nmodel:\n  context: 32\n")
    mine = [*argv[:-1], "mine", "--out", str(tmp_path / "o")]
    assert analyze_main(mine, ladder=ladder) == 2
    assert "not written by lab-analyze design" in capsys.readouterr().err
    assert (sweeps / "mine.yaml").read_text().endswith("context: 32\n")


def test_no_proposed_run_takes_more_tokens_than_the_corpus_allows(tmp_path, capsys):
    """By default at most 4 epochs of the corpus the runs record (4e7 unique tokens here),
    or --max-tokens; the uniform grid it is compared with keeps the same bound and still
    spends the design's compute."""
    sweep = synthetic_sweep(tmp_path / "runs")
    ladder = {"sizes": model_sizes, "sweeps_dir": lambda: tmp_path / "sweeps"}
    argv = ["design", str(sweep), *TARGET, "--budget", "3e14", "--sizes", SIZES]
    argv += ["--simulate", "0", "--bootstrap", "40", "--out", str(tmp_path / "o")]
    for extra, most in (([], 1.6e8), (["--max-tokens", "5e6"], 5e6)):
        assert analyze_main([*argv, *extra], ladder=ladder) == 0
        result = json.loads((tmp_path / "o" / "design.json").read_text())
        assert result["max_tokens"] == pytest.approx(most)
        assert max(r["tokens"] for r in result["runs"]) <= most
        grid = result["uniform_grid"]
        assert max(r["tokens"] for r in grid) <= most * (1 + 1e-9)
        assert sum(r["compute"] for r in grid) == pytest.approx(result["compute"], rel=1e-6)
        assert f"at most {most:.3g} tokens a run" in capsys.readouterr().out
    # unbounded, it asks for more than 5e6 tokens: the bound above binds
    assert analyze_main([*argv, "--max-tokens", "0"], ladder=ladder) == 0
    result = json.loads((tmp_path / "o" / "design.json").read_text())
    assert result["max_tokens"] is None and max(r["tokens"] for r in result["runs"]) > 5e6


def test_the_huber_weights_are_the_expectations_of_its_psi():
    """a = E[ψ'(e)] = P(|e| < δ) and b = E[ψ(e)²] for e ~ N(0, σ²), ψ Huber's clip at δ."""
    from analysis.design import _terms

    fit = _ladder_fit()
    rng = np.random.default_rng(1)
    for delta, sigma in ((1e-3, 0.01), (0.02, 0.01), (0.01, 0.01)):
        e = rng.normal(0.0, sigma, 400_000)
        _, a, b = _terms(
            _with_delta(fit, delta),
            fit.params,
            np.array([1e5]),
            np.array([1e7]),
            np.array([sigma]),
        )
        assert a[0] == pytest.approx(np.mean(np.abs(e) < delta), abs=3e-3)
        assert b[0] == pytest.approx(np.mean(np.clip(e, -delta, delta) ** 2), rel=1e-2)


def test_the_criterion_is_the_sandwich_variance_of_the_fitted_estimator():
    """With one scatter σ, Huber's δ far above it is least squares, σ² gᵀ(Σ J Jᵀ)⁻¹ g; far
    below it is least absolute deviations, π/2 times that; a run with more scatter adds
    less, so the variance lies between one σ everywhere and the larger σ everywhere."""
    from analysis.design import _information, _variance, gradients

    fit = _ladder_fit()
    n, d = fit.data["n_params"].to_numpy(), fit.data["tokens"].to_numpy()
    j = gradients(fit.law, fit.params, n, d)
    g = gradients(fit.law, fit.params, np.array([3e6]), np.array([1e8]))
    sigma = 0.01
    ols = sigma**2 * float(g[0] @ np.linalg.solve(j.T @ j, g[0]))

    def variance(delta, s):
        return _variance(_information(_with_delta(fit, delta), [fit.params], n, d, s), g)

    one = np.full(len(n), sigma)
    assert variance(1.0, one) == pytest.approx(ols, rel=1e-3)
    assert variance(1e-6, one) == pytest.approx(np.pi / 2 * ols, rel=1e-3)
    mixed = np.where(d / n < 30, 4 * sigma, sigma)  # the least-trained runs scatter more
    assert variance(1.0, one) < variance(1.0, mixed) < variance(1.0, 4 * one)


def _with_delta(fit, delta: float):
    """The fit as if its Huber threshold were ``delta``."""
    from dataclasses import replace

    return replace(fit, extra={**fit.extra, "delta": delta})


def _ladder_fit():
    """Chinchilla's law fitted (no bootstrap) to 16 noiseless runs of the sweep's law."""
    from conftest import SWEEP_LAW

    from analysis.fitting import fit
    from analysis.laws import resolve_law

    n, d = np.meshgrid([30e3, 100e3, 300e3, 1e6], [1e6, 3e6, 1e7, 3e7])
    n, d = n.ravel(), d.ravel()
    loss = resolve_law("chinchilla").predict(SWEEP_LAW, n_params=n, tokens=d)
    return fit(pd.DataFrame({"n_params": n, "tokens": d, "loss": loss}), "chinchilla", resamples=0)


@pytest.mark.slow  # 6 synthetic ladders x 3 designs, each refitted with bootstrap: ~40 s
def test_in_simulation_the_design_shrinks_the_law_interval_more_than_a_uniform_grid(tmp_path):
    sweep = synthetic_sweep(tmp_path / "runs")
    ladder = {"sizes": model_sizes, "sweeps_dir": lambda: tmp_path / "sweeps"}
    argv = ["design", str(sweep), *TARGET, "--budget", "3e14", "--sizes", SIZES]
    argv += ["--simulate", "6", "--bootstrap", "60", "--out", str(tmp_path / "o")]
    assert analyze_main(argv, ladder=ladder) == 0
    sim = json.loads((tmp_path / "o" / "design.json").read_text())["simulation"]
    assert sim["proposed"]["median_law_width"] < sim["uniform grid"]["median_law_width"]
    assert sim["proposed"]["median_law_width"] < sim["runs so far"]["median_law_width"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget", "1e3", "--sizes", SIZES], "no candidate run fits"),
        (["--budget", "3e14", "--sizes", "nano,huge"], "'huge': neither a number nor a model"),
        (["--budget", "-1"], "must be positive"),
        (["--budget", "3e14", "--max-tokens", "1000"], "no candidate run takes at most 1e+03"),
        (["--budget", "3e14", "--max-tokens", "-5"], "--max-tokens must be positive"),
    ],
)
def test_bad_design_inputs_are_one_line(tmp_path, capsys, extra, message):
    sweep = synthetic_sweep(tmp_path / "runs")
    ladder = {"sizes": model_sizes, "sweeps_dir": lambda: Path(tmp_path / "sweeps")}
    argv = ["design", str(sweep), *TARGET, *extra, "--simulate", "0", "--bootstrap", "20"]
    assert analyze_main(argv, ladder=ladder) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0
    assert not (tmp_path / "sweeps").exists()
