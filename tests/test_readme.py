"""The README's "From Python" session runs as written: on a sweep that stands in for the
demo's runs (records written as the lab writes them), in a fresh process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import synthetic_sweep

ROOT = Path(__file__).resolve().parents[1]


def from_python_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### From Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_from_python_session_runs_as_written(tmp_path):
    synthetic_sweep(tmp_path / "runs" / "demo")
    out = subprocess.run(
        [sys.executable, "-c", from_python_block()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("L = ") and "/ N^" in lines[0]
    assert sum(line.strip().startswith(("E =", "alpha =", "beta =")) for line in lines) == 3
    assert any("95% prediction interval" in line for line in lines)
    assert lines[-1].startswith("trained: ")
    assert (tmp_path / "runs" / "demo" / "notebook.png").stat().st_size > 0
    assert (tmp_path / "runs" / "notebook" / "nano-600k" / "result.json").exists()
