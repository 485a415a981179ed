"""Which parameters decay and at what share of the learning rate: the optimizer's view of
the model under the standard parametrization and under μP (Yang et al. 2022, "Tensor
Programs V": Adam's rate on hidden matrices scales as 1/m for the width multiplier m)."""

from __future__ import annotations

import torch

from lab.model.gpt import Norm


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices of linear layers only: not on norms, biases, embeddings.
    Each group carries ``lr_scale``, the share of the schedule's rate it trains at: 1, and
    under μP 1/m for the hidden matrices (``GPT.hidden_matrices``; Yang et al. 2022's Adam
    rule). The optimizer's state holds it, so a resumed run keeps its per-group rates."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, Norm) for p in m.parameters()}
    mult = model.cfg.width_mult
    hidden = {id(p) for p in model.hidden_matrices()} if mult != 1.0 else set()
    decay, decay_hidden, no_decay = [], [], []
    for name, p in model.named_parameters():
        is_embedding = name.startswith(("wte.", "wpe."))
        if id(p) in hidden:
            decay_hidden.append(p)
        elif p.dim() >= 2 and not is_embedding and id(p) not in norm_params:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    if decay_hidden:
        groups.insert(
            0, {"params": decay_hidden, "weight_decay": weight_decay, "lr_scale": 1 / mult}
        )
    return groups


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW over ``param_groups`` with the settings of ``cfg`` (an OptimConfig)."""
    groups = param_groups(model, cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
