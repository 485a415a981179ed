"""Held-out evaluation: mean loss in nats per token over fixed windows, with its standard
error over the windows, and bits per UTF-8 byte (from each target token's byte length), so
runs with different tokenizers compare.

Three sets of windows, drawn once per run at evenly spaced offsets (the same every
evaluation and every run): ``val`` and ``train`` (``train.eval_batches`` batches, for the
periodic evaluations and the final train loss) and ``final`` (``data.eval_tokens`` held-out
tokens in non-overlapping windows where the split has room: the record's val_loss).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from lab.config.schema import Config
from lab.data.corpus import Corpus, eval_windows

EVAL_TOKENS_PER_CALL = 8192  # tokens per forward call of an evaluation (logits: ×vocab)


class Evaluator:
    """The run's evaluation windows and the statistics of a model on them."""

    def __init__(self, cfg: Config, corpus: Corpus, device: torch.device, autocast):
        context, t = cfg.model.context, cfg.train
        self.device, self.autocast, self.batch_size = device, autocast, t.batch_size
        n_eval = t.eval_batches * t.batch_size
        n_final = max(n_eval, min(cfg.data.eval_tokens, corpus.val.size - 1) // context)
        self.windows = {
            "val": eval_windows(corpus.val, n_eval, context),
            "train": eval_windows(corpus.train, n_eval, context),
            "final": eval_windows(corpus.val, n_final, context),
        }
        bytes_of = getattr(corpus.tokenizer, "token_bytes", None)  # pre-tokenized ids: none
        self.token_bytes = torch.as_tensor(bytes_of()) if bytes_of else None
        self.seconds = 0.0  # time spent evaluating, this session

    @torch.no_grad()
    def stats(self, model: torch.nn.Module, which: str) -> dict:
        """Loss over the ``which`` windows ("val", "train" or "final") with its standard
        error over the windows, and bits per byte with its standard error (of a ratio
        estimate: Σ nats / Σ bytes, linearised)."""
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        x_all, y_all = self.windows[which]
        # forward-only: as many windows per call as fill EVAL_TOKENS_PER_CALL tokens (at
        # least a training batch), since small models are bound by per-call overhead
        batch_size = max(self.batch_size, EVAL_TOKENS_PER_CALL // x_all.shape[1])
        nats, nbytes = [], []
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
        model.train(was_training)
        stats = _summarize(torch.cat(nats), nbytes, y_all.shape[1])
        self.seconds += time.perf_counter() - started
        return stats


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
