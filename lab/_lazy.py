"""Public names of a package, imported when first used (PEP 562's module ``__getattr__``, the
pattern of scientific-python's lazy_loader): a wing's ``__init__`` names its surface without
importing torch, Hydra or pandas for a caller that needs one light module of it."""

from __future__ import annotations

import importlib


def exports(package: str, names: dict[str, str]):
    """A module ``__getattr__`` serving ``names`` (public name → submodule of ``package``)."""

    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
