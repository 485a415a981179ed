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

import json
from pathlib import Path

import numpy as np

from lab.config.record import C_CONVENTIONS, LOSSES, N_CONVENTIONS
from lab.runs.records import find_records, read_record


def _config_without_seed(record: dict) -> str | None:
    config = record.get("config")
    if not isinstance(config, dict):
        return None
    config = json.loads(json.dumps(config))
    for section, key in (("train", "seed"), ("train", "threads"), ("train", "skip_done")):
        (config.get(section) or {}).pop(key, None)
    (config.get("train") or {}).pop("resume", None)
    return json.dumps(config, sort_keys=True)


def seed_noise(path: str | Path, loss: str = "val_loss") -> dict:
    """Per config (everything but the seed), the final loss over its seeds; pooled SD.

    Raises ValueError when no config has at least 2 finished seeds."""
    if loss not in LOSSES:
        raise ValueError(f"--loss must be one of {LOSSES}, got {loss!r}")
    groups: dict[str, list] = {}
    for record_path in find_records(path):
        rec = read_record(record_path.parent)
        if not rec or rec.get("status") != "ok" or not isinstance(rec.get(loss), int | float):
            continue
        key = _config_without_seed(rec)
        if key is not None:
            seed = rec["config"].get("train", {}).get("seed")
            groups.setdefault(key, []).append((seed, float(rec[loss]), rec))
    rows = []
    for members in groups.values():
        if len(members) < 2:
            continue
        values = np.array([v for _, v, _ in members])
        rec = members[0][2]
        rows.append(
            {
                "model": rec["config"].get("model", {}).get("name"),
                "n_params": rec.get(N_CONVENTIONS["non_embedding"]),
                "tokens": rec.get("tokens"),
                "seeds": len(values),
                "mean": float(values.mean()),
                "sd": float(values.std(ddof=1)),
                "sd_log": float(np.log(values).std(ddof=1)),
                "eval_se": rec.get(f"{loss}_se"),
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


def sensitivity(path, law: str, budgets, loss: str = "val_loss") -> list[dict]:
    """The law refitted under every N × C convention: its exponents and N*, D* at
    ``budgets`` (a point fit each). Raises ValueError when PATH is not a sweep folder."""
    from analysis.approaches import chinchilla_optimum
    from analysis.laws import fit_law
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
