"""PyTorch's own count of what a training step of the lab's model holds, with nothing
allocated: the model built under ``FakeTensorMode`` (fake tensors carry shapes, dtypes and
storages but no data), one forward and backward and one AdamW step. The check of the
planner's estimate, ``lab.config.memory``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from lab.config.schema import ModelConfig
from lab.model.gpt import GPT


def measure(cfg: ModelConfig, micro_batch: int, bf16: bool = True) -> dict[str, int]:
    """PyTorch's own count for ``cfg`` (the estimate's check): built under ``FakeTensorMode``
    on the CPU, one forward and backward (under CPU bf16 autocast when ``bf16``, as a GPU's)
    and one AdamW step. Bytes of the parameters, gradients and optimizer state, and of the
    distinct storages autograd saved for the backward (bf16 weight copies included)."""
    with FakeTensorMode():
        model = GPT(cfg)
        params = {p.untyped_storage()._cdata for p in model.parameters()}
        saved: dict[int, int] = {}

        def pack(t):
            storage = t.untyped_storage()
            saved.setdefault(storage._cdata, storage.nbytes())
            return t

        x = torch.randint(0, cfg.vocab_size, (micro_batch, cfg.context))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits, _ = model(x)
                loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), x.view(-1))
        loss.backward()
        optimizer = torch.optim.AdamW(model.parameters())
        optimizer.step()
        out = {
            "params": sum(p.numel() * p.element_size() for p in model.parameters()),
            "grads": sum(p.grad.numel() * p.grad.element_size() for p in model.parameters()),
            "optimizer": sum(
                v.numel() * v.element_size()
                for state in optimizer.state.values()
                for v in state.values()
                if torch.is_tensor(v) and v.dim() > 0
            ),
            # a parameter itself (fp32, no autocast) is counted already
            "saved": sum(nbytes for key, nbytes in saved.items() if key not in params),
        }
    return out
