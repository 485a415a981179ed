"""The benchmark command runs end to end (tiny shapes, on the CPU: a check of the script,
so the scarce GPU time is not lost to a typo). Its figures are not asserted."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

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
    assert {r["op"] for r in rows} == {"gemm matmul", "gemm bias+gelu", "gemm dW"}
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


def test_rows_are_saved_as_they_are_measured(tmp_path, capsys):
    """A run cut short (a time limit, a crash) keeps the shapes it finished."""
    out = tmp_path / "partial.csv"

    def groups():
        yield [{"op": "x", "shape": "1", "impl": "triton", "GBps": 1.0}]
        yield [{"op": "x", "shape": "2", "impl": "triton", "GBps": 2.0}]
        raise KeyboardInterrupt  # the timeout's signal, say

    with pytest.raises(KeyboardInterrupt):
        bench.stream_table(groups(), "header", str(out))
    assert [r["shape"] for r in csv.DictReader(out.open())] == ["1", "2"]
    printed = capsys.readouterr().out
    assert "header" in printed and printed.count("triton") == 2


def _gpu_check(*args):
    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True)


def test_gpu_check_plans_two_calls_that_each_fit_nine_minutes():
    """``--dry-run`` lists each stage with its estimate and time limit; the first call (the
    default stages) and the second (conv, gpt2) each fit 540 s of limits."""
    for stages, expected in (
        ([], ["smoke", "layernorm", "gemm", "attention"]),
        (["conv", "gpt2"], ["conv", "gpt2"]),
    ):
        result = _gpu_check("--dry-run", *stages)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = [line.split() for line in result.stdout.splitlines()[1:]]
        assert [line[0] for line in lines[:-1]] == expected
        limits = [int(line[2].rstrip("s")) for line in lines[:-1]]
        assert int(lines[-1][2].rstrip("s")) == sum(limits) <= 540
    assert _gpu_check("--dry-run", "smoke", "gpt2", "attention").returncode == 1  # too long
    bad = _gpu_check("--dry-run", "everything")
    assert bad.returncode == 2 and "unknown stage 'everything'" in bad.stderr


def test_gpu_smoke_stage_is_gpu_only_and_covers_every_op():
    """The smoke stage's tests all carry the gpu marker (skipped here) and call each op's
    reference check."""
    import test_gpu_smoke

    assert test_gpu_smoke.pytestmark.name == "gpu"
    source = Path(test_gpu_smoke.__file__).read_text()
    for check in ("check_attention", "check_linear", "check_norm", "check_conv", "gemm.matmul"):
        assert source.count(check + "(") >= 1, check
