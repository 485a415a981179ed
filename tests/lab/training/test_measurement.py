"""Numbers a scaling study can trust: bits per byte beside nats per token, and a standard
error on every final evaluation."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from lab.config.schema import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig
from lab.data.tokenizer import ByteTokenizer, HFTokenizer, train_bpe
from lab.training.run import train


def small(train_kw: dict | None = None, **data_kw) -> Config:
    """A tiny run whose final evaluation reads all of data.eval_tokens (unless
    ``train_kw`` sizes it)."""
    sizing = {"final_eval_se": 0.0, "final_eval_share": 0.0} | (train_kw or {})
    return Config(
        model=ModelConfig(name="t", n_layer=1, n_head=2, d_model=16, context=32),
        data=DataConfig(**{"max_bytes": 300_000, "tokens": 4 * 32 * 40} | data_kw),
        optim=OptimConfig(lr=3e-3),
        train=TrainConfig(batch_size=4, eval_batches=1, device="cpu", threads=1, **sizing),
    )


def test_byte_runs_report_bits_per_byte_as_loss_over_ln2_with_standard_errors(tmp_path):
    record = train(small(eval_tokens=8192), tmp_path)
    assert record["val_bpb"] == pytest.approx(record["val_loss"] / math.log(2), abs=1e-9)
    assert record["train_bpb"] == pytest.approx(record["train_loss"] / math.log(2), abs=1e-9)
    assert record["eval_tokens"] == 8192 and "256 windows" in record["eval_se_over"]
    assert 0 < record["val_loss_se"] < 0.05 * record["val_loss"]
    assert record["val_bpb_se"] == pytest.approx(record["val_loss_se"] / math.log(2), rel=1e-6)
    assert 0 < record["eval_fraction"] < 1


def test_spread_order_is_a_permutation_whose_prefixes_cover_the_split():
    from lab.training.evaluation import spread_order

    for n in (1, 2, 7, 64, 1000):
        order = spread_order(n)
        assert sorted(order.tolist()) == list(range(n))
    order = spread_order(1000)
    for k in (8, 32, 100):  # the first k windows leave no gap wider than about 2n/k
        gaps = np.diff(np.sort(np.r_[-1, order[:k], 1000]))
        assert gaps.max() <= 2 * 1000 / k + 1, (k, gaps.max())


def test_the_final_evaluation_stops_at_its_standard_error_target(tmp_path):
    cap = 32 * 512  # 512 windows of 32 tokens
    loose = train(small({"final_eval_se": 0.01}, eval_tokens=cap), tmp_path / "loose")
    assert loose["eval_stopped_by"] == "standard error"
    assert 32 * 32 <= loose["eval_tokens"] < cap
    assert loose["val_loss_se"] <= 0.01 * loose["val_loss"]
    exact = train(small({"final_eval_se": 1e-6}, eval_tokens=cap), tmp_path / "exact")
    assert exact["eval_stopped_by"] == "all windows" and exact["eval_tokens"] == cap
    # the windows read first spread over the split: the two estimates agree
    assert loose["val_loss"] == pytest.approx(exact["val_loss"], abs=4 * loose["val_loss_se"])


def test_the_final_evaluation_costs_at_most_its_share_of_the_compute_on_any_machine(tmp_path):
    from lab.training.evaluation import window_budget

    cfg = small({"final_eval_share": 0.15}, eval_tokens=32 * 4096)
    a, b = train(cfg, tmp_path / "a"), train(cfg, tmp_path / "b")
    budget = window_budget(0.15, cfg.data.tokens, 32)
    assert a["eval_stopped_by"] == "budget"
    assert a["eval_tokens"] == 32 * int(0.75 * budget)  # 3/4 of it to the validation split
    # a budget in FLOPs, not seconds: the same run measures the same windows again
    assert (a["val_loss"], a["train_loss"]) == (b["val_loss"], b["train_loss"])
    # forward passes over the windows: share/(1 - share) of the training's 3 passes a token
    assert window_budget(0.15, 3000, 10) == int(0.15 / 0.85 * 3 * 300)
    assert window_budget(0.0, 3000, 10) == 0


def test_bpe_token_bytes_add_up_to_the_text():
    tok = HFTokenizer(
        train_bpe(["def f(x):\n    return x\n" * 40, "naïve café, ünïcode ☃" * 20], 320), "bpe"
    )
    sizes = tok.token_bytes()
    for text in ("def f(x):\n    return 'naïve'\n", "café ☃ ünïcode", "x" * 50):
        ids = tok.encode(text.encode())
        assert sizes[ids].sum() == len(text.encode("utf-8"))
    assert sizes[tok.eot] == 1 and (ByteTokenizer().token_bytes() == 1).all()


def test_the_standard_error_shrinks_as_one_over_sqrt_eval_tokens(tmp_path):
    a = train(small(eval_tokens=4096), tmp_path / "a")
    b = train(small(eval_tokens=4 * 4096), tmp_path / "b")
    assert a["val_loss"] == pytest.approx(b["val_loss"], abs=6 * a["val_loss_se"])
    ratio = a["val_loss_se"] / b["val_loss_se"]
    assert 1.5 < ratio < 2.7, ratio  # 2 = sqrt(4)


def test_bpe_and_byte_runs_compare_in_bits_per_byte(tmp_path):
    byte = train(small(eval_tokens=4096), tmp_path / "bytes")
    bpe = train(
        replace(
            small(eval_tokens=4096),
            data=replace(small().data, tokenizer="bpe", bpe_vocab_size=400, eval_tokens=4096),
        ),
        tmp_path / "bpe",
    )
    assert bpe["val_bpb"] is not None and np.isfinite(bpe["val_bpb"])
    # nats per token differ by the tokens' sizes; bits per byte are on one scale
    assert bpe["val_loss"] > byte["val_loss"]
    assert bpe["val_bpb"] < 2 * byte["val_bpb"] and byte["val_bpb"] < 2 * bpe["val_bpb"]


def test_95_percent_prediction_intervals_cover_95_percent_of_new_runs():
    """Calibration, by simulation: runs drawn from a known law with known scatter; each of 6
    independent fits (with its bootstrap) predicts 100 new runs; over the 600, the 95%
    intervals hold 93-97% (a single fit's coverage varies with its own noise draw)."""
    import pandas as pd

    from analysis.bootstrap import bootstrap_fit
    from analysis.fitting import fit_law, prediction_interval
    from analysis.laws import LAWS

    law = LAWS["chinchilla"]
    truth = {"E": 1.8, "A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.37}
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e10, 8), np.geomspace(1e9, 1e12, 8)))
    inside = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        df = pd.DataFrame({"n_params": n, "tokens": d})
        df["loss"] = law.predict(truth, n_params=n, tokens=d) * np.exp(rng.normal(0, 0.02, n.size))
        fit = fit_law(df, law)
        samples = bootstrap_fit(df, fit, 400, seed)
        n2 = np.exp(rng.uniform(np.log(1e7), np.log(1e10), 100))
        d2 = np.exp(rng.uniform(np.log(1e9), np.log(1e12), 100))
        new = law.predict(truth, n_params=n2, tokens=d2) * np.exp(rng.normal(0, 0.02, 100))
        pi = prediction_interval(fit, samples, df, {"n_params": n2, "tokens": d2})
        inside.extend((pi["low"] <= new) & (new <= pi["high"]))
    assert 0.93 <= np.mean(inside) <= 0.97, np.mean(inside)


