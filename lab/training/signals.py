"""Stopping a run cleanly on a signal: SIGTERM (what Slurm sends on preemption and on
``scontrol requeue``, SIGKILL following after KillWait), SIGUSR2 (what a submission script
asks for before the time limit: ``#SBATCH --signal=USR2@120``) and SIGINT (Ctrl-C).

While a run trains, the first of them is noted and the loop stops at the next step
boundary: it checkpoints there, the record says ``interrupted``, and ``train`` raises
``Interrupted``, which the command lines report in one line. Started again in its folder,
the run continues from that step (``train.resume=auto``), redoing none. A second Ctrl-C
stops at once, as Python's default would.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = tuple(
    s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR2", None)) if s is not None
)


class Interrupted(Exception):
    """A run stopped by a signal, checkpointed, its record ``interrupted``."""

    def __init__(self, signum: int, step: int, out):
        self.signum, self.step, self.out = signum, step, out
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} at step {step}: checkpoint and record written in {out}; run the same "
            "command again to continue from there"
        )

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for a process a signal ended


class Watch:
    """``with Watch() as watch:`` notes the first interrupting signal in ``watch.received``
    (only the main thread can install handlers; elsewhere it notes nothing)."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.received = self.received or signum

    def __enter__(self) -> Watch:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
