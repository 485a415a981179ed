"""One process trains a run folder at a time: an advisory lock on ``<run>/.lock``.

Two sweeps started on one folder (by mistake, or a Slurm array requeued while the first
copy still runs) would otherwise both train every run and interleave their metrics. The
lock is ``flock`` on an open file: the kernel releases it when the holder exits, however
it exits (SIGKILL included), so a killed sweep never leaves a run stuck. On NFS, Linux
implements ``flock`` with the server's byte-range locks, so the claim holds across the
nodes of a cluster that share the sweep folder.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

LOCK_NAME = ".lock"


class claim:  # noqa: N801 - used like a function: `with claim(run_dir) as mine:`
    """``with claim(run_dir) as mine:`` — ``mine`` is True when this process holds the run
    folder for the block, False when another process does (nothing is waited for).
    ``acquire()`` / ``release()`` do the same by hand; ``acquire`` raises OSError when the
    folder or its lock file cannot be made."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.fd, self.held = Path(run_dir), None, False

    def acquire(self) -> bool:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # never through a link planted at the name (O_NOFOLLOW: ELOOP, an OSError)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
        self.fd = os.open(self.run_dir / LOCK_NAME, flags, 0o666)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.held = True
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                self.release()
                raise
        return self.held

    def release(self) -> None:
        if self.fd is not None:
            if self.held:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
        self.fd, self.held = None, False

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
