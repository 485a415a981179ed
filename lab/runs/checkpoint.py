"""Checkpoints: everything a run needs to continue on the same trajectory, written
atomically (a temporary file, then a rename) and loadable with ``weights_only=True``.

A checkpoint holds the model and optimizer states, the loop's counters, the data sampler's
random state (NumPy's PCG64 state, plain integers) and torch's RNG state (for dropout), and
the hash of the config it belongs to, so a resume with a different config is refused.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lab.runs.files import write_atomic


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save, written atomically (``lab.runs.records.write_atomic``)."""
    write_atomic(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; FileNotFoundError if there is none, and
    ValueError for a file that is not one of this lab's checkpoints."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint to resume from: {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(
            f"{path} is not a checkpoint of this lab (torch.load could not read it: {first})"
        ) from None
    if not isinstance(payload, dict) or "model" not in payload or "model_config" not in payload:
        raise ValueError(f"{path} is not a checkpoint of this lab (no model or model_config)")
    return payload


def capture_rng(numpy_rng) -> dict:
    state = {"numpy": numpy_rng.bit_generator.state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(numpy_rng, state: dict) -> None:
    numpy_rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
