"""lab-inspect on tiny models trained in the test."""

from __future__ import annotations

import json

import pytest
import torch

from lab.config.schema import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig
from lab.inspection.cli import main
from lab.inspection.losses import position_losses
from lab.inspection.probes import probe_run
from lab.inspection.trained import Run, trace
from lab.training.run import train


def _train(path, d_model=32, steps=300, mixer="attention"):
    cfg = Config(
        model=ModelConfig(
            name=f"d{d_model}", n_layer=2, n_head=2, d_model=d_model, context=64, mixer=mixer
        ),
        data=DataConfig(max_bytes=400_000, tokens=16 * 64 * steps, eval_tokens=4096),
        optim=OptimConfig(lr=3e-3),
        train=TrainConfig(batch_size=16, eval_batches=2, device="cpu"),
    )
    train(cfg, path)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("inspect") / "run")


def test_attention_maps_are_distributions_that_reproduce_the_model(run_dir):
    run = Run(run_dir)
    ids = run.encode("def f(x):\n    return [x, (1, 2)]\n")
    t = trace(run.model, ids)
    assert len(t["maps"]) == 2 and t["maps"][0].shape == (1, 2, ids.shape[1], ids.shape[1])
    for p in t["maps"]:
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
        assert torch.all(p.triu(diagonal=1) == 0)  # causal
    assert t["max_attention_error"] < 1e-5
    with torch.no_grad():
        logits, _ = run.model(ids)
        final = run.model.ln_f(t["hidden"][-1])
    torch.testing.assert_close(final @ run.model.wte.weight.t(), logits, atol=1e-5, rtol=1e-5)


def test_a_probe_for_a_property_the_model_uses_beats_its_control(run_dir):
    results = probe_run(Run(run_dir), ["indent"], windows=16)
    best = max(results["indent"], key=lambda r: r["selectivity"])
    assert best["accuracy"] > best["control"] + 0.1
    assert best["accuracy"] > best["majority"] + 0.1


def test_each_command_writes_its_figure(run_dir, tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["attention", str(run_dir), "--text", "import os\n", "--out", str(out)]) == 0
    assert "entropy" in capsys.readouterr().out
    assert (
        main(
            [
                "probe",
                str(run_dir),
                "--probe",
                "indent",
                "in_string",
                "--windows",
                "6",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["tokens", str(run_dir), "--out", str(out)]) == 0
    for name in ("attention.png", "probes.png", "tokens.png", "tokens.html"):
        assert (out / name).stat().st_size > 1000, name
    probes = json.loads((out / "probes.json").read_text())
    assert set(probes) == {"indent", "in_string"} and len(probes["indent"]) == 3


@pytest.mark.slow  # make test-slow: make test stays within its 10 minutes
def test_sweep_summary_against_n(tmp_path, run_dir, capsys):
    sweep = tmp_path / "sweep"
    _train(sweep / "small", d_model=16, steps=100)
    _train(sweep / "large", d_model=48, steps=100)
    assert main(["sweep", str(sweep)]) == 0
    rows = json.loads((sweep / "inspect" / "inspect_sweep.json").read_text())
    assert sorted(r["run"] for r in rows) == ["large", "small"]
    assert all({"N", "loss", "attention_entropy", "selectivity_indent"} <= set(r) for r in rows)
    assert (sweep / "inspect" / "inspect_sweep.png").stat().st_size > 10_000


def test_bad_input_is_a_clear_error(run_dir, tmp_path, capsys):
    assert main(["attention", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    torch.save({"w": torch.zeros(2)}, tmp_path / "foreign.pt")
    assert main(["tokens", str(tmp_path / "foreign.pt")]) == 2
    assert "not a checkpoint of this lab" in capsys.readouterr().err
    assert main(["attention", str(run_dir), "--layer", "2"]) == 2
    assert "layer index 2 out of range: the model has 2 layers" in capsys.readouterr().err
    assert main(["probe", str(run_dir), "--probe", "sentiment"]) == 2
    assert "unknown probe 'sentiment'" in capsys.readouterr().err


def test_text_longer_than_the_context_is_truncated_with_a_warning(run_dir):
    run = Run(run_dir)
    with pytest.warns(UserWarning, match="truncated to the model's 64"):
        ids = run.encode("x = 1\n" * 40)
    assert ids.shape == (1, 64)


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("inspect") / "conv", steps=200, mixer="conv")


def test_loss_by_position_for_several_runs(run_dir, conv_run, tmp_path, capsys):
    run = Run(run_dir)
    windows = run.val_windows(16, 65)
    losses = position_losses(run.model, windows)
    with torch.no_grad():
        ids = torch.as_tensor(windows)
        _, mean = run.model(ids[:, :-1], ids[:, 1:])
    assert losses.shape == (64,) and losses.mean() == pytest.approx(float(mean), rel=1e-5)
    out = tmp_path / "pos"
    assert (
        main(["positions", str(run_dir), str(conv_run), "--windows", "32", "--out", str(out)]) == 0
    )
    assert "conv" in capsys.readouterr().out
    rows = json.loads((out / "positions.json").read_text())
    assert [r["mixer"] for r in rows] == ["attention", "conv"]
    for r in rows:  # more context, lower loss: the first position sees one token
        assert len(r["loss_by_position"]) == 64 and r["last"] < r["first"]
    assert (out / "positions.png").stat().st_size > 10_000


def test_attribution_command_for_a_conv_model(conv_run, tmp_path, capsys):
    pytest.importorskip("captum")
    out = tmp_path / "attr"
    text = "for i in range(10):\n    print(i"
    args = ["attribution", str(conv_run), "--text", text, "--samples", "4", "--steps", "16"]
    assert main([*args, "--out", str(out)]) == 0
    assert "shap: sum" in capsys.readouterr().out
    result = json.loads((out / "attribution.json").read_text())
    assert len(result["shap"]) == len(result["ig"]) == len(result["tokens"]) == len(text)
    assert (out / "attribution.png").stat().st_size > 5000
    assert "<span" in (out / "attribution.html").read_text()


def test_inspection_bad_input_for_other_mixers(conv_run, capsys):
    assert main(["attention", str(conv_run)]) == 2
    assert "model.mixer=conv: it has no attention maps" in capsys.readouterr().err
    assert main(["attribution", str(conv_run), "--text", "x" * 65]) == 2
    assert "longer than the model's context of 64" in capsys.readouterr().err
    assert main(["attribution", str(conv_run), "--text", "abc", "--position", "3"]) == 2
    assert "--position must be in [0, 2]" in capsys.readouterr().err
