"""Shared fixtures. Tests run on the CPU; CUDA-only tests carry the `gpu` marker."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HYDRA_FULL_ERROR", "0")
# tokenized corpora and BPE tokenizers of this test session, apart from the user's cache
if "LAB_CACHE_DIR" not in os.environ:
    os.environ["LAB_CACHE_DIR"] = tempfile.mkdtemp(prefix="lab-test-cache-")
    atexit.register(shutil.rmtree, os.environ["LAB_CACHE_DIR"], ignore_errors=True)
if not torch.cuda.is_available():
    # Triton kernels run on the CPU through Triton's interpreter; it must be chosen before
    # any kernel module is imported (the @triton.jit decorator reads it).
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `make test-gpu` on one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _reset_backend():
    import kernels

    saved = kernels.get_backend()
    yield
    kernels.set_backend(**saved)


# -- a sweep without training: records as the lab writes them, losses from a known law -------
# a run small enough to train in seconds through the command line (Hydra overrides)
TINY_RUN = [
    "model=nano",
    "model.context=32",
    "train.batch_size=8",
    "train.eval_batches=1",
    "data.max_bytes=100000",
    "train.device=cpu",
    "train.threads=1",
]

SWEEP_LAW = {"E": 1.7, "A": 300.0, "alpha": 0.36, "B": 900.0, "beta": 0.3}


def synthetic_sweep(root: Path, seed: int = 0) -> Path:
    """A sweep folder of 16 finished runs (4 sizes × 4 budgets) whose losses follow a
    Chinchilla law with 1% noise, as the lab writes them: records, then the sweep's table."""
    from lab.cli.commands import write_sweep_table
    from lab.runs.files import write_json_atomic

    rng = np.random.default_rng(seed)
    for i, n in enumerate((30e3, 100e3, 300e3, 1e6)):
        for d in (1e6, 3e6, 1e7, 3e7):
            loss = (
                SWEEP_LAW["E"]
                + SWEEP_LAW["A"] / n ** SWEEP_LAW["alpha"]
                + SWEEP_LAW["B"] / d ** SWEEP_LAW["beta"]
            )
            loss *= float(np.exp(rng.normal(0, 0.01)))
            attn = 0.3 * 6 * n * d  # the attention FLOPs: a share of 6ND, as at small sizes
            write_json_atomic(
                root / f"+size=s{i},data.tokens={int(d)}" / "result.json",
                {
                    "status": "ok",
                    "config": {"model": {"name": f"s{i}"}, "data": {"tokens": int(d)}},
                    "n_params_non_embedding": int(n),
                    "n_params_total": int(n * 1.3),
                    "tokens": int(d),
                    "budget": None,
                    "flops_6N": 6 * n * d,
                    "flops_6N_attn": 6 * n * d + attn,
                    "flops_6N_attn_head": 6 * n * d + attn * 1.2,
                    "val_loss": loss,
                    "train_loss": loss * 0.98,
                    "val_loss_se": 0.004,
                    "unique_tokens": 4e7,
                    "epochs": d / 4e7,
                },
            )
    assert write_sweep_table(root) is not None
    return root
