"""Checkpoints: everything a run needs to continue on the same trajectory, written
atomically (a temporary file, then a rename) and loadable with ``weights_only=True``.

A checkpoint holds the model and optimizer states, the loop's counters, the data sampler's
random state (NumPy's PCG64 state, plain integers) and torch's RNG state (for dropout), and
the hash of the config it belongs to, so a resume with a different config is refused.

Under ``train.parallel=fsdp`` the tensors are sharded: every rank writes its shards of the
model and optimizer states through ``torch.distributed.checkpoint`` (DCP) into
``checkpoint.dcp/step-<step>/``, and ``checkpoint.pt`` holds the rest with the name of that
folder. DCP reshards on load, so such a checkpoint resumes at any number of processes (one
included). The optimizer state is keyed by parameter name there (PyTorch's distributed
``state_dict`` API), not by position.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from lab.config.record import CHECKPOINT_NAME, SHARDED_NAME
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


# -- train.parallel=fsdp -------------------------------------------------------------------
def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def _one_process_is_fine():
    """DCP warns that it assumes a single process when there is no process group: that
    is what the lab means then."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def is_sharded(module) -> bool:
    """Whether ``module`` is an FSDP2 module (its parameters are DTensor shards)."""
    return hasattr(module, "set_requires_gradient_sync") and hasattr(module, "reshard")


def _resharded(model):
    """``model`` with every FSDP2 module's parameters back in their shards: after a forward
    without a backward (an evaluation) the root's stay gathered, and the state_dict API
    needs the shards."""
    for m in model.modules():
        if is_sharded(m):
            m.reshard()
    return model


def save_sharded(folder: Path, step: int, model, optimizer, meta: dict, main: bool) -> None:
    """Every rank's shards of the model and optimizer states into
    ``folder/checkpoint.dcp/step-<step>/``; then (rank 0) ``meta``, the payload without its
    tensors, as ``folder/checkpoint.pt`` naming that folder, and older step folders removed.
    A process killed anywhere in this leaves the last complete pair."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = folder / SHARDED_NAME
    if root.is_symlink():
        raise ValueError(f"{root} is a symbolic link; the lab writes no run file through one")
    target = root / f"step-{step:09d}"
    if main and target.exists():  # left by a save of this step that did not finish
        shutil.rmtree(target)
    _barrier()
    model_state, optim_state = get_state_dict(_resharded(model), optimizer)
    with _one_process_is_fine():
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=target)
    _barrier()
    if main:
        pointer = {**meta, "model": None, "optimizer": None, "sharded": target.name}
        save_checkpoint(folder / CHECKPOINT_NAME, pointer)
        for old in root.glob("step-*"):
            if old != target and not old.is_symlink():
                shutil.rmtree(old)
    _barrier()


def sharded_folder(payload: dict, folder: Path) -> Path:
    """The DCP folder a sharded checkpoint's ``checkpoint.pt`` names; FileNotFoundError when
    it is missing or incomplete (no ``.metadata``)."""
    target = Path(folder) / SHARDED_NAME / str(payload["sharded"])
    if not (target / ".metadata").is_file():
        raise FileNotFoundError(
            f"the checkpoint in {folder} names its tensors in {target}, which is missing or "
            "incomplete (train.resume=false starts over)"
        )
    return target


def load_sharded(payload: dict, folder: Path, model, optimizer=None) -> None:
    """Load a sharded checkpoint's tensors into ``model`` (and ``optimizer``), resharded to
    however many processes this is (a plain module in one process)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    target = sharded_folder(payload, folder)
    if optimizer is None:
        state = {"model": model.state_dict()}  # loaded in place, into the parameters
        with _one_process_is_fine():
            dcp.load(state, checkpoint_id=target)
        return
    model_state, optim_state = get_state_dict(_resharded(model), optimizer)
    with _one_process_is_fine():
        dcp.load({"model": model_state, "optim": optim_state}, checkpoint_id=target)
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state)


def full_state(model, optimizer) -> tuple[dict, dict]:
    """The whole model and optimizer states on the CPU (a WSD snapshot under fsdp), from
    sharded or plain modules alike; with several processes only rank 0 holds them."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return (
        get_model_state_dict(_resharded(model), options=options),
        get_optimizer_state_dict(model, optimizer, options=options),
    )


def load_full_state(model, optimizer, model_state: dict, optim_state: dict) -> None:
    """``full_state``'s result loaded back (broadcast from rank 0 with several processes)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    several = dist.is_available() and dist.is_initialized()
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=several)
    set_model_state_dict(_resharded(model), model_state, options=options)
    set_optimizer_state_dict(model, optimizer, optim_state, options=options)
