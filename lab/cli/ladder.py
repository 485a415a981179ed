"""The lab's model ladder, for ``lab-analyze design``: each size in ``conf/model/`` and its
parameter count under both conventions (with the byte vocabulary the corpus defaults to),
and where sweep files live. The analysis never imports the lab's configuration; the
console command hands it these (imported only when ``design`` asks, so every other
``lab-analyze`` command starts as fast as before)."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def model_sizes() -> dict[str, dict[str, int]]:
    """name → {"non_embedding": N, "total": N} for every ``conf/model/NAME.yaml``."""
    from dataclasses import replace

    from lab.config.composition import compose
    from lab.config.counting import param_counts
    from lab.config.schema import CONF_DIR
    from lab.data.tokenizer import ByteTokenizer

    out = {}
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        model = compose([f"model={path.stem}"]).model
        counts = param_counts(replace(model, vocab_size=ByteTokenizer.vocab_size))
        out[path.stem] = {"non_embedding": counts["non_embedding"], "total": counts["total"]}
    return out


def sweeps_dir() -> Path:
    from lab.config.schema import SWEEPS_DIR

    return SWEEPS_DIR


LADDER = {"sizes": model_sizes, "sweeps_dir": sweeps_dir}
