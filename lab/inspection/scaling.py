"""What the models of a sweep represent, against their size: probe selectivity, attention
entropy and held-out loss per run (``lab-inspect sweep``)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from lab.config.record import CHECKPOINT_NAME, RECORD_NAME  # noqa: E402
from lab.inspection.probes import PROBES, probe_run  # noqa: E402
from lab.inspection.trained import Run, entropy, save_figure, trace  # noqa: E402


def sweep_summary(sweep: Path, out: Path, windows: int = 8) -> tuple[Path, list[dict]]:
    """For every finished run with a checkpoint: the best probe selectivity per property,
    the mean attention entropy and the mean per-token loss on held-out text, against N."""
    rows = []
    for ckpt in sorted(sweep.rglob(CHECKPOINT_NAME)):
        rec_path = ckpt.parent / RECORD_NAME
        if not rec_path.exists() or json.loads(rec_path.read_text()).get("status") != "ok":
            continue
        run = Run(ckpt.parent)
        ids = torch.as_tensor(run.val_windows(windows, run.model.cfg.n_positions))
        t = trace(run.model, ids)
        with torch.no_grad():
            logits, loss = run.model(ids[:, :-1], ids[:, 1:])
        row = {
            "run": str(ckpt.parent.relative_to(sweep)),
            "N": run.record["n_params_non_embedding"],
            "tokens": run.record["tokens"],
            "loss": float(loss),
            "attention_entropy": (
                float(torch.stack([entropy(m) for m in t["maps"]]).mean())
                if t["maps"]
                else float("nan")
            ),
        }
        if getattr(run.tokenizer, "name", "") == "bytes":
            for prop, prows in probe_run(run, list(PROBES), windows).items():
                row[f"selectivity_{prop}"] = max(r["selectivity"] for r in prows)
        rows.append(row)
    if not rows:
        raise ValueError(f"no finished runs with a checkpoint under {sweep}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "inspect_sweep.json").write_text(json.dumps(rows, indent=2))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ns = [r["N"] for r in rows]
    for prop in PROBES:
        if f"selectivity_{prop}" in rows[0]:
            axes[0].plot(ns, [r[f"selectivity_{prop}"] for r in rows], "o", label=prop)
    axes[0].set_ylabel("best probe selectivity (accuracy − control)")
    axes[1].plot(ns, [r["attention_entropy"] for r in rows], "o")
    axes[1].set_ylabel("mean attention entropy (nats)")
    axes[2].plot(ns, [r["loss"] for r in rows], "o")
    axes[2].set_ylabel("mean per-token loss (nats)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("non-embedding parameters N")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"What the models of {sweep} represent, against size", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out / "inspect_sweep.png"), rows
