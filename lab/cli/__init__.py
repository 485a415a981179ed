"""The command lines, on top of every wing: the console entry points (``entry``: lab-train,
lab-sweep, lab-analyze, lab-generate, lab-inspect, lab-export), the Hydra app and the
sweep's table (``commands``), sweep expansion (``sweeps``), the planner (``plan``) and the
step benchmark (``bench``)."""

from lab._lazy import exports

_PUBLIC = {"expand_sweep": "sweeps"}
__all__ = sorted(_PUBLIC)
__getattr__ = exports(__name__, _PUBLIC)
