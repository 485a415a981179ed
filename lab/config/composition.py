"""``compose(overrides)``: the ``Config`` a run with these Hydra overrides trains, composed
from ``conf/`` and ``sweeps/`` exactly as ``lab-train`` composes it, without running
anything (Hydra's compose API: a notebook, a test or the planner gets the same config)."""

from __future__ import annotations

import re

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from lab.config.schema import CONF_DIR, Config, from_dict, register_configs

SCIENTIFIC_INTEGER = re.compile(r"^\+?\d+(\.\d*)?[eE]\+?\d+$")


def normalize_overrides(overrides: list[str]) -> list[str]:
    """The overrides with whole numbers written in scientific notation as integers
    (``data.tokens=1e5`` → ``data.tokens=100000``, in comma lists too): Hydra reads 1e5 as
    a float, which an integer field refuses; a float field takes the integer as it is."""
    out = []
    for o in overrides:
        key, eq, value = o.partition("=")
        if not eq or o.startswith("-") or "(" in value or "[" in value:
            out.append(o)
            continue
        items = value.split(",")
        for i, item in enumerate(items):
            if SCIENTIFIC_INTEGER.match(item) and float(item).is_integer() and float(item) < 1e30:
                items[i] = str(int(float(item)))
        out.append(f"{key}={','.join(items)}")
    return out


def compose_hydra(overrides: list[str], hydra_config: bool = False) -> DictConfig:
    """The composed DictConfig (with the ``hydra`` node when ``hydra_config``)."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra_config)


def compose(overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The Config a run with these overrides trains, e.g. ``compose(["model=tiny",
    "data.tokens=500000"])``. Raises Hydra's ConfigCompositionException for an unknown key,
    a wrong type or a value outside a choice (the message names the allowed values)."""
    dcfg = compose_hydra(normalize_overrides(list(overrides)))
    return from_dict(OmegaConf.to_container(dcfg, resolve=True))
