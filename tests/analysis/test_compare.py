"""lab-analyze compare: one law per group of runs, exponents side by side, crossings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import compare
from analysis.cli import main

SIZES = np.geomspace(1e4, 1e7, 7)


def _law(E, A, alpha):
    return lambda n: E + A / n**alpha


def _frame(laws: dict, noise: float = 0.004, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for group, f in laws.items():
        for n in SIZES:
            loss = f(n) * np.exp(rng.normal(0, noise))
            rows.append({"run": f"{group}-{n:.0f}", "n_params": n, "tokens": 1e6, "loss": loss})
            rows[-1]["arch"] = group
    df = pd.DataFrame(rows)
    df["compute"] = 6 * df["n_params"] * df["tokens"]
    return df


def test_each_group_gets_its_own_exponent_with_an_interval():
    truth = {"fast": (1.0, 40.0, 0.40), "slow": (1.3, 9.0, 0.20)}
    df = _frame({g: _law(*p) for g, p in truth.items()})
    result = compare.compare(df, "arch", resamples=200)
    assert result["law"] == "n"  # 7 sizes per group: the law with its offset
    for g in result["groups"]:
        alpha = g["params"]["alpha"]
        assert alpha["low"] <= truth[g["group"]][2] <= alpha["high"], g
        assert alpha["high"] - alpha["low"] < 0.2
    assert "alpha" in compare.table(result)


def test_curves_that_cross_inside_the_data_are_found_where_they_cross():
    # pure power laws 30/N^0.3 and 8/N^0.2 cross where N^0.1 = 30/8: N = 3.75^10 ≈ 5.5e5
    df = _frame({"a": _law(0.0, 30.0, 0.3), "b": _law(0.0, 8.0, 0.2)}, noise=0.001)
    result = compare.compare(df, "arch", law="n_pure", resamples=0)
    (cross,) = result["crossings"]
    assert len(cross["inside"]) == 1
    assert cross["inside"][0] == pytest.approx(3.75**10, rel=0.1)
    assert "cross inside the data" in cross["text"]


def test_curves_that_do_not_cross_say_which_is_lower():
    df = _frame({"low": _law(1.0, 10.0, 0.3), "high": _law(1.5, 10.0, 0.3)}, noise=0.001)
    result = compare.compare(df, "arch", resamples=0)
    (cross,) = result["crossings"]
    assert not cross["inside"]
    assert "do not cross within the data" in cross["text"] and "low is lower" in cross["text"]


def test_few_sizes_fit_the_pure_power_law():
    df = _frame({"a": _law(1.0, 10.0, 0.3), "b": _law(1.0, 12.0, 0.3)})
    few = df[df["n_params"].isin(SIZES[::2])]  # 4 sizes per group
    assert compare.compare(few, "arch", resamples=0)["law"] == "n_pure"


def _sweep(root, mixers=("attention", "conv")):
    """Run folders with records (no training): two mixers × 4 sizes, loss from a law each."""
    laws = {"attention": _law(1.0, 20.0, 0.3), "conv": _law(1.1, 15.0, 0.28)}
    for mixer in mixers:
        for n in SIZES[::2]:
            run = root / f"model.mixer={mixer},n={n:.0f}"
            run.mkdir(parents=True)
            record = {
                "status": "ok",
                "n_params_non_embedding": n,
                "n_params_total": n,
                "tokens": 1e6,
                "flops_6N": 6e6 * n,
                "flops_6N_attn": 6.5e6 * n,
                "val_loss": float(laws[mixer](n)),
                "config": {"model": {"name": "m", "mixer": mixer, "norm": "layernorm"}},
            }
            (run / "result.json").write_text(json.dumps(record))


def test_compare_command_on_a_sweep_by_mixer(tmp_path, capsys):
    _sweep(tmp_path)
    assert main(["compare", str(tmp_path), "--by", "model.mixer", "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "per model.mixer" in out and "attention" in out and "conv" in out
    result = json.loads((tmp_path / "analysis" / "compare.json").read_text())
    assert [g["group"] for g in result["groups"]] == ["attention", "conv"]
    assert len(result["crossings"]) == 1
    assert (tmp_path / "analysis" / "compare.png").stat().st_size > 10_000


def test_compare_bad_input_is_one_clear_line(tmp_path, capsys):
    _sweep(tmp_path)
    assert main(["compare", str(tmp_path), "--by", "model.colour"]) == 2
    err = capsys.readouterr().err
    assert "--by model.colour: no run has this key" in err and len(err.splitlines()) == 1
    # a key every run shares (the schema's default for records that predate it)
    assert main(["compare", str(tmp_path), "--by", "model.norm"]) == 2
    assert "every run has the same value (layernorm)" in capsys.readouterr().err
    table = tmp_path / "t.csv"
    _frame({"a": _law(1.0, 10.0, 0.3)}).to_csv(table, index=False)
    assert main(["compare", str(table), "--by", "mixer"]) == 2
    assert "has no column 'mixer'" in capsys.readouterr().err
