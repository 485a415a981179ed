"""The training loop and the parts it calls.

The loop (``Loop.run``) is short on purpose: draw the learning rate, take one optimizer
step, count it, and hand control to its parts. Everything else is a part: when to evaluate
(``Evaluation``), early stopping (``EarlyStopping``), checkpoints (``Checkpoints``),
metrics rows to the run's loggers (``Metrics``), the progress display (``Progress``) and the WSD branch
points (``BranchPoints``). A part overrides the hooks it needs:

    start(loop)        before the first step of this session
    before_step(loop)  before each optimizer step
    after_step(loop)   after each optimizer step (``loop.lr``, ``loop.loss`` are its values)
    after_eval(loop)   after each evaluation (``loop.trainer.state.val_loss`` is fresh)
    end(loop)          always, when the loop ends (also on an exception)

so adding a logger or a metric is adding a part, not editing the loop (the checkpointer /
validator split of torchtitan's trainer). Parts run in list order; a part stops the run by
setting ``loop.stop`` to a reason.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from collections.abc import Callable

from lab.training.evaluation import Stop, budgets
from lab.training.record import process_seconds

log = logging.getLogger("lab.train")
_loops_run = 0  # loops this process has run (a sweep's runs share one)


class Part:
    """A component of the loop; every hook does nothing unless overridden."""

    def start(self, loop: Loop) -> None: ...

    def before_step(self, loop: Loop) -> None: ...

    def after_step(self, loop: Loop) -> None: ...

    def after_eval(self, loop: Loop) -> None: ...

    def end(self, loop: Loop) -> None: ...


class Loop:
    """Trains ``trainer`` from its state's step until ``budget`` tokens, with ``lr_fn(step)``
    as the learning rate, calling ``parts``. ``run()`` returns how it ended."""

    def __init__(self, trainer, budget: int, lr_fn: Callable[[int], float], parts: list[Part]):
        self.trainer, self.budget, self.lr_fn, self.parts = trainer, budget, lr_fn, parts
        self.steps = math.ceil(budget / trainer.plan.tokens_per_step)
        self.budgets = budgets(trainer.cfg, budget)  # windows of each evaluation, at most
        self.lr = self.loss = float("nan")
        self.stop: str | None = None  # set by a part to end the run early, with the reason
        self.interrupted: int | None = None  # the signal that stopped it (``Interruption``)
        self.status, self.error = "ok", None
        self.evaluated_at = -1
        self.last_eval: dict = {}  # the latest periodic evaluation's statistics
        self.session_tokens = 0
        self.session_start = time.perf_counter()  # this process's share of the run
        self.clock_start = self.session_start  # last point the state's elapsed time covers

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> dict:
        s, tokens_per_step = self.trainer.state, self.trainer.plan.tokens_per_step
        self.trainer.data_seconds = self.trainer.evaluator.seconds = 0.0
        self._call("start")
        global _loops_run
        first_in_process, _loops_run = _loops_run == 0, _loops_run + 1
        self.first_step_after = None  # seconds from the process's start to its first step
        try:
            while s.step < self.steps and not self.stop:
                if first_in_process and self.first_step_after is None:
                    self.first_step_after = process_seconds()
                self._call("before_step")
                n = min(tokens_per_step, self.budget - s.step * tokens_per_step)
                self.lr = self.lr_fn(s.step)
                self.loss = self.trainer.train_step(n, self.lr)
                if not math.isfinite(self.loss):
                    self._diverged()
                    break
                s.step += 1
                s.tokens += n
                self.session_tokens += n
                s.running = self.loss if s.running is None else 0.9 * s.running + 0.1 * self.loss
                self._call("after_step")
        finally:
            self._call("end")
        self.sync_clock()
        return self._result()

    def _call(self, hook: str) -> None:
        for part in self.parts:
            getattr(part, hook)(self)

    # -- what parts use ----------------------------------------------------------------------
    @property
    def last_step(self) -> bool:
        return self.trainer.state.step == self.steps

    def evaluate(self) -> None:
        """Validation loss now, into the state; then every part's ``after_eval``. It reads
        the same windows every time (``evaluation.budgets``)."""
        s = self.trainer.state
        self.last_eval = self.trainer.evaluate("val", Stop(max_windows=self.budgets["val"]))
        s.val_loss = self.last_eval["loss"]
        self.evaluated_at = s.step
        self._call("after_eval")

    def tokens_per_second(self) -> float:
        return self.session_tokens / max(1e-9, time.perf_counter() - self.session_start)

    def elapsed(self) -> float:
        """Seconds of training over all sessions of the run, up to now."""
        return self.trainer.state.elapsed + time.perf_counter() - self.clock_start

    def sync_clock(self) -> None:
        """Fold the time since the last sync into the state (before a checkpoint saves it)."""
        now = time.perf_counter()
        self.trainer.state.elapsed += now - self.clock_start
        self.clock_start = now

    def _diverged(self) -> None:
        s = self.trainer.state
        self.status = "diverged"
        self.error = f"loss became {self.loss} at step {s.step} (lr {self.lr:.3g}); stopped"
        kept = self.trainer.saved_step
        if kept is None:
            log.error("run diverged: %s; no checkpoint had been written", self.error)
        else:
            log.error("run diverged: %s; the checkpoint of step %d is kept", self.error, kept)

    def final_stop(self, which: str) -> Stop:
        """A final evaluation's rule: the standard-error target ``train.final_eval_se``, or
        its budget (``evaluation.budgets``); every process stops at the same window."""
        t = self.trainer

        def agree(flag: bool) -> bool:
            return t.dist.any(flag, t.device)

        return Stop(t.cfg.train.final_eval_se, self.budgets[which], agree=agree)

    def _result(self) -> dict:
        """How the run ended, with final validation and training losses when it ended well."""
        t, s = self.trainer, self.trainer.state
        train_loss, final, on_train = float("nan"), {}, {}
        if self.status == "ok" and not self.interrupted:  # sized by train.final_eval_*
            final = t.evaluate("final", self.final_stop("final"))
            s.val_loss = final["loss"]
            on_train = t.evaluate("train", self.final_stop("train"))
            train_loss = on_train["loss"]
        tps = s.tokens / s.elapsed if s.elapsed > 0 else None
        run_seconds = time.perf_counter() - self.session_start
        result = {
            "status": "interrupted" if self.interrupted else self.status,
            "steps": s.step,
            "tokens_seen": s.tokens,
            "train_loss": train_loss,
            "val_loss": s.val_loss,
            "train_loss_running": s.running,
            "generalization_gap": s.val_loss - train_loss,
            "wall_time_s": s.elapsed,
            "tokens_per_s": tps,
            "stopped_early": self.stop is not None and not self.interrupted,
            "mfu": t.mfu(tps),
            "data_wait_fraction": t.data_seconds / max(1e-9, run_seconds),
            "eval_fraction": t.evaluator.seconds / max(1e-9, run_seconds),
            "first_step_after_s": self.first_step_after,
        }
        if final:
            result.update(
                val_loss_se=final["loss_se"],
                val_bpb=final["bpb"],
                val_bpb_se=final["bpb_se"],
                train_bpb=on_train["bpb"],
                eval_tokens=final["tokens"],
                eval_stopped_by=final["stopped_by"],
                eval_se_over=f"{final['tokens'] // self.trainer.cfg.model.context} windows "
                "of one context",
            )
        if self.error:
            result["error"] = self.error
        return result


# -- the parts ------------------------------------------------------------------------------
class Evaluation(Part):
    """Evaluate every ``every`` steps and at the last step."""

    def __init__(self, every: int):
        self.every = every

    def after_step(self, loop: Loop) -> None:
        if loop.trainer.state.step % self.every == 0 or loop.last_step:
            loop.evaluate()


class EarlyStopping(Part):
    """Stop after ``patience`` evaluations without a better validation loss (0: never).
    Its counters live in the state, so a resumed run keeps counting."""

    def __init__(self, patience: int):
        self.patience = patience

    def after_eval(self, loop: Loop) -> None:
        s = loop.trainer.state
        if s.val_loss < s.best_val:
            s.best_val, s.evals_since_best = s.val_loss, 0
        else:
            s.evals_since_best += 1
        if self.patience and s.evals_since_best >= self.patience:
            loop.stop = f"no better validation loss in {s.evals_since_best} evaluations"
            log.info("early stop: %s", loop.stop)


class Checkpoints(Part):
    """Save a checkpoint every ``every`` steps, at the last step, and when the run stops
    early (``Trainer.save`` keeps the last good one when weights went non-finite)."""

    def __init__(self, every: int):
        self.every = every

    def after_step(self, loop: Loop) -> None:
        s = loop.trainer.state
        if s.step % self.every == 0 or loop.last_step or loop.stop:
            if loop.evaluated_at == s.step and not math.isfinite(s.val_loss):
                log.warning(
                    "validation loss %s at step %d: checkpoint not written", s.val_loss, s.step
                )
                return
            loop.sync_clock()
            loop.trainer.save()


class Metrics(Part):
    """Metrics rows to the run's loggers (``lab.runs.trackers``): every ``every`` steps the training
    loss (smoothed, and the last batch's), learning rate, gradient norm, tokens/s and elapsed
    time; at each evaluation the validation loss too, in the same row when both fall on one
    step (steps in the file stay strictly increasing). A log line per evaluation (on a
    terminal written above the progress bar; in the run's log file either way)."""

    def __init__(self, trackers, every: int, enabled: bool = True):
        self.trackers, self.every, self.enabled = trackers, every, enabled
        self.pending: dict | None = None

    def after_eval(self, loop: Loop) -> None:
        s = loop.trainer.state
        self.pending = {"val_loss": s.val_loss, "val_bpb": loop.last_eval.get("bpb")}
        if self.enabled:
            log.info(
                "step %d  tokens %s  train %.4f  val %.4f  lr %.2e  %.0f tok/s",
                s.step,
                f"{s.tokens:,}",
                s.running,
                s.val_loss,
                loop.lr,
                loop.tokens_per_second(),
            )

    def after_step(self, loop: Loop) -> None:
        t, s = loop.trainer, loop.trainer.state
        due = s.step % self.every == 0 or loop.last_step
        if not self.enabled or not (due or self.pending):
            return
        tps = loop.tokens_per_second()
        row = {
            "step": s.step,
            "tokens": s.tokens,
            "flops": s.tokens * t.flops_per_token,  # C so far (lab.config.record's default)
            "train_loss": s.running,
            "batch_loss": loop.loss,
            "lr": loop.lr,
            "grad_norm": t.grad_norm,
            "tokens_per_s": tps,
            "elapsed_s": loop.elapsed(),
            "mfu": t.mfu(tps),
            **(self.pending or {}),
        }
        self.pending = None
        self.trackers.log(row, s.step)


class Progress(Part):
    """A tqdm bar on an interactive terminal (main process only); nothing in logs. While it
    shows, console log lines go through ``tqdm.write`` (tqdm's ``logging_redirect_tqdm``),
    so they stay above the bar instead of being drawn over."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.bar, self.redirect = enabled and sys.stderr.isatty(), None, None

    def start(self, loop: Loop) -> None:
        if self.enabled:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.redirect = logging_redirect_tqdm(loggers=[logging.getLogger()])
            self.redirect.__enter__()
            self.bar = tqdm(
                total=loop.steps,
                initial=loop.trainer.state.step,
                unit="step",
                dynamic_ncols=True,
                leave=False,
            )

    def after_step(self, loop: Loop) -> None:
        if self.bar:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loop.trainer.state.running:.3f}", lr=f"{loop.lr:.2e}")

    def end(self, loop: Loop) -> None:
        if self.bar:
            self.bar.close()
        if self.redirect:
            self.redirect.__exit__(None, None, None)
            self.redirect = None


class Interruption(Part):
    """Stop at this step boundary when ``watch`` (``lab.training.signals.Watch``) has seen
    an interrupting signal; ``Checkpoints``, after it, saves the step."""

    def __init__(self, watch):
        self.watch = watch

    def after_step(self, loop: Loop) -> None:
        if self.watch is None or loop.interrupted:
            return
        seen = self.watch.received
        dist = loop.trainer.dist
        if dist.world > 1:  # every process stops at the same step, or none does
            seen = (seen or signal.SIGTERM) if dist.any(bool(seen), loop.trainer.device) else None
        if seen:
            loop.interrupted = int(seen)
            loop.stop = f"interrupted by {signal.Signals(seen).name}"
            log.warning("%s: stopping at step %d", loop.stop, loop.trainer.state.step)


class BranchPoints(Part):
    """Call ``callbacks[step]()`` before that step (WSD: snapshot where a cooldown starts)."""

    def __init__(self, callbacks: dict[int, Callable[[], None]]):
        self.callbacks = callbacks

    def before_step(self, loop: Loop) -> None:
        callback = self.callbacks.get(loop.trainer.state.step)
        if callback:
            callback()
