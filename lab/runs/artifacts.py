"""Reading a trained model back: from a run folder's checkpoint, a checkpoint file, or a
folder written by ``lab-export`` (either format), with its tokenizer. ``lab-generate``,
``lab-inspect`` and ``lab-export`` all read models through ``load_model``."""

from __future__ import annotations

import json
from pathlib import Path

from lab.config.record import CHECKPOINT_NAME
from lab.config.schema import ModelConfig
from lab.data.tokenizer import ByteTokenizer, from_payload
from lab.model.gpt import GPT
from lab.runs.checkpoint import load_checkpoint
from lab.runs.hf_format import LAB_MODEL, WEIGHTS, from_hf


def load_model(path: str | Path, device: str = "cpu") -> tuple[GPT, object]:
    """The model in a run folder's checkpoint (or a checkpoint file, or a folder written by
    ``lab-export``), in eval mode, and its tokenizer. Raises FileNotFoundError for a missing checkpoint and ValueError for a
    foreign file."""
    path = Path(path)
    if path.is_dir() and not (path / CHECKPOINT_NAME).exists():
        if is_export(path):  # a folder written by lab-export
            model, tok = load_export(path)
            return model.to(device).eval(), tok
    file = path / CHECKPOINT_NAME if path.is_dir() else path
    if not file.exists():
        where = f"{path} has no {CHECKPOINT_NAME}" if path.is_dir() else f"{path} does not exist"
        raise FileNotFoundError(f"no checkpoint to load: {where}")
    payload = load_checkpoint(file, map_location=device)
    model = GPT(ModelConfig(**payload["model_config"]))
    model.load_state_dict(payload["model"])
    tok = payload.get("tokenizer")
    return model.to(device).eval(), from_payload(tok) if isinstance(tok, dict) else ByteTokenizer()


def is_export(path: Path) -> bool:
    return (Path(path) / LAB_MODEL).exists() and (Path(path) / WEIGHTS).exists()


def load_export(path: str | Path) -> tuple[GPT, object]:
    """The lab model in an exported folder (either format) and its tokenizer."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = json.loads((path / LAB_MODEL).read_text())
    model = GPT(ModelConfig(**meta["model_config"]))
    weights = load_file(str(path / WEIGHTS))
    if meta["format"] == "hf":
        weights = from_hf(model, weights)
    model.load_state_dict(weights)
    tok = meta.get("tokenizer")
    return model.eval(), from_payload(tok) if isinstance(tok, dict) else ByteTokenizer()
