"""Every file in conf/ and sweeps/ composes into a valid Config; schema errors are caught."""

from __future__ import annotations

import json

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from lab.cli.sweeps import expand_sweep
from lab.config.composition import compose
from lab.config.rules import validate
from lab.config.schema import CONF_DIR, SWEEPS_DIR

GROUP_OPTIONS = [
    (group.name, f.stem)
    for group in sorted(CONF_DIR.iterdir())
    if group.is_dir()
    for f in sorted(group.glob("*.yaml"))
]
SWEEPS = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


def test_there_is_something_to_compose():
    assert len(GROUP_OPTIONS) >= 7 and "demo" in SWEEPS


@pytest.mark.parametrize("group, option", GROUP_OPTIONS)
def test_every_group_option_composes(group, option):
    cfg = compose([f"{group}={option}"])
    validate(cfg)
    if group == "model":
        assert cfg.model.name == option


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_composes_and_every_run_validates(name, tmp_path, monkeypatch):
    jobs = {tuple(job) for job in expand_sweep(name)}  # an optuna sweep repeats its trial
    assert jobs
    monkeypatch.chdir(tmp_path)  # a sweep that reads a fitted lr law finds one here
    law = {
        "parametrization": "sp",
        "law": {"params": {"c": {"value": 0.1}, "gamma": {"value": 0.3}}},
    }
    for sweep in ("lr", "gpu_lr"):  # the laws the sweep files read
        (tmp_path / "runs" / sweep / "analysis").mkdir(parents=True)
        (tmp_path / "runs" / sweep / "analysis" / "lr.json").write_text(json.dumps(law))
    for job in jobs:
        validate(compose(list(job)))


def test_the_gpu_ladder_composes_from_25m_to_1_4b_at_chinchilla_optimal_and_beyond():
    from lab.config.counting import param_counts

    gpu = sorted(p.stem for p in (CONF_DIR / "model" / "gpu").glob("*.yaml"))
    for size in gpu:
        cfg = compose([f"model=gpu/{size}"])
        validate(cfg)
        assert cfg.model.name == f"gpu-{size}" and cfg.model.vocab_size == 50304
        assert 64 <= cfg.model.d_model // cfg.model.n_head <= 128
        assert cfg.model.context in (1024, 2048)
    runs = [compose(job) for job in expand_sweep("gpu_ladder")]
    totals = {c.model.name: param_counts(c.model)["total"] for c in runs}
    non_embedding = [param_counts(c.model)["non_embedding"] for c in runs]
    assert min(non_embedding) < 30e6 and 1.2e9 < max(non_embedding) < 1.6e9
    multipliers = sorted({round(c.data.tokens / totals[c.model.name]) for c in runs})
    assert multipliers == [20, 80, 320]
    for c in runs:  # every size has its D = 20 N run, at the law's learning rate
        assert c.optim.lr_law == "runs/gpu_lr/analysis/lr.json"
        assert c.train.batch_size % c.train.grad_accum == 0
    assert {c.model.name for c in runs if round(c.data.tokens / totals[c.model.name]) == 20} == set(
        totals
    )


def test_demo_sweep_gives_each_size_its_own_budget_and_cooldowns():
    """The demo's bundles (sweeps/demo_sizes/): 4 sizes, each one WSD run to its own budget,
    smaller sizes longer, with cooldown branches below it: 15 results spanning D = 250k to
    8M tokens, none repeating data (the corpus is read to 12 MB)."""
    runs = [compose(job) for job in expand_sweep("demo")]
    assert [c.model.name for c in runs] == ["nano", "micro", "tiny", "mini"]
    tokens = [c.data.tokens for c in runs]
    assert tokens == sorted(tokens, reverse=True)  # the smaller the model, the longer
    budgets = {d for c in runs for d in [c.data.tokens, *c.data.branches]}
    assert min(budgets) == 250_000 and max(budgets) == 8_000_000
    assert sum(1 + len(c.data.branches) for c in runs) == 15
    for c in runs:
        assert c.optim.schedule.value == "wsd" and c.data.branches
        assert c.data.tokens < 0.9 * c.data.max_bytes * (1 - c.data.val_fraction)


def test_a_sweep_bundle_overrides_the_model_group(tmp_path):
    """sweeps/GROUP/NAME.yaml is the option NAME of group GROUP: `+GROUP=NAME` applies it,
    its `defaults: [override /model: x]` included."""
    cfg = compose(["+demo_sizes=tiny"])
    assert cfg.model.name == "tiny" and cfg.data.tokens == 2_000_000
    assert cfg.data.branches == [250_000, 500_000, 1_000_000]


@pytest.mark.parametrize(
    "override",
    ["model.d_modle=64", "data.tokens=lots", "train.batch_size=1.5", "model=nonexistent"],
)
def test_typos_and_wrong_types_fail_at_composition(override):
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)):
        compose([override])


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["model.mixer=mamba"], None),
        (["model.mixer=conv", "model.conv_kernel=0"], r"model\.conv_kernel must be in \[1, "),
        (["model.mixer=conv", "model.conv_kernel=999"], r"model\.conv_kernel must be in \[1, "),
        (["model.mixer=lstm", "model.positions=rope"], r"model\.positions=rope rotates"),
    ],
)
def test_bad_mixer_settings_are_one_clear_line(overrides, match):
    from hydra.errors import ConfigCompositionException

    from lab.config.composition import compose

    if match is None:  # a choice outside the Enum fails at composition, naming the values
        with pytest.raises(ConfigCompositionException) as error:
            compose(overrides)
        assert "attention, conv, lstm" in str(error.value.__cause__)
        return
    with pytest.raises(ValueError, match=match):
        validate(compose(overrides))


def test_parallel_settings_in_the_config_hash():
    """fsdp is another config (its checkpoints and its reductions differ); ddp keeps the
    hash runs had before the field existed; block checkpointing computes the same run."""
    from dataclasses import replace

    from lab.config.schema import Config, config_hash

    base = Config()
    assert base.train.parallel == "ddp"
    fsdp = replace(base, train=replace(base.train, parallel="fsdp"))
    recompute = replace(base, train=replace(base.train, activation_checkpointing="block"))
    assert config_hash(fsdp) != config_hash(base)
    assert config_hash(recompute) == config_hash(base)
    with pytest.raises(ValueError, match="train.parallel must be one of"):
        replace(base.train, parallel="zero3")
