"""Gadre et al. (2024)'s runs with their downstream error: a table for
``lab-analyze predict ... --metric err_17``.

Reads the published folder (``gadre_models.csv`` and ``exp_data/evals/``, as the authors
release them at github.com/mlfoundations/scaling) and writes its rows with two columns
more: ``err_17``, the average top-1 error (1 − accuracy) over the paper's 17-task subset,
and ``err_46`` over all 46 tasks, as their ``scaling/shared.py`` averages them.

    python scripts/gadre_task_error.py PUBLISHED_GADRE_FOLDER OUT.csv
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

# the 17 tasks of the paper's subset (Gadre et al. 2024, section 3; their SUBSET)
SUBSET_17 = (
    "bigbench_operators",
    "pubmed_qa_labeled",
    "hellaswag_zeroshot",
    "boolq",
    "arc_easy",
    "coqa",
    "bigbench_dyck_languages",
    "lambada_openai",
    "bigbench_novel_concepts",
    "winograd",
    "bigbench_cs_algorithms",
    "commonsense_qa",
    "bigbench_qa_wikidata",
    "hellaswag",
    "copa",
    "squad",
    "piqa",
)


def with_task_error(folder: Path) -> pd.DataFrame:
    """``gadre_models.csv`` with ``err_17`` and ``err_46``; raises ValueError naming a
    model whose evaluation is missing or lacks a task."""
    runs = pd.read_csv(folder / "gadre_models.csv")
    evals = folder / "exp_data" / "evals"
    tasks = pd.read_csv(folder / "exp_data" / "eval_metadata.csv")["Eval Task"].tolist()
    e17, e46 = [], []
    for name in runs["name"]:
        path = evals / f"evaluation_{name}_heavy.json"
        if not path.is_file():
            raise ValueError(f"{path}: no downstream evaluation for {name}")
        acc = json.loads(path.read_text())["eval_metrics"]["icl"]
        missing = [t for t in SUBSET_17 if t not in acc]
        if missing:
            raise ValueError(f"{path}: lacks the tasks {missing}")
        e17.append(sum(1 - acc[t] for t in SUBSET_17) / len(SUBSET_17))
        scored = [t for t in tasks if t in acc]
        e46.append(sum(1 - acc[t] for t in scored) / len(scored))
    return runs.assign(err_17=e17, err_46=e46)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    out = Path(argv[1])
    with_task_error(Path(argv[0])).to_csv(out, index=False)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
