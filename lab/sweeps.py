"""Compose configs and expand sweep files without running anything.

``expand_sweep("demo")`` returns the override list of every run the sweep launches, in
the order of Hydra's basic sweeper (the cartesian product of the swept values, the last
key varying fastest), and ``compose_run`` turns one
such list into the ``Config`` that run would train. Tests use these to check that every
sweep file composes and promises the runs it says; a planner can print them.
"""

from __future__ import annotations

import itertools

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from lab.config import CONF_DIR, SWEEPS_DIR, Config, from_dict, register_configs


def _compose(overrides: list[str], hydra_config: bool = False):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra_config)


def compose_run(overrides: list[str]) -> Config:
    """The Config a run with these overrides trains (schema errors raise here)."""
    dcfg = _compose(overrides)
    return from_dict(OmegaConf.to_container(dcfg, resolve=True))


def expand_sweep(name: str, overrides: list[str] | None = None) -> list[list[str]]:
    """The overrides of every run in sweeps/NAME.yaml (with extra ``overrides``)."""
    if not (SWEEPS_DIR / f"{name}.yaml").exists():
        raise ValueError(f"unknown sweep {name!r}")
    overrides = [f"+sweeps={name}", *(overrides or [])]
    cfg = _compose(overrides, hydra_config=True)
    params = cfg.hydra.sweeper.params or {}
    swept = [f"{k}={v}" for k, v in params.items()]
    parsed = OverridesParser.create().parse_overrides(overrides + swept)
    choices = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [o.input_line]
        for o in parsed
    ]
    return [list(job) for job in itertools.product(*choices)]
