"""A fitted learning-rate law, ``lr*(N) = c·N^(−γ)`` (and ``·D^(−δ)``), as ``lab-analyze lr``
writes it to ``lr.json``; ``optim.lr_law=PATH`` trains a run at the rate it gives for the
run's N (and D). No torch here: the analysis reads the same law."""

from __future__ import annotations

import json
from pathlib import Path


def load_lr_law(path: str | Path, parametrization: str) -> dict:
    """The law of the lr.json at ``path``. Raises ValueError naming the key and the file
    when it is missing, not an lr law, without a fitted law, or fitted on runs of another
    parametrization than ``parametrization``."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "lr.json"
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"optim.lr_law: no such file {p} (lab-analyze lr writes one)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"optim.lr_law: {p} is not readable JSON ({e})") from None
    law = data.get("law") if isinstance(data, dict) else None
    params = law.get("params") if isinstance(law, dict) else None
    if not isinstance(params, dict) or not {"c", "gamma"} <= set(params):
        raise ValueError(f"optim.lr_law: {p} holds no fitted lr law (written by lab-analyze lr?)")
    fitted_under = data.get("parametrization", "sp")
    if fitted_under != parametrization:
        raise ValueError(
            f"optim.lr_law: {p} was fitted on {fitted_under} runs; this run uses "
            f"model.parametrization={parametrization}"
        )
    return {**data, "path": str(p)}


def rate(law: dict, n_params: float, tokens: float | None = None) -> float:
    """The rate the law gives at N (and D, for a law with a D term)."""
    p = law["law"]["params"] if "law" in law else law["params"]
    lr = p["c"]["value"] * n_params ** -p["gamma"]["value"]
    if "delta" in p:
        if tokens is None:
            raise ValueError("this lr law depends on D: give the run's tokens")
        lr *= tokens ** -p["delta"]["value"]
    return float(lr)
