"""The lab: GPT-style models trained on exactly D tokens, their runs recorded for scaling
analysis. From Python::

    import lab
    cfg = lab.compose(["model=tiny", "data.tokens=500000"])   # as lab-train composes it
    record = lab.train(cfg, "runs/notebook/tiny")            # the run's result.json

Wings, each importing only those below it (``make lint`` holds this): ``cli`` (entry points,
sweeps, the planner) → ``inspection`` (looking inside trained models) → ``training`` (the
run, the trainer, the loop) → ``runs`` (what a run folder holds: records, checkpoints,
trackers, exports) → ``model`` and ``data`` → ``config`` (settings, counting, the record
schema).
"""

from lab._lazy import exports

_PUBLIC = {"compose": "config.composition", "Config": "config.schema", "train": "training.run"}
__all__ = sorted(_PUBLIC)
__getattr__ = exports(__name__, _PUBLIC)
