"""Shared fixtures. Tests run on the CPU; CUDA-only tests carry the `gpu` marker."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

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
