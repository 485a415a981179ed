"""Every file in conf/ and sweeps/ composes into a valid Config; schema errors are caught."""

from __future__ import annotations

import itertools
import json

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from lab.config import validate
from lab.sweeps import CONF_DIR, SWEEPS_DIR, compose_run, expand_sweep

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
    cfg = compose_run([f"{group}={option}"])
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
    (tmp_path / "runs" / "lr" / "analysis").mkdir(parents=True)
    (tmp_path / "runs" / "lr" / "analysis" / "lr.json").write_text(json.dumps(law))
    for job in jobs:
        validate(compose_run(list(job)))


def test_demo_sweep_is_four_sizes_by_three_budgets():
    jobs = expand_sweep("demo")
    runs = {(compose_run(j).model.name, compose_run(j).data.tokens) for j in jobs}
    models = {m for m, _ in runs}
    budgets = {d for _, d in runs}
    assert len(jobs) == 12 and len(models) == 4 and len(budgets) == 3
    assert runs == set(itertools.product(models, budgets))


@pytest.mark.parametrize(
    "override",
    ["model.d_modle=64", "data.tokens=lots", "train.batch_size=1.5", "model=nonexistent"],
)
def test_typos_and_wrong_types_fail_at_composition(override):
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)):
        compose_run([override])


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

    from lab.config import validate
    from lab.sweeps import compose_run

    if match is None:  # a choice outside the Enum fails at composition, naming the values
        with pytest.raises(ConfigCompositionException) as error:
            compose_run(overrides)
        assert "attention, conv, lstm" in str(error.value.__cause__)
        return
    with pytest.raises(ValueError, match=match):
        validate(compose_run(overrides))
