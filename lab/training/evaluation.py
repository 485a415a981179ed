"""Held-out evaluation: mean loss in nats per token over fixed windows, with its standard
error over the windows, and bits per UTF-8 byte (from each target token's byte length), so
runs with different tokenizers compare.

Three sets of windows, drawn once per run at evenly spaced offsets (the same every
evaluation and every run): ``val`` and ``train`` (up to ``train.eval_batches`` batches, for
the periodic evaluations and the final train loss) and ``final`` (up to
``data.eval_tokens`` held-out tokens in non-overlapping windows where the split has room:
the record's val_loss).

Evaluations are sized to the run (``budgets``, ``Stop``): windows are read in bit-reversed
order, so every prefix spreads over the whole split. The final ones stop when the standard
error of the loss is at most ``train.final_eval_se`` of it or when the windows read cost
``train.final_eval_share`` of the run's compute (``window_budget``), whichever comes first;
each periodic one reads the windows that cost half that share of the tokens between two
evaluations, the same number every time (the curve compares like with like, and a resumed
run evaluates as an uninterrupted one); never fewer than ``MIN_FINAL_WINDOWS`` windows. The
budgets are in FLOPs, not seconds, so the same run measures the same windows on any machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lab.config.schema import Config
from lab.data.corpus import Corpus, eval_windows
from lab.training.schedule import StepPlan

EVAL_TOKENS_PER_CALL = 8192  # tokens per forward call of an evaluation (logits: ×vocab)
MIN_FINAL_WINDOWS = 32  # a final evaluation reads at least this many windows


def spread_order(n: int) -> np.ndarray:
    """0..n-1 in bit-reversed (van der Corput) order: each prefix of evenly spaced windows
    in this order is itself spread evenly over the split, so an evaluation stopped early
    is a sample of all of it, not of its start."""
    bits = max(1, (n - 1).bit_length())
    i = np.arange(1 << bits)
    rev = np.zeros_like(i)
    for b in range(bits):
        rev |= ((i >> b) & 1) << (bits - 1 - b)
    return rev[rev < n]


@dataclass
class Stop:
    """When a sized evaluation stops: at a relative standard error of the loss (0: never)
    or after ``max_windows`` windows (0: all), never before ``min_windows``. Both depend on
    the model and the config only, not on the machine's speed, so a run repeated or resumed
    measures the same windows. ``agree(flag)`` makes every process take the same decision
    (their forwards run together under FSDP)."""

    se_target: float = 0.0
    max_windows: int = 0
    min_windows: int = MIN_FINAL_WINDOWS
    agree: Callable[[bool], bool] = lambda flag: flag

    def reached(self, loss: float, se: float, windows: int) -> bool:
        if windows < self.min_windows or self.se_target <= 0 or not math.isfinite(se):
            return False
        return se <= self.se_target * abs(loss)


def window_budget(share: float, tokens: int, context: int) -> int:
    """Windows whose forward passes cost ``share`` of a run of ``tokens`` training tokens
    and themselves (a forward is a third of a training step's FLOPs: 2N of 6N a token);
    0 (no limit) when ``share`` is 0."""
    if share <= 0:
        return 0
    return max(1, int(share / (1 - share) * 3 * tokens / context))


def budgets(cfg: Config, tokens: int) -> dict[str, int]:
    """The most windows each evaluation reads (0: all it has) in a loop to ``tokens``
    training tokens of the run ``cfg`` (its D resolved; a WSD branch's loop stops earlier):
    ``val`` each periodic one (half ``train.final_eval_share`` of the tokens between two of
    the run's evaluations), ``final`` and ``train`` the final ones (3/4 and 1/4 of the share
    of the loop's tokens)."""
    share, context = cfg.train.final_eval_share, cfg.model.context
    plan = StepPlan.of(cfg)
    whole = window_budget(share, tokens, context)
    return {
        "val": window_budget(share / 2, plan.eval_every * plan.tokens_per_step, context),
        "final": max(1, int(0.75 * whole)) if whole else 0,
        "train": max(1, int(0.25 * whole)) if whole else 0,
    }


def windows_read(budget: int, available: int, min_windows: int = MIN_FINAL_WINDOWS) -> int:
    """How many of ``available`` windows an evaluation of ``budget`` windows (0: all) reads
    at most: the budget, never under ``min_windows``, never over what there is."""
    return min(available, max(min_windows, budget or available))


class Evaluator:
    """The run's evaluation windows and the statistics of a model on them."""

    def __init__(self, cfg: Config, corpus: Corpus, device: torch.device, autocast):
        context, t = cfg.model.context, cfg.train
        self.device, self.autocast, self.batch_size = device, autocast, t.batch_size
        n_eval = t.eval_batches * t.batch_size
        n_final = max(n_eval, min(cfg.data.eval_tokens, corpus.val.size - 1) // context)
        self.windows = {  # each in spread order: any prefix samples the whole split
            "val": _reordered(eval_windows(corpus.val, n_eval, context)),
            "train": _reordered(eval_windows(corpus.train, n_eval, context)),
            "final": _reordered(eval_windows(corpus.val, n_final, context)),
        }
        bytes_of = getattr(corpus.tokenizer, "token_bytes", None)  # pre-tokenized ids: none
        self.token_bytes = torch.as_tensor(bytes_of()) if bytes_of else None
        self.seconds = 0.0  # time spent evaluating, this session

    @torch.no_grad()
    def stats(self, model: torch.nn.Module, which: str, stop: Stop | None = None) -> dict:
        """Loss over the ``which`` windows ("val", "train" or "final") with its standard
        error over the windows, and bits per byte with its standard error (of a ratio
        estimate: Σ nats / Σ bytes, linearised). With ``stop``, the windows are read until
        it says so; ``stopped_by`` says why ("standard error", "budget" or "all
        windows")."""
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        x_all, y_all = self.windows[which]
        available = x_all.shape[0]
        limit = (
            available
            if stop is None
            else windows_read(stop.max_windows, available, stop.min_windows)
        )
        stopped_by = "budget" if limit < available else "all windows"
        x_all, y_all = x_all[:limit], y_all[:limit]
        # forward-only: as many windows per call as fill EVAL_TOKENS_PER_CALL tokens (at
        # least a training batch), since small models are bound by per-call overhead
        batch_size = max(self.batch_size, EVAL_TOKENS_PER_CALL // x_all.shape[1])
        if stop is not None and stop.se_target > 0:  # checked after each call of this size
            batch_size = min(batch_size, max(1, stop.min_windows))
        nats, nbytes, T = [], [], y_all.shape[1]
        for i in range(0, x_all.shape[0], batch_size):
            x = x_all[i : i + batch_size].to(self.device)
            y = y_all[i : i + batch_size]
            with self.autocast:
                logits, _ = model(x)
            per_token = F.cross_entropy(
                logits.float().view(-1, logits.size(-1)),
                y.to(self.device).reshape(-1),
                reduction="none",
            )
            nats.append(per_token.view(y.shape).sum(1).double().cpu())
            if self.token_bytes is not None:
                nbytes.append(self.token_bytes[y].sum(1).double())
            if stop is not None and i + batch_size < x_all.shape[0]:
                so_far = torch.cat(nats) / T
                k = so_far.numel()
                se = float(so_far.std() / math.sqrt(k)) if k > 1 else float("nan")
                if stop.agree(stop.reached(float(so_far.mean()), se, k)):
                    stopped_by = "standard error"
                    break
        model.train(was_training)
        stats = _summarize(torch.cat(nats), nbytes, T)
        stats["stopped_by"], stats["windows"] = stopped_by, int(stats["tokens"] // T)
        self.seconds += time.perf_counter() - started
        return stats


def _reordered(windows: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.from_numpy(spread_order(windows[0].shape[0]))
    return windows[0][order], windows[1][order]


def _summarize(nats: torch.Tensor, nbytes: list, T: int) -> dict:
    """Per-window nats (and bytes) → loss, bpb and their standard errors."""
    k = nats.numel()
    stats = {
        "loss": float(nats.sum() / (k * T)),
        "loss_se": float((nats / T).std() / math.sqrt(k)) if k > 1 else float("nan"),
        "tokens": k * T,
        "bpb": None,
        "bpb_se": None,
    }
    if nbytes:
        nbytes = torch.cat(nbytes)
        ratio = nats.sum() / nbytes.sum()  # nats per byte
        spread = ((nats - ratio * nbytes) ** 2).sum() / max(1, k - 1)
        stats["bpb"] = float(ratio / math.log(2))
        se = math.sqrt(float(spread) / k) / float(nbytes.mean()) / math.log(2)
        stats["bpb_se"] = se if k > 1 else float("nan")
    return stats
