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
from lab.runs.checkpoint import load_checkpoint, load_sharded
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
    if payload.get("sharded"):  # train.parallel=fsdp: its tensors in checkpoint.dcp/
        load_sharded(payload, file.parent, model)
    else:
        model.load_state_dict(payload["model"])
    tok = payload.get("tokenizer")
    return model.to(device).eval(), from_payload(tok) if isinstance(tok, dict) else ByteTokenizer()


def is_export(path: Path) -> bool:
    return (Path(path) / LAB_MODEL).exists() and (Path(path) / WEIGHTS).exists()


def load_export(path: str | Path) -> tuple[GPT, object]:
    """The lab model in an exported folder (either format) and its tokenizer. Raises
    ValueError naming the file when lab_model.json or the weights do not make a model."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        meta = json.loads((path / LAB_MODEL).read_text())
        model = GPT(ModelConfig(**meta["model_config"]))
        fmt = meta["format"]
        tok = meta.get("tokenizer")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path / LAB_MODEL} does not describe a lab model: {e}") from None
    try:
        weights = load_file(str(path / WEIGHTS))
        if fmt == "hf":
            weights = from_hf(model, weights)
        model.load_state_dict(weights)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path / WEIGHTS} does not fit {path / LAB_MODEL}: {first}") from None
    return model.eval(), from_payload(tok) if isinstance(tok, dict) else ByteTokenizer()