@pytest.mark.slow  # make test-slow: make test stays within its 10 minutes
def test_rolling_backtest_predicts_each_next_size_with_an_interval():
    import pandas as pd

    from analysis.laws import LAWS
    from analysis.validity import rolling_backtest

    law = LAWS["chinchilla"]
    truth = {"E": 1.8, "A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.37}
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e10, 6), np.geomspace(1e9, 1e12, 4)))
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"n_params": n, "tokens": d, "run": [f"r{i}" for i in range(n.size)]})
    df["loss"] = law.predict(truth, n_params=n, tokens=d) * np.exp(rng.normal(0, 0.01, n.size))
    result = rolling_backtest(df, law, resamples=100)
    sizes = {p["predicted_size"] for p in result["predictions"]}
    assert len(sizes) == 4 and len(result["predictions"]) == 16  # 4 runs at each next size
    for p in result["predictions"]:
        assert p["low"] < p["predicted"] < p["high"] and p["fitted_up_to"] < p["predicted_size"]
    assert result["mean_abs_relative_error"] < 0.05 and result["coverage"] >= 0.5


def _seed_runs(root, losses: dict):
    """Records of configs run with several seeds: {(model, seed): loss}."""
    import json

    for (model, seed), loss in losses.items():
        run = root / f"model={model},train.seed={seed}"
        run.mkdir(parents=True)
        config = {"model": {"name": model}, "train": {"seed": seed}, "data": {"tokens": 1000}}
        record = {"status": "ok", "val_loss": loss, "config": config, "tokens": 1000}
        (run / "result.json").write_text(json.dumps(record))


