"""A GPT-style decoder built only from the ``kernels`` ops (after nanoGPT's model.py).

token + learned position embedding → n_layer × [x + attn(ln(x)); x + mlp(ln(x))] → ln →
linear head (tied to the token embedding by default). Every matmul, norm and attention
goes through ``kernels.linear``, ``kernels.layer_norm`` and ``kernels.attention``, so
switching the kernel backend swaps the whole model's compute. GPT-2 initialisation:
N(0, 0.02) weights, residual projections scaled by 1/sqrt(2·n_layer).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
from lab.config import ModelConfig


class Linear(nn.Module):
    """y = activation(x Wᵀ + b) through ``kernels.linear``; weight (out, in)."""

    def __init__(self, d_in: int, d_out: int, bias: bool = True, activation: str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.linear(x, self.weight, self.bias, self.activation)


class LayerNorm(nn.Module):
    def __init__(self, d: int, bias: bool = True, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if bias else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.layer_norm(x, self.weight, self.bias, self.eps)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = Linear(cfg.d_model, 3 * cfg.d_model, cfg.bias)
        self.proj = Linear(cfg.d_model, cfg.d_model, cfg.bias)
        self.proj.residual = True
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # each (B, T, C)
        # (B, nh, T, hs): views of the fused projection, no copy
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = kernels.attention(q, k, v, causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = Linear(cfg.d_model, cfg.ff_dim, cfg.bias, activation=cfg.activation)
        self.proj = Linear(cfg.ff_dim, cfg.d_model, cfg.bias)
        self.proj.residual = True
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = LayerNorm(cfg.d_model, cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = LayerNorm(cfg.d_model, cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only language model. ``cfg.vocab_size`` must be set (> 0)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size < 1:
            raise ValueError("model.vocab_size must be set (the tokenizer's vocabulary size)")
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = LayerNorm(cfg.d_model, cfg.bias)
        self.head = None if cfg.tie_embeddings else Linear(cfg.d_model, cfg.vocab_size, False)
        self._init_weights()

    def _init_weights(self) -> None:
        resid_std = 0.02 / math.sqrt(2 * self.cfg.n_layer)
        for module in self.modules():
            if isinstance(module, Linear):
                std = resid_std if getattr(module, "residual", False) else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx: (B, T) token ids, T <= context. Returns logits (B, T, vocab) and, with
        targets (B, T; -1 = ignored), the mean cross-entropy in nats per token."""
        B, T = idx.shape
        if T > self.cfg.context:
            raise ValueError(f"sequence length {T} exceeds model.context={self.cfg.context}")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        head_weight = self.wte.weight if self.head is None else self.head.weight
        logits = kernels.linear(x, head_weight)  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
            )
        return logits, loss
