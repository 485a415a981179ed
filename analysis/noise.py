"""How much of a fit's scatter is noise: run-to-run (seed) spread, and the sensitivity of
the fitted exponents to how N and C are counted.

- ``seed_noise``: runs that differ only in ``train.seed`` (same config otherwise) grouped;
  per group the mean and standard deviation of the final loss (and of its log, the scale a
  Huber fit on log-loss sees), pooled over groups.
- ``sensitivity``: the law refitted under every N convention × C convention, with the
  exponents and the compute-optimal N*, D* at given budgets for each (Porian et al. 2024
  trace part of the Kaplan/Chinchilla discrepancy to exactly these choices).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.load import read_runs_table
from lab.config.record import (
    C_CONVENTIONS,
    DEFAULT_LOSS,
    LOSSES,
    N_CONVENTIONS,
)


def _number(value) -> float | None:
    """A table cell as a float, None where it is missing."""
    return None if value is None or pd.isna(value) else float(value)


def seed_noise(path: str | Path, loss: str = DEFAULT_LOSS) -> dict:
    """Per config (everything but the seed), the final loss over its seeds; pooled SD.
    ``path``: a sweep folder or its table.

    Raises ValueError when no config has at least 2 finished seeds."""
    if loss not in LOSSES:
        raise ValueError(f"--loss must be one of {LOSSES}, got {loss!r}")
    table = read_runs_table(path)
    table = table[(table["status"] == "ok") & pd.to_numeric(table[loss], errors="coerce").notna()]
    # a config is its record's config without the seed (the table's hparams digest)
    groups = {key: g for key, g in table.groupby("hparams") if len(g) >= 2}
    rows = []
    for g in groups.values():
        values = g[loss].to_numpy(dtype=float)
        first = g.iloc[0]
        se = first.get(f"{loss}_se")
        rows.append(
            {
                "model": first["model"],
                "n_params": _number(first[N_CONVENTIONS["non_embedding"]]),
                "tokens": _number(first["tokens"]),
                "seeds": len(values),
                "mean": float(values.mean()),
                "sd": float(values.std(ddof=1)),
                "sd_log": float(np.log(values).std(ddof=1)),
                "eval_se": _number(se),
            }
        )
    if not rows:
        raise ValueError(
            f"seed noise needs configs run with at least 2 seeds each; none under {path} "
            "(run `lab-sweep seeds`, or vary train.seed)"
        )
    dof = np.array([r["seeds"] - 1 for r in rows])
    pooled = float(np.sqrt(np.sum(dof * np.array([r["sd_log"] for r in rows]) ** 2) / dof.sum()))
    return {"loss": loss, "configs": rows, "pooled_sd_log": pooled}


def sensitivity(path, law: str, budgets, loss: str = DEFAULT_LOSS) -> list[dict]:
    """The law refitted under every N × C convention: its exponents and N*, D* at
    ``budgets`` (a point fit each). Raises ValueError when PATH is not a sweep folder."""
    from analysis.approaches import chinchilla_optimum
    from analysis.fitting import fit_law
    from analysis.load import load_runs
    from analysis.study import flops_per_param_token

    if not Path(path).is_dir():
        raise ValueError(
            "--sensitivity refits under every N and C convention: PATH must be a sweep folder "
            "whose records hold them (a table gives one N and one C)"
        )
    rows = []
    for n_conv in N_CONVENTIONS:
        for c_conv in C_CONVENTIONS:
            df = load_runs(path, n_conv, c_conv, loss)
            fit = fit_law(df, law)
            row = {"n_convention": n_conv, "compute": c_conv, **fit.params}
            if fit.law.name == "chinchilla":
                opt = chinchilla_optimum(fit.params, budgets, k=flops_per_param_token(df))
                row.update(a=opt["a"], b=opt["b"])
                row["N_opt"] = [float(x) for x in opt["N_opt"]]
                row["D_opt"] = [float(x) for x in opt["D_opt"]]
            rows.append(row)
    return rows