def test_noise_reports_the_seed_spread_per_config(tmp_path, capsys):
    from analysis.cli import main

    _seed_runs(
        tmp_path, {("a", s): 2.0 + 0.01 * s for s in range(5)} | {("b", 0): 3.0, ("b", 1): 3.1}
    )
    assert main(["noise", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pooled sd of log loss" in out
    import json

    noise = json.loads((tmp_path / "analysis" / "noise.json").read_text())
    sds = {r["model"]: r["sd"] for r in noise["configs"]}
    assert sds["a"] == pytest.approx(np.std([2.0, 2.01, 2.02, 2.03, 2.04], ddof=1))
    assert sds["b"] == pytest.approx(np.std([3.0, 3.1], ddof=1))


def test_noise_and_sensitivity_refuse_what_they_cannot_use(tmp_path, capsys):
    from analysis.cli import main

    _seed_runs(tmp_path / "one", {("a", 0): 2.0, ("b", 0): 2.5})
    assert main(["noise", str(tmp_path / "one")]) == 2
    assert "at least 2 seeds" in capsys.readouterr().err
    table = tmp_path / "runs.csv"
    table.write_text("n_params,tokens,loss\n1e6,1e8,3\n2e6,1e8,2.9\n4e6,1e8,2.8\n8e6,1e8,2.75\n")
    assert main(["fit", str(table), "--law", "n", "--bootstrap", "0", "--sensitivity"]) == 2
    assert "must be a sweep folder" in capsys.readouterr().err


def test_residuals_are_compared_with_the_noise_of_repeated_runs():
    import pandas as pd

    from analysis.laws import LAWS
    from analysis.study import analyze

    rng = np.random.default_rng(0)
    n = np.repeat(np.geomspace(1e6, 1e9, 6), 4)  # each size 4 times (4 seeds)
    df = pd.DataFrame({"n_params": n, "tokens": 1e9, "run": [f"r{i}" for i in range(n.size)]})
    df["compute"] = 6 * df["n_params"] * df["tokens"]
    law = {"E": 1.5, "A": 300.0, "alpha": 0.3}
    df["loss"] = LAWS["n"].predict(law, n_params=n) * np.exp(rng.normal(0, 0.01, n.size))
    noise = analyze(df, "n", resamples=0, warn=False).result["noise"]
    assert noise["noise_from"] == "repeated runs"
    assert 0.6 < noise["ratio"] < 1.5 and "within their noise" in noise["text"]


def test_data_constrained_law_recovers_the_worth_of_repeated_tokens(tmp_path):
    """Runs on 1 to 40 epochs of their unique data, losses from Muennighoff et al.'s law with
    known R*: the fit recovers R* and the exponents; every repeated run is flagged."""
    import pandas as pd

    from analysis.cli import main
    from analysis.fitting import fit_law
    from analysis.laws import LAWS

    law = LAWS["data_constrained"]
    truth = {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 1500.0, "beta": 0.32, "R_star": 15.0}
    n, d, u = (
        a.ravel()
        for a in np.meshgrid(
            np.geomspace(1e7, 1e9, 5), np.geomspace(1e9, 1e11, 5), [1e9, 5e9, 1e11]
        )
    )
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"n_params": n, "tokens": d, "unique_tokens": np.minimum(u, d)})
    df["loss"] = law.predict(truth, **df) * np.exp(rng.normal(0, 0.002, len(df)))
    df["run"] = [f"r{i}" for i in range(len(df))]
    fit = fit_law(df, law)
    assert fit.params["R_star"] == pytest.approx(15.0, rel=0.3)
    assert fit.params["alpha"] == pytest.approx(0.34, abs=0.03)
    assert fit.params["beta"] == pytest.approx(0.32, abs=0.03)
    path = tmp_path / "runs.csv"
    df.to_csv(path, index=False)
    assert (
        main(
            [
                "fit",
                str(path),
                "--law",
                "data_constrained",
                "--bootstrap",
                "0",
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    import json

    warnings = json.loads((tmp_path / "a" / "fit.json").read_text())["warnings"]
    assert any("repeat their data" in w for w in warnings)
