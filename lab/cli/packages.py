"""The lab's three import names (``kernels``, ``lab``, ``analysis``) are also names of
packages on the public index (Hugging Face's ``kernels`` among them). Installed into one
environment, one silently shadows the other; every command checks first and stops with one
line that says which package is where."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from pathlib import Path

NAMES = ("kernels", "lab", "analysis")
ROOT = Path(__file__).resolve().parents[2]


OWN_DISTRIBUTION = "scaling-lab"


def _distributions_providing(names) -> dict[str, str]:
    """Import name → "<distribution> in <folder>" for every installed distribution other
    than the lab that declares one of ``names`` as a top-level package."""
    out = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name == OWN_DISTRIBUTION:
            continue
        top = (dist.read_text("top_level.txt") or "").split()
        if not top and dist.files:
            top = {f.parts[0] for f in dist.files if f.suffix == ".py" and len(f.parts) > 1}
        for module in set(top) & set(names):
            out[module] = f"{dist.metadata['Name']} in {dist.locate_file('')}"
    return out


def _shadowed_on_path(names) -> bool:
    """Whether a folder or module of one of ``names`` lies on ``sys.path`` outside this
    project: a few stat calls, where reading every distribution's metadata takes a tenth of
    a second at each command's start."""
    for entry in sys.path:
        base = Path(entry or ".").resolve()
        if base == ROOT:
            continue
        for name in names:
            if (base / name).is_dir() or (base / f"{name}.py").is_file():
                return True
    return False


def foreign_packages() -> dict[str, str]:
    """Import name → where another package of that name is, for each of the lab's names
    that resolves elsewhere than this project or that another installed distribution also
    provides (found without importing anything)."""
    out = _distributions_providing(NAMES) if _shadowed_on_path(NAMES) else {}
    for name in NAMES:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec and spec.origin else None
        locations = list(spec.submodule_search_locations or []) if spec else []
        where = Path(origin).parent if origin else (Path(locations[0]) if locations else None)
        if where is None or where.resolve() != ROOT / name:
            out.setdefault(name, str(where) if where else "nowhere")
    return out


def check_packages(command: str) -> None:
    """Exit with one line when another package answers to one of the lab's import names."""
    foreign = foreign_packages()
    if foreign:
        found = "; ".join(f"'{n}' is {w}" for n, w in foreign.items())
        print(
            f"{command}: error: another package shadows the lab ({found}; the lab's is in "
            f"{ROOT}). Use a virtual environment of its own for the lab (`make install`), or "
            "`pip uninstall` the other package.",
            file=sys.stderr,
        )
        raise SystemExit(2)
