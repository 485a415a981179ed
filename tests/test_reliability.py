"""Nothing lost, nothing mixed up: files the lab writes are readable by the team, and the
install names no package index."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import torch

from lab.checkpoint import save_checkpoint
from lab.records import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]


def test_records_and_checkpoints_get_the_umask_modes(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "result.json", {"a": 1})
        save_checkpoint(tmp_path / "checkpoint.pt", {"model": {"w": torch.ones(2)}})
    finally:
        os.umask(old)
    for name in ("result.json", "checkpoint.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert not list(tmp_path.glob(".*.tmp"))


def test_install_script_names_no_package_index_host():
    text = (ROOT / "scripts" / "install.sh").read_text()
    assert "://" not in text
