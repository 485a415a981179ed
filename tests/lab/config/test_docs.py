"""Config discovery: every key's description in ``lab-train --help`` and in the README's
table, both from the schema's field docs, so they never drift."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from lab.config.docs import SECTIONS, field_docs, keys, with_table

ROOT = Path(__file__).resolve().parents[3]


def test_every_config_field_has_a_description():
    for section, cls in SECTIONS.items():
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not missing, f"{section}: fields with no doc string under them: {missing}"


def test_the_readme_table_is_the_one_the_schema_writes():
    readme = (ROOT / "README.md").read_text()
    assert with_table(readme) == readme, "run: python scripts/config_docs.py"
    for key, _, _, doc in keys():
        assert f"| `{key}` |" in readme and doc.split()[0] in readme


def test_lab_train_help_lists_every_key_with_its_choices_and_default():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.argv=['lab-train','--help'];"
            "from lab.cli.entry import lab_train; lab_train()",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    for key, kind, default, _ in keys():
        assert f"  {key}: {kind} [{default}]" in out, key
    assert "optim.schedule: cosine | wsd | constant [cosine]" in out
    assert "gpu/1400m" in out and "(default micro)" in out
