"""The benchmark command runs end to end (tiny shapes, on the CPU: a check of the script,
so the scarce GPU time is not lost to a typo). Its figures are not asserted."""

from __future__ import annotations

import csv

from kernels import bench


def test_layernorm_benchmark_smoke_writes_a_table(tmp_path, capsys):
    out = tmp_path / "ln.csv"
    assert bench.main(["layernorm", "--smoke", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {r["impl"] for r in rows} == {"triton", "torch"}
    assert {"fwd_GBps", "bwd_GBps", "fwd_GBps_vs_torch", "fwd_GBps_vs_copy"} <= set(rows[0])
    assert all(float(r["fwd_GBps"]) > 0 for r in rows)
    assert "shape" in capsys.readouterr().out


def test_gemm_benchmark_smoke_writes_a_table(tmp_path):
    out = tmp_path / "gemm.csv"
    assert bench.main(["gemm", "--smoke", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {r["op"] for r in rows} == {"gemm matmul", "gemm bias+gelu"}
    assert {r["impl"] for r in rows} == {"triton", "torch"}
    assert all(float(r["TFLOPs"]) > 0 and float(r["TFLOPs_vs_torch"]) > 0 for r in rows)


def test_attention_benchmark_smoke_writes_a_table(tmp_path):
    out = tmp_path / "attention.csv"
    assert bench.main(["attention", "--smoke", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {r["impl"] for r in rows} == {"triton", "torch"}
    assert all(float(r["fwd_TFLOPs"]) > 0 and float(r["bwd_TFLOPs"]) > 0 for r in rows)


def test_attention_benchmark_compares_tma_with_pointer_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELS_ATTENTION_TMA", "1")  # the interpreter emulates descriptors
    out = tmp_path / "attention.csv"
    assert bench.main(["attention", "--smoke", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {r["impl"] for r in rows} == {"triton", "triton-ptr", "torch"}


def test_conv_benchmark_smoke_writes_a_table(tmp_path):
    out = tmp_path / "conv.csv"
    assert bench.main(["conv", "--smoke", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {r["impl"] for r in rows} == {"triton", "torch"}
    assert all(float(r["fwd_GBps"]) > 0 and float(r["bwd_GBps_vs_torch"]) > 0 for r in rows)
