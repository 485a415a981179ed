"""The console commands. Each first checks that the lab's import names are the lab's
(``lab.cli.packages``), then imports the command's module: a shadowing package is named in one
line, not met as an ImportError deep inside an import."""

from __future__ import annotations

import contextlib
import sys

from lab.cli.packages import check_packages


def lab_train() -> None:
    check_packages("lab-train")
    with _interruptible("lab-train"):
        from lab.cli.commands import train_main

        train_main()


def lab_sweep() -> None:
    check_packages("lab-sweep")
    with _interruptible("lab-sweep"):
        from lab.cli.commands import sweep_main

        sweep_main()


@contextlib.contextmanager
def _interruptible(command: str):
    """Ctrl-C outside training (while starting, composing, reading the corpus; a run in
    training checkpoints first, ``lab.training.signals``) is one line and exit 130, and a
    folder the command may not write (read-only, EACCES or EPERM) one line and exit 1, not
    a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except PermissionError as e:  # a read-only run or sweep folder, met by Hydra itself
        where = e.filename or "a file"
        print(f"{command}: error: {where}: {e.strerror or e}", file=sys.stderr)
        raise SystemExit(1) from None


def lab_analyze() -> int:
    check_packages("lab-analyze")
    from analysis.cli import main

    return main()


def lab_generate() -> int:
    check_packages("lab-generate")
    from lab.inspection.generate import main

    return main()


def lab_inspect() -> int:
    check_packages("lab-inspect")
    from lab.inspection.cli import main

    return main()


def lab_export() -> int:
    check_packages("lab-export")
    from lab.runs.export import main

    return main()
