"""Approaches 1 and 2 as a careful study computes them, and fits that report their own
health: local IsoFLOP optima on lopsided curves, dropped budgets, degenerate resamples,
one-budget envelopes, parameters at a bound, tables that are empty or not numbers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import approaches
from analysis.cli import main as analyze_main
from analysis.load import load_runs
from analysis.study import analyze

TRUE = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}
A_TRUE = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
G = (TRUE["alpha"] * TRUE["A"] / (TRUE["beta"] * TRUE["B"])) ** (1 / (TRUE["alpha"] + TRUE["beta"]))


def loss(n, c):
    d = c / (6 * n)
    return TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]


def n_opt(c):
    return G * (c / 6) ** A_TRUE


def lopsided_isoflops(noise=0.001, seed=0) -> pd.DataFrame:
    """One ladder of model sizes for every budget, as real studies train: at small budgets
    the optimum sits near the small end and the large models, barely trained, climb
    steeply (up to 3000× the optimal size); at large budgets the curve is balanced."""
    rng = np.random.default_rng(seed)
    ladder = np.geomspace(2e6, 3e10, 24)
    rows = []
    for c in np.geomspace(1e17, 1e21, 11):
        top = n_opt(c) * max(3.0, 3000 * (1e17 / c) ** 0.7)
        for n in ladder[(ladder > n_opt(c) / 3) & (ladder < top)]:
            rows.append({"n_params": n, "tokens": c / (6 * n), "compute": c, "budget": c})
    df = pd.DataFrame(rows)
    df["loss"] = loss(df["n_params"], df["compute"]) * np.exp(rng.normal(0, noise, len(df)))
    df["run"] = [f"r{i}" for i in range(len(df))]
    return df


def test_approach_2_finds_each_optimum_locally_on_lopsided_curves():
    runs = lopsided_isoflops()
    result = approaches.isoflop(runs, warn=False, method="local")
    assert len(result["minima"]) == 11 and not result["dropped"]
    for m in result["minima"]:
        assert abs(m["N_opt"] / n_opt(m["compute"]) - 1) < 0.10, m
    assert abs(result["a"] - A_TRUE) < 0.02
    assert abs(result["b"] - (1 - A_TRUE)) < 0.02


def test_the_default_reads_lopsided_curves_locally_and_centred_ones_by_one_parabola():
    runs = lopsided_isoflops()
    result = approaches.isoflop(runs, warn=False)  # auto
    assert abs(result["a"] - A_TRUE) < 0.02 and abs(result["b"] - (1 - A_TRUE)) < 0.02
    chosen = {m["compute"]: m["method"] for m in result["minima"]}
    # the small budgets climb steeply to one side: read locally; the largest are balanced
    assert chosen[min(chosen)] == "akima" and chosen[max(chosen)] == "hoffmann"
    assert all(m["why"] for m in result["minima"])
    hoffmann = approaches.isoflop(runs, warn=False, method="hoffmann")
    assert abs(hoffmann["a"] - A_TRUE) > 0.03  # one parabola through a lopsided curve misleads


@pytest.mark.parametrize("noise", [0.0, 0.003])
def test_on_centred_curves_the_default_is_the_textbook_method_to_the_last_digit(noise):
    rng = np.random.default_rng(1)
    rows = []
    for c in np.geomspace(1e18, 1e22, 9):  # 9 sizes per budget, centred near its optimum
        centre = n_opt(c) * np.exp(rng.uniform(-0.2, 0.2))
        for n in np.geomspace(centre / 4, centre * 4, 9):
            rows.append({"n_params": n, "tokens": c / (6 * n), "compute": c, "budget": c})
    runs = pd.DataFrame(rows)
    runs["loss"] = loss(runs["n_params"], runs["compute"]) * np.exp(rng.normal(0, noise, len(runs)))
    auto, textbook = (approaches.isoflop(runs, warn=False, method=m) for m in ("auto", "hoffmann"))
    assert auto["methods_used"] == {"hoffmann": 9}
    assert auto["a"] == textbook["a"] and abs(auto["a"] - A_TRUE) < 0.01


def test_approach_2_akima_finds_the_optima_too():
    result = approaches.isoflop(lopsided_isoflops(noise=0.0), warn=False, method="akima")
    for m in result["minima"]:
        assert abs(m["N_opt"] / n_opt(m["compute"]) - 1) < 0.10
    assert abs(result["a"] - A_TRUE) < 0.02


def test_dropped_budgets_are_reported_in_fit_json(tmp_path):
    runs = lopsided_isoflops()
    small = runs["compute"] == runs["compute"].min()
    keep = ~small | (runs["n_params"] >= runs.loc[small, "n_params"].iloc[2])  # min at the edge
    path = tmp_path / "runs.csv"
    runs[keep].to_csv(path, index=False)
    assert analyze_main(["fit", str(path), "--bootstrap", "20", "--out", str(tmp_path / "a")]) == 0
    fit = json.loads((tmp_path / "a" / "fit.json").read_text())
    dropped = fit["approach_2"]["dropped"]
    assert [d["compute"] for d in dropped] == [1e17]
    assert "smallest size" in dropped[0]["reason"]
    assert any("dropped" in w for w in fit["warnings"])


def test_a_fit_that_would_give_b_below_zero_is_not_a_result():
    rows = []
    for c, best in ((1e18, 1e7), (1e19, 1e9), (1e20, 1e11)):  # N_opt ∝ C^2
        for n in best * np.array([0.25, 0.5, 1.0, 2.0, 4.0]):
            rows.append({"n_params": n, "compute": c, "loss": 2 + 0.1 * np.log(n / best) ** 2})
    df = pd.DataFrame(rows)
    df["tokens"] = df["compute"] / (6 * df["n_params"])
    with pytest.raises(ValueError, match="shrink as compute grows"):
        approaches.isoflop(df, warn=False)


def test_bootstrap_with_degenerate_resamples_completes_and_counts_them():
    runs = lopsided_isoflops()
    few = runs.groupby("compute").head(4)  # 4 sizes per budget: many resamples lose the optimum
    boot, dropped = approaches.bootstrap_approach(approaches.isoflop, few, 200, seed=0)
    assert dropped > 0 and len(boot) + dropped == 200
    flat = few.assign(loss=2.0)  # every curve flat: every resample degenerate, none fatal
    boot, dropped = approaches.bootstrap_approach(approaches.isoflop, flat, 50, seed=0)
    assert boot == [] and dropped == 50


def test_approach_1_on_one_budget_with_rounding_jitter_is_not_possible():
    n = np.geomspace(1e7, 1e9, 6)
    c = 1e19 * (1 + np.arange(6) * np.finfo(float).eps)  # 6·N·D per run: 1-ulp differences
    df = pd.DataFrame({"n_params": n, "tokens": c / (6 * n), "compute": c, "run": list("abcdef")})
    df["loss"] = loss(df["n_params"], df["compute"])
    with pytest.raises(ValueError, match="one compute budget"):
        approaches.envelope(df)
    study = analyze(df, law="n", resamples=10, warn=False)
    assert study.result["approach_1"] is None
    assert any("approach 1 not possible" in w for w in study.result["warnings"])


def test_a_parameter_at_its_bound_is_a_warning_in_fit_json(tmp_path):
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e9, 5), np.geomspace(1e8, 1e11, 5)))
    df = pd.DataFrame({"n_params": n, "tokens": d, "run": [f"r{i}" for i in range(n.size)]})
    df["loss"] = 400 / n**0.34 + 400 / d**0.28  # no irreducible term: E goes to 0
    path = tmp_path / "runs.csv"
    df.to_csv(path, index=False)
    assert analyze_main(["fit", str(path), "--bootstrap", "20", "--out", str(tmp_path / "a")]) == 0
    fit = json.loads((tmp_path / "a" / "fit.json").read_text())
    assert any("collapsed to 0" in h for h in fit["health"])
    assert any("collapsed to 0" in w for w in fit["warnings"])


def test_an_interval_of_e_reaching_zero_is_said_plainly():
    from types import SimpleNamespace

    from analysis.study import fit_health

    df = pd.DataFrame({"loss": [1.5, 2.0]})
    fit = SimpleNamespace(params={"E": 0.7}, law=SimpleNamespace(name="chinchilla"))
    wide = {"E": {"value": 0.7, "low": 1e-18, "high": 0.95}}
    notes = fit_health(df, fit, wide, 0, 100)
    assert any("interval reaches 0" in n and "from above, not from below" in n for n in notes)
    tight = {"E": {"value": 0.7, "low": 0.5, "high": 0.95}}
    assert not any("reaches 0" in n for n in fit_health(df, fit, tight, 0, 100))


def test_empty_and_non_numeric_tables_are_named(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.csv is empty"):
        load_runs(empty)
    bad = tmp_path / "bad.csv"
    bad.write_text("run,n_params,tokens,loss\na,1e6,1e8,2.5\nb,100k,1e8,2.4\nc,2e6,1e8,oops\n")
    with pytest.warns(UserWarning) as caught:
        df = load_runs(bad)
    assert df["run"].tolist() == ["a"]
    text = " ".join(str(w.message) for w in caught)
    assert "n_params is not a number (b: '100k')" in text
    assert "loss is not a number (c: 'oops')" in text


def _sweep_with_curves(root, sizes, schedule="constant"):
    """Runs whose metrics.jsonl follow the law along their training (a constant schedule:
    a point mid-run is a run trained to that budget)."""
    for n in sizes:
        run = root / f"model={n:.3g}"
        run.mkdir(parents=True)
        final = 2e3 * n  # every run trained well past its compute-optimal length
        record = {
            "status": "ok",
            "n_params_non_embedding": n,
            "n_params_total": n,
            "tokens": final,
            "flops_6N": 6 * n * final,
            "val_loss": float(loss(n, 6 * n * final)),
            "config": {"model": {"name": f"{n:.3g}"}, "optim": {"schedule": schedule}},
        }
        (run / "result.json").write_text(json.dumps(record))
        with open(run / "metrics.jsonl", "w") as f:
            for d in np.geomspace(final / 1e4, final, 60):
                row = {"step": int(d), "tokens": d, "val_loss": float(loss(n, 6 * n * d))}
                f.write(json.dumps(row) + "\n")


def test_approach_2_from_loss_curves_gets_many_budgets_from_few_runs(tmp_path):
    from analysis.curves import curve_points

    _sweep_with_curves(tmp_path, np.geomspace(3e6, 3e9, 13))
    assert (
        analyze_main(
            [
                "fit",
                str(tmp_path),
                "--law",
                "n",
                "--bootstrap",
                "20",
                "--isoflop-curves",
                "10",
                "--compute",
                "6N",  # these records count only 6ND
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    fit = json.loads((tmp_path / "a" / "fit.json").read_text())
    a2 = fit["approach_2"]
    assert "loss curves" in a2["source"] and len(a2["minima"]) >= 4
    assert abs(a2["a"] - A_TRUE) < 0.03
    for m in a2["minima"]:
        assert abs(m["N_opt"] / n_opt(m["compute"]) - 1) < 0.15
    points = curve_points(tmp_path, 10, compute_convention="6N")  # as the records count
    assert points["budget"].nunique() == 10 and points["run"].str.contains("@").all()


def test_loss_curves_of_cosine_runs_are_flagged(tmp_path):
    from analysis.curves import curve_points

    _sweep_with_curves(tmp_path, [1e7, 1e8, 1e9], schedule="cosine")
    with pytest.warns(UserWarning, match="cosine schedule"):
        curve_points(tmp_path, 5, compute_convention="6N")  # as the records count
