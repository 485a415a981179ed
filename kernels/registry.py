"""The op registry and backend choice: one ``OpSpec`` per op, from which dispatch, the
backend checks, ``kernels.compile_check``, ``kernels.bench`` and the tests take their lists.

An op is registered by decorating its public function (``kernels/ops.py``) with
``@register(...)``; the spec names the op's reference math, its Triton entry point as
"module:function" (imported on first use, so the torch backend never imports Triton) and
its kernel group (the name ``compile_check`` and ``bench`` know the kernel file by).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

BACKENDS = ("auto", "torch", "triton")


@dataclass(frozen=True)
class OpSpec:
    name: str
    reference: Callable  # the plain math (kernels.reference), the tests' source of truth
    triton: str | None  # "module:function" of the Triton entry point, or None
    group: str | None  # the kernel file's group name in compile_check and bench

    @property
    def triton_module(self) -> str | None:
        return self.triton.split(":")[0] if self.triton else None


OPS: dict[str, OpSpec] = {}
_backend: dict[str, str] = {}


def register(*, reference: Callable, triton: str | None = None, group: str | None = None):
    """Decorator: register the decorated public op under its function name."""

    def wrap(fn: Callable) -> Callable:
        if fn.__name__ in OPS:
            raise ValueError(f"op {fn.__name__!r} is registered twice")
        OPS[fn.__name__] = OpSpec(fn.__name__, reference, triton, group)
        _backend[fn.__name__] = "auto"
        return fn

    return wrap


def kernel_groups() -> dict[str, str]:
    """Kernel group name → the module holding its Triton kernels."""
    return {s.group: s.triton_module for s in OPS.values() if s.triton}


def _check_choice(op: str, backend: str) -> None:
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops are {tuple(OPS)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend for {op} must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton" and OPS[op].triton is None:
        have = sorted(n for n, s in OPS.items() if s.triton) or "none"
        raise ValueError(
            f"op {op!r} has no Triton kernel (ops with one: {have}); "
            f"use backend 'torch' or 'auto' for {op}"
        )


def set_backend(backend: str | None = None, /, **per_op: str) -> None:
    """Choose backends: ``set_backend("torch")`` for every op, ``set_backend(linear="triton")``
    for one, or both (per-op choices win). Raises ValueError for an unknown op or backend,
    or "triton" for an op that has no Triton kernel."""
    choice = dict.fromkeys(OPS, backend) if backend is not None else {}
    choice.update(per_op)
    for op, b in choice.items():
        _check_choice(op, b)
    _backend.update(choice)


def get_backend() -> dict[str, str]:
    """The backend chosen for each op ("auto", "torch" or "triton")."""
    return dict(_backend)


@contextlib.contextmanager
def use_backend(backend: str | None = None, /, **per_op: str) -> Iterator[None]:
    """``set_backend`` for the duration of a ``with`` block."""
    saved = get_backend()
    set_backend(backend, **per_op)
    try:
        yield
    finally:
        _backend.update(saved)


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def backend_for(op: str, device: torch.device | str) -> str:
    """The backend ("torch" or "triton") that ``op`` runs on for tensors on ``device``."""
    chosen = _backend[op]
    device_type = torch.device(device).type
    if chosen == "auto":
        return "triton" if OPS[op].triton and device_type == "cuda" else "torch"
    if chosen == "triton" and device_type != "cuda" and not interpreting():
        raise RuntimeError(
            f"{op}: the triton backend needs CUDA tensors, or TRITON_INTERPRET=1 set before "
            f"importing kernels to run on the CPU (got tensors on {device_type})"
        )
    return chosen


@functools.cache
def triton_entry(op: str) -> Callable:
    """The op's Triton function, imported once (this sits on every op call)."""
    module, name = OPS[op].triton.split(":")
    return getattr(importlib.import_module(module), name)
