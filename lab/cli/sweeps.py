"""Expand sweep files without running anything.

``expand_sweep("demo")`` returns the override list of every run the sweep launches, in
the order of Hydra's basic sweeper (the cartesian product of the swept values, the last
key varying fastest), and ``lab.config.composition.compose`` turns one such list into the
``Config`` that run would train. Tests use these to check that every
sweep file composes and promises the runs it says; a planner can print them.
"""

from __future__ import annotations

import itertools
import math

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep

from lab.config.composition import compose_hydra, normalize_overrides
from lab.config.schema import SWEEPS_DIR


def sweep_config(name: str, overrides: list[str] | None = None):
    """sweeps/NAME.yaml composed with ``overrides``, Hydra's own config included (its
    sweeper's params, its launcher), without the command line's own sweeps (a, b, c lists,
    which ``expand_sweep`` expands)."""
    if not (SWEEPS_DIR / f"{name}.yaml").exists():
        raise ValueError(f"unknown sweep {name!r}")
    overrides = [f"+sweeps={name}", *normalize_overrides(overrides or [])]
    given = OverridesParser.create().parse_overrides(overrides)
    return compose_hydra([o.input_line for o in given if not o.is_sweep_override()], True)


def expand_sweep(name: str, overrides: list[str] | None = None, cfg=None) -> list[list[str]]:
    """The overrides of every run in sweeps/NAME.yaml (with extra ``overrides``); ``cfg``:
    its ``sweep_config``, when the caller has it already."""
    cfg = sweep_config(name, overrides) if cfg is None else cfg
    overrides = [f"+sweeps={name}", *normalize_overrides(overrides or [])]
    params = cfg.hydra.sweeper.params or {}
    swept = [f"{k}={v}" for k, v in params.items()]
    parsed = OverridesParser.create().parse_overrides(overrides + swept)
    choices = [_choices(o) for o in parsed]
    jobs = [list(job) for job in itertools.product(*choices)]
    # an optimising sweeper (Optuna) searches intervals for n_trials runs: each trial is
    # stood in for by the intervals' midpoints (what --plan times and the tests validate)
    trials = cfg.hydra.sweeper.get("n_trials") if "n_trials" in cfg.hydra.sweeper else None
    if any(isinstance(o.value(), IntervalSweep) for o in parsed) and trials:
        jobs = jobs * int(trials)
    return jobs


def _choices(o) -> list[str]:
    """The values one override takes in a sweep: each of a list, range or choice; the
    midpoint of an interval (geometric for a log-tagged one)."""
    value = o.value()
    if isinstance(value, IntervalSweep):
        lo, hi = float(value.start), float(value.end)
        mid = math.sqrt(lo * hi) if "log" in value.tags and lo > 0 else (lo + hi) / 2
        return [f"{o.get_key_element()}={mid:.6g}"]
    if o.is_sweep_override():
        return [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
    return [o.input_line]
