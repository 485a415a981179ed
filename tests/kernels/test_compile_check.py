"""The Triton kernels build for Hopper (sm_90) with the installed triton, on a machine
without a GPU: attention on both read paths (TMA descriptors and pointers), causal or not,
with and without dropout; the GEMM's products and activation backward for every registered
activation; layer norm and RMSNorm forward and backward; the causal convolution's three
kernels. Each kernel's first tile. A build
that fails, or one that needs more shared memory than an H100/H200 block can have, fails
here, before any GPU time is spent on it. ``make test-slow`` builds attention at head dim
64, and at 64 and 128."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from kernels import activations
from kernels.compile_check import HOPPER_SMEM
from kernels.registry import kernel_groups


def _build(tmp_path, head_dims):
    out = tmp_path / "builds.csv"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, not interpret
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")  # a real build, not a cached one
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton 3.9 warns when it is unset
    cmd = [sys.executable, "-m", "kernels.compile_check", *kernel_groups(), "--first"]
    cmd += ["--head-dims", *map(str, head_dims), "--csv", str(out)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    built = {(r["kernel"], r["path"], r["case"]) for r in rows if r["op"] == "attention"}
    for kernel in ("forward", "delta", "dk/dv", "dq"):
        for path in ("tma", "pointers"):
            for D in head_dims:
                for case in ("causal", "full", "causal dropout"):
                    assert (kernel, path, f"D={D} {case}") in built
    kernels = {(r["op"], r["kernel"]) for r in rows}
    assert {("gemm", "matmul"), ("gemm", "activation bwd")} <= kernels
    assert {("layernorm", "forward"), ("layernorm", "backward")} <= kernels
    assert {("conv", "forward"), ("conv", "backward dz, dw"), ("conv", "backward dx")} <= kernels
    gemm_cases = {r["case"] for r in rows if r["op"] == "gemm"}
    for name in activations.ACTIVATIONS:
        assert f"4096x3072x768 bias {name or 'no act'}" in gemm_cases
    assert all(r["status"] == "ok" for r in rows)
    assert all(0 <= int(r["shared"]) <= HOPPER_SMEM for r in rows)


@pytest.mark.slow  # about 80 s of compiling: make test-slow, and before any GPU window
def test_kernels_build_for_sm90(tmp_path):
    _build(tmp_path, [64])


@pytest.mark.slow
def test_kernels_build_for_sm90_every_head_dim(tmp_path):
    _build(tmp_path, [64, 128])


@pytest.mark.slow  # make test-slow: make test stays within its 10 minutes
def test_hopper_layouts_of_the_hot_loops(tmp_path):
    """What the sm_90 compiler output says about the inner loops (``--ttgir``), pinned so a
    regression shows on the CPU. Before kernels/BENCHMARKS.md's restructure the dK/dV loop
    ran two of its four products with duplicated warps and moved Pᵀ and dSᵀ through shared
    memory by register transposes every iteration, and the GEMM's gelu epilogue spilled."""
    out = tmp_path / "builds.csv"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    cmd = [sys.executable, "-m", "kernels.compile_check", "attention", "gemm", "--first"]
    cmd += ["--head-dims", "64", "--ttgir", "--csv", str(out)]
    cmd += ["--case", "D=64 causal", "--case", "D=64 causal atomic-dq"]
    cmd += ["--case", "4096x3072x768 bias gelu_tanh"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))

    def builds(kernel, case):
        found = [r for r in rows if r["kernel"] == kernel and r["case"] == case]
        assert {r["path"] for r in found} >= {"tma", "pointers"}, (kernel, case)
        return found

    for r in builds("dk/dv", "D=64 causal"):  # Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, dV, dK
        assert (r["dots/iter"], r["dup dots"], r["smem/iter"], r["reg trans/iter"]) == (
            "4",
            "0",
            "0",
            "0",
        ), r
    for r in builds("dk/dv", "D=64 causal atomic-dq"):  # + dQ = dS·K, one transpose of dS
        assert (r["dots/iter"], r["dup dots"], r["reg trans/iter"]) == ("5", "0", "1"), r
    for kernel, products in (("forward", "2"), ("dq", "3")):
        for r in builds(kernel, "D=64 causal"):
            assert (r["dots/iter"], r["dup dots"], r["smem/iter"]) == (products, "0", "0"), r
    for r in builds("dk/dv", "D=64 causal") + builds("forward", "D=64 causal"):
        assert int(r["async loads/iter"]) >= 2 and r["spill_bytes"] == "0", r  # prefetched
    for r in builds("matmul", "4096x3072x768 bias gelu_tanh"):
        assert r["spill_bytes"] == "0" and r["dup dots"] == "0", r
        assert int(r["async loads/iter"]) == 2, r  # A and B tiles ahead of the product
