"""The console commands. Each first checks that the lab's import names are the lab's
(``lab.cli.packages``), then imports the command's module: a shadowing package is named in one
line, not met as an ImportError deep inside an import."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from lab.cli.packages import check_packages


def lab_train() -> None:
    check_packages("lab-train")
    if any(a in ("-h", "--help") for a in sys.argv[1:]):  # every key, from the schema's docs
        from lab.config.docs import help_text

        print(help_text())
        return
    check_output_dirs("lab-train", sys.argv[1:])
    with _interruptible("lab-train"):
        from lab.cli.commands import train_main

        train_main()


def lab_sweep() -> None:
    check_packages("lab-sweep")
    check_output_dirs("lab-sweep", sys.argv[1:])
    with _interruptible("lab-sweep"):
        from lab.cli.commands import sweep_main

        sweep_main()


OUTPUT_KEYS = ("hydra.run.dir=", "hydra.sweep.dir=")


def unwritable(path: Path) -> str | None:
    """Why the folder ``path`` cannot be made or written, or None: a file where a folder
    must be, or a nearest existing folder that is read-only (its file system, or for this
    user)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return None
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    try:
        if os.statvfs(probe).f_flag & os.ST_RDONLY:
            return f"{probe} is on a read-only file system"
    except OSError:
        return None
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by this user"
    return None


def check_output_dirs(command: str, argv: list[str]) -> None:
    """One line and exit 1 when a ``hydra.run.dir`` or ``hydra.sweep.dir`` override names a
    folder that cannot be written, before Hydra meets it (it would print its own traceback)."""
    for arg in argv:
        for key in OUTPUT_KEYS:
            if arg.startswith(key) and "${" not in arg:
                why = unwritable(Path(arg[len(key) :]).expanduser())
                if why:
                    print(f"{command}: error: {arg}: {why}", file=sys.stderr)
                    raise SystemExit(1)


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
    from lab.cli.ladder import LADDER

    return main(ladder=LADDER)


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
