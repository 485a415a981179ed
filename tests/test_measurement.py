"""Numbers a scaling study can trust: bits per byte beside nats per token, and a standard
error on every final evaluation."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from lab.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig
from lab.tokenizer import ByteTokenizer, HFTokenizer, train_bpe
from lab.train import train


def small(**data_kw) -> Config:
    return Config(
        model=ModelConfig(name="t", n_layer=1, n_head=2, d_model=16, context=32),
        data=DataConfig(**{"max_bytes": 300_000, "tokens": 4 * 32 * 40} | data_kw),
        optim=OptimConfig(lr=3e-3),
        train=TrainConfig(batch_size=4, eval_batches=1, device="cpu", threads=1),
    )


def test_byte_runs_report_bits_per_byte_as_loss_over_ln2_with_standard_errors(tmp_path):
    record = train(small(eval_tokens=8192), tmp_path)
    assert record["val_bpb"] == pytest.approx(record["val_loss"] / math.log(2), abs=1e-9)
    assert record["train_bpb"] == pytest.approx(record["train_loss"] / math.log(2), abs=1e-9)
    assert record["eval_tokens"] == 8192 and "256 windows" in record["eval_se_over"]
    assert 0 < record["val_loss_se"] < 0.05 * record["val_loss"]
    assert record["val_bpb_se"] == pytest.approx(record["val_loss_se"] / math.log(2), rel=1e-6)
    assert 0 < record["eval_fraction"] < 1


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
    from analysis.laws import LAWS, fit_law
    from analysis.validity import prediction_interval

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
