"""The layout holds: no import cycles anywhere, every wing's public names resolve, and the
tests mirror the wings (the layering itself is import-linter's, in ``make lint``)."""

from __future__ import annotations

import importlib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
WINGS = sorted(p.name for p in (ROOT / "lab").iterdir() if (p / "__init__.py").exists())


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("lab", "analysis", "kernels", exclude_type_checking_imports=True)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported != module and graph.chain_exists(imported, module):
                cycles.append(" -> ".join(graph.find_shortest_chain(imported, module)))
    assert not cycles, cycles


def test_the_lab_is_in_wings():
    assert WINGS == ["cli", "config", "data", "inspection", "model", "runs", "training"]
    loose = sorted(p.name for p in (ROOT / "lab").glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "_lazy.py"], loose


@pytest.mark.parametrize("package", ["lab", *(f"lab.{w}" for w in WINGS), "analysis"])
def test_every_public_name_resolves(package):
    module = importlib.import_module(package)
    assert module.__doc__ and module.__all__
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


def test_the_tests_mirror_the_wings():
    for wing in WINGS:
        assert list((ROOT / "tests" / "lab" / wing).glob("test_*.py")), f"tests/lab/{wing}/"
    assert list((ROOT / "tests" / "analysis").glob("test_*.py"))
    assert list((ROOT / "tests" / "kernels").glob("test_*.py"))
