"""Hyperparameters across scale: the best lr per size and lr*(N), the best setting per
(N, D) in a fit, a run trained at a fitted rate, μP (equal to SP at its base width, flat
coordinates, resumable) and their bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis import lr as lr_analysis
from analysis.cli import main as analyze_main
from analysis.load import load_runs
from lab.config.rules import validate
from lab.config.schema import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig
from lab.training.run import train


def test_the_lr_parabola_recovers_a_known_optimum_between_grid_points():
    # loss = 2 + 0.3·(log lr − log 0.0042)²: the grid's argmin is 4e-3, the optimum 4.2e-3
    grid = [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]
    loss = [2 + 0.3 * (np.log(x) - np.log(4.2e-3)) ** 2 for x in grid]
    best = lr_analysis.best_rate(grid, loss)
    assert best["method"] == "parabola" and not best["edge"]
    assert best["lr"] == pytest.approx(4.2e-3, rel=1e-6)
    edge = lr_analysis.best_rate(grid, [1.0, 1.1, 1.2, 1.3, 1.4])
    assert edge["edge"] and edge["lr"] == 1e-3 and edge["method"] == "grid (edge)"


def _lr_sweep(root, sizes=(2e4, 8e4, 3.2e5, 1.28e6), gamma=0.3, c=0.5, rates=None, extra=None):
    """Records of an lr sweep whose best rate follows c·N^-gamma (loss a parabola in log lr
    around it), plus a seed repeat of each run at a loss 0.01 higher."""
    rates = rates or [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2]
    for n in sizes:
        best = c * n**-gamma
        for lr in rates:
            for seed, bump in ((0, 0.0), (1, 0.01)):
                run = root / f"n={n:.0f},lr={lr:g},seed={seed}"
                run.mkdir(parents=True)
                loss = 1 + 10 * n**-0.2 + 0.2 * (np.log(lr) - np.log(best)) ** 2 + bump
                config = {
                    "model": {"name": f"m{n:.0f}", "d_model": int(n)},
                    "optim": {"lr": lr},
                    "train": {"seed": seed},
                    **(extra or {}),
                }
                record = {
                    "status": "ok",
                    "n_params_non_embedding": n,
                    "n_params_total": n,
                    "tokens": 1e6,
                    "flops_6N": 6e6 * n,
                    "flops_6N_attn": 6.5e6 * n,
                    "val_loss": loss,
                    "config": config,
                }
                (run / "result.json").write_text(json.dumps(record))


def test_lab_analyze_lr_fits_the_best_rate_against_size(tmp_path, capsys):
    _lr_sweep(tmp_path)
    assert analyze_main(["lr", str(tmp_path), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "lr*(N) = c·N^-gamma" in out
    result = json.loads((tmp_path / "analysis" / "lr.json").read_text())
    gamma, c = result["law"]["params"]["gamma"], result["law"]["params"]["c"]
    # the losses are parabolas in log lr: each optimum, and so the law, comes out exact
    assert gamma["value"] == pytest.approx(0.3, rel=1e-6)
    assert c["value"] == pytest.approx(0.5, rel=1e-6)
    assert gamma["low"] <= gamma["value"] <= gamma["high"]
    assert all(s["method"] == "parabola" for s in result["sweeps"])
    assert [len(s["lrs"]) for s in result["sweeps"]] == [7] * 4
    assert all(s["seeds"] == [2] * 7 for s in result["sweeps"])  # seeds averaged per rate
    assert (tmp_path / "analysis" / "lr.png").stat().st_size > 10_000


def test_a_fit_keeps_the_best_setting_per_point_and_says_so(tmp_path):
    _lr_sweep(tmp_path)
    df = load_runs(tmp_path)
    assert len(df) == 8  # the best rate's 2 seeds at each of 4 sizes, of 56 runs
    assert df.attrs["selection"]["groups"] == 4 and len(df.attrs["selection"]["dropped"]) == 48
    rates = {r["run"].split(",")[1] for _, r in df.iterrows()}
    assert len(rates) <= 4
    assert len(load_runs(tmp_path, all_runs=True)) == 56


def test_lr_bad_input_is_one_clear_line(tmp_path, capsys):
    _lr_sweep(tmp_path / "one", rates=[3e-3])
    assert analyze_main(["lr", str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err
    assert "needs 3+ rates" in err and "at most 1 per size" in err
    mixed = tmp_path / "mixed"
    _lr_sweep(mixed, sizes=(2e4, 8e4))
    _lr_sweep(mixed / "mup", sizes=(3e4, 9e4), extra={"model": {"parametrization": "mup"}})
    with pytest.raises(ValueError, match="mix parametrizations"):
        lr_analysis.analyze_lr(mixed)
    # the command analyses each parametrization on its own (a mup_transfer sweep)
    assert analyze_main(["lr", str(mixed), "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert "(val_loss, sp)" in out and "(val_loss, mup)" in out and "moves" in out
    for p in ("sp", "mup"):
        result = json.loads((mixed / "analysis" / f"lr_{p}.json").read_text())
        assert result["parametrization"] == p and len(result["sweeps"]) == 2


def _cfg(tmp=None, **model) -> Config:
    return Config(
        model=ModelConfig(name="t", n_layer=2, n_head=2, d_model=32, context=32, **model),
        data=DataConfig(max_bytes=100_000, tokens=4 * 32 * 24, eval_tokens=1024),
        optim=OptimConfig(lr=3e-3),
        train=TrainConfig(batch_size=4, eval_batches=1, device="cpu", threads=1),
    )


def test_a_run_takes_its_rate_from_a_fitted_law(tmp_path):
    law = {
        "parametrization": "sp",
        "n_convention": "non_embedding",
        "law": {"params": {"c": {"value": 0.5}, "gamma": {"value": 0.4}}},
    }
    (tmp_path / "lr.json").write_text(json.dumps(law))
    cfg = _cfg()
    cfg.optim.lr_law = str(tmp_path / "lr.json")
    record = train(cfg, tmp_path / "run")
    n = record["n_params_non_embedding"]
    assert record["lr_law"]["lr"] == pytest.approx(0.5 * n**-0.4)
    assert record["config"]["optim"]["lr"] == pytest.approx(0.5 * n**-0.4)
    assert record["lr_law"]["path"].endswith("lr.json")


def test_bad_lr_law_and_mup_settings_are_clear_errors(tmp_path):
    def check(match, **model):
        cfg = _cfg(**model)
        with pytest.raises(ValueError, match=match):
            validate(cfg)
        return cfg

    cfg = _cfg()
    cfg.optim.lr_law = str(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="optim.lr_law: no such file"):
        validate(cfg)
    (tmp_path / "bad.json").write_text("{not json")
    cfg.optim.lr_law = str(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="not readable JSON"):
        validate(cfg)
    (tmp_path / "other.json").write_text(
        json.dumps(
            {"parametrization": "sp", "law": {"params": {"c": {"value": 1}, "gamma": {"value": 0}}}}
        )
    )
    mup = _cfg(parametrization="mup", base_d_model=16)
    mup.optim.lr_law = str(tmp_path / "other.json")
    with pytest.raises(
        ValueError, match="fitted on sp runs; this run uses model.parametrization=mup"
    ):
        validate(mup)
    check("needs model.base_d_model", parametrization="mup")
    check(
        "base_d_model=15 is not divisible by model.n_head=2", parametrization="mup", base_d_model=15
    )
    with pytest.raises(ValueError, match="d_model=33 is not divisible"):
        validate(Config(model=ModelConfig(d_model=33, n_head=2)))


def test_mup_at_its_base_width_is_sp_exactly(tmp_path):
    sp = train(_cfg(), tmp_path / "sp")
    mup = train(_cfg(parametrization="mup", base_d_model=32), tmp_path / "mup")
    assert mup["val_loss"] == sp["val_loss"] and mup["train_loss"] == sp["train_loss"]
    wide = _cfg(parametrization="mup", base_d_model=16)
    assert wide.model.width_mult == 2.0
    # counting does not change with the parametrization
    assert train(wide, tmp_path / "wide")["n_params_non_embedding"] == sp["n_params_non_embedding"]


def test_mup_resume_restores_the_per_group_rates(tmp_path, monkeypatch):
    from lab.training.trainer import Trainer

    def cfg():
        c = _cfg(parametrization="mup", base_d_model=16)
        c.train.checkpoint_every = c.train.eval_every = 8
        return c

    full = train(cfg(), tmp_path / "full")
    real_step = Trainer.train_step

    def crash_at_step_10(self, n_tokens, lr):
        if self.state.step == 9:
            raise RuntimeError("killed")
        return real_step(self, n_tokens, lr)

    monkeypatch.setattr(Trainer, "train_step", crash_at_step_10)
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg(), tmp_path / "part")
    monkeypatch.setattr(Trainer, "train_step", real_step)
    payload = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert payload["state"]["step"] == 8
    scales = sorted(g["lr_scale"] for g in payload["optimizer"]["param_groups"])
    assert scales == [0.5, 1.0, 1.0]  # the hidden matrices at lr / m, m = 2
    resumed = train(cfg(), tmp_path / "part")  # train.resume=auto: from step 8
    assert resumed["resumed_from_step"] == 8
    assert resumed["val_loss"] == pytest.approx(full["val_loss"], abs=1e-6)


def test_coordinate_check_is_flat_under_mup_and_grows_under_sp():
    from lab.inspection import coord as mup

    base = ModelConfig(
        n_layer=2,
        n_head=4,
        d_model=64,
        context=8,  # 8 × 8 tokens a batch, fewer than the widths (μP's limit: width → ∞)
        vocab_size=257,
        tie_embeddings=False,
        readout_zero_init=True,
    )
    result = mup.coord_check(base, [64, 128, 256, 512], steps=5, lr=1e-3)
    assert mup.max_abs_slope(result, "mup") <= 0.1
    assert mup.max_abs_slope(result, "sp") > 0.5


def test_the_runs_table_shows_each_runs_rate(tmp_path, capsys):
    _lr_sweep(tmp_path, sizes=(2e4,), rates=[1e-3, 4e-3])
    assert analyze_main(["table", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert " lr " in out.splitlines()[0] and "mixer" in out.splitlines()[0]
    assert "0.004" in out and "attention" in out  # a record without the mixer: attention


def test_an_optimum_at_the_grid_edge_is_flagged_and_left_out_of_the_law(tmp_path, capsys):
    # at N = 100 the best rate (0.5·100^-0.3 ≈ 0.13) lies past the grid's 6.4e-2
    _lr_sweep(tmp_path, sizes=(100, 2e4, 8e4, 3.2e5))
    assert analyze_main(["lr", str(tmp_path), "--bootstrap", "0"]) == 0
    assert "left out of the law: m100" in capsys.readouterr().out
    result = json.loads((tmp_path / "analysis" / "lr.json").read_text())
    assert result["edge_optima"] == ["m100"] and "m100" not in result["law_fitted_on"]
    assert result["law"]["params"]["gamma"]["value"] == pytest.approx(0.3, rel=1e-6)


def test_a_refitted_law_is_another_config(tmp_path):
    from lab.config.schema import config_hash

    law = {
        "parametrization": "sp",
        "law": {"params": {"c": {"value": 0.5}, "gamma": {"value": 0.4}}},
    }
    path = tmp_path / "lr.json"
    path.write_text(json.dumps(law))
    cfg = _cfg()
    cfg.optim.lr_law = str(path)
    before = config_hash(cfg)
    law["law"]["params"]["gamma"]["value"] = 0.3
    path.write_text(json.dumps(law))
    assert config_hash(cfg) != before  # a rerun sweep trains again at the new rates
