"""Training one run: ``train(cfg, out_dir)`` (the recipe, ``run``), what it checks first
(``setup``), the ``Trainer`` (model, optimizer, step), the ``Loop`` and its parts,
evaluation, learning-rate schedules, WSD branches, resuming, and DDP."""

from lab._lazy import exports

_PUBLIC = {
    "train": "run",
    "Trainer": "trainer",
    **dict.fromkeys(("Loop", "Part"), "loop"),
    **dict.fromkeys(("lr_at", "StepPlan"), "schedule"),
}
__all__ = sorted(_PUBLIC)
__getattr__ = exports(__name__, _PUBLIC)
