"""A GPT-style decoder built only from the ``kernels`` ops (after nanoGPT's model.py).

token embedding (+ learned positions) → n_layer × [x + mix(norm(x)); x + mlp(norm(x))] →
norm → linear head (tied to the token embedding by default). The token mixer is attention
by default (``model.mixer``), or a gated causal convolution, or an LSTM. Every matmul, norm,
attention and convolution goes through ``kernels.linear``, ``kernels.layer_norm`` /
``kernels.rms_norm``, ``kernels.attention`` and ``kernels.causal_conv1d``, so switching the
kernel backend swaps the whole model's compute (the LSTM is PyTorch's own).

Knobs (``lab.config.schema.ModelConfig``): the MLP's activation (any name in
``kernels.activations``), a plain or gated MLP (GLU variants, Shazeer 2020: gated + silu is
SwiGLU), norm layernorm | rmsnorm, positions learned | rope (Su et al. 2021, rotating half
the head dim's pairs as GPT-NeoX does), dropout on embeddings, residual branches and
attention probabilities, tied or untied head. GPT-2 initialisation: N(0, 0.02) weights,
residual projections scaled by 1/sqrt(2·n_layer).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
from kernels import activations
from lab.config.schema import Mixer, Mlp, ModelConfig


def dropout(p: float) -> nn.Module:
    """nn.Dropout, or nothing at all when p = 0 (a call saved per use on the hot path)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


class Linear(nn.Module):
    """y = activation(x Wᵀ + b) through ``kernels.linear``; weight (out, in)."""

    def __init__(self, d_in: int, d_out: int, bias: bool = True, activation: str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.linear(x, self.weight, self.bias, self.activation)


class Norm(nn.Module):
    """Layer norm (weight and bias) or RMSNorm (weight only) over the last dimension."""

    def __init__(self, d: int, kind: str = "layernorm", bias: bool = True, eps: float = 1e-5):
        super().__init__()
        self.kind = kind
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if bias and kind == "layernorm" else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "rmsnorm":
            return kernels.rms_norm(x, self.weight, self.eps)
        return kernels.layer_norm(x, self.weight, self.bias, self.eps)


def rope_tables(n_positions: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, (n_positions, head_dim / 2), for rotary embeddings."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(n_positions, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (x₁, x₂) halves of the head dim by position. x: (B, H, T, D); cos, sin: (T, D/2)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = Linear(cfg.d_model, 3 * cfg.d_model, cfg.bias)
        self.proj = Linear(cfg.d_model, cfg.d_model, cfg.bias)
        self.proj.residual = True
        self.attn_dropout = cfg.attn_dropout
        self.resid_dropout = dropout(cfg.dropout)
        # μP: 1/d_head scaling, as sqrt(base head dim)/head dim so it is SP's at the base
        # width (microsoft/mup's attention multiplier); None: the op's 1/sqrt(d_head)
        self.sm_scale = None
        if cfg.width_mult != 1.0:
            self.sm_scale = math.sqrt(cfg.base_d_model // cfg.n_head) / (cfg.d_model // cfg.n_head)

    def heads(self, x: torch.Tensor, rope: tuple | None = None) -> tuple[torch.Tensor, ...]:
        """q, k, v, each (B, nh, T, hs), positions applied: what attention attends with
        (model inspection reads the attention maps from these)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # each (B, T, C)
        # (B, nh, T, hs): views of the fused projection, no copy
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, nh, T, hs) heads → the output projection's (B, T, C) result."""
        B, _, T, _ = y.shape
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))

    def forward(self, x: torch.Tensor, rope: tuple | None = None) -> torch.Tensor:
        q, k, v = self.heads(x, rope)
        p = self.attn_dropout if self.training else 0.0
        y = kernels.attention(q, k, v, causal=True, sm_scale=self.sm_scale, dropout_p=p)
        return self.resid_dropout(self.merge(y))


class GatedConv(nn.Module):
    """The convolutional token mixer: d → 2d projection, a depthwise causal convolution over
    time of both halves (``kernels.causal_conv1d``, K = ``model.conv_kernel`` taps), a GLU
    gate (value ⊙ σ(gate), Dauphin et al. 2017, whose gated linear units convolve both
    paths) and a d → d output projection. Each position sees the K − 1 before it in this
    block; stacking L blocks widens the receptive field to L·(K − 1) + 1 positions."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, k = cfg.d_model, cfg.conv_kernel
        self.proj_in = Linear(d, 2 * d, cfg.bias)
        # depthwise: one K-tap filter per channel; PyTorch's conv1d default init
        self.conv_weight = nn.Parameter(torch.empty(2 * d, k).uniform_(-(k**-0.5), k**-0.5))
        self.conv_bias = nn.Parameter(torch.zeros(2 * d)) if cfg.bias else None
        self.proj = Linear(d, d, cfg.bias)
        self.proj.residual = True
        self.resid_dropout = dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope: tuple | None = None) -> torch.Tensor:
        h = kernels.causal_conv1d(self.proj_in(x), self.conv_weight, self.conv_bias)
        value, gate = h.chunk(2, dim=-1)
        return self.resid_dropout(self.proj(value * torch.sigmoid(gate)))


class LSTMMixer(nn.Module):
    """The recurrent token mixer: one PyTorch LSTM layer, d → d (cuDNN on a GPU), as in
    Kaplan et al.'s (2020) transformer/LSTM comparison; PyTorch's own initialisation."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.lstm = nn.LSTM(cfg.d_model, cfg.d_model, batch_first=True, bias=cfg.bias)
        self.resid_dropout = dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope: tuple | None = None) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.resid_dropout(out)


MIXERS = {Mixer.attention: CausalSelfAttention, Mixer.conv: GatedConv, Mixer.lstm: LSTMMixer}


class MLP(nn.Module):
    """d → d_ff → d. Plain: the activation fused into the first linear. Gated: one 2·d_ff
    projection split into a gate and a value, act(gate) ⊙ value (SwiGLU with silu)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        ff = cfg.ff_dim
        self.gate_act = activations.get(str(cfg.activation)).torch if cfg.mlp == Mlp.gated else None
        if self.gate_act is not None:
            self.fc = Linear(cfg.d_model, 2 * ff, cfg.bias)
        else:
            self.fc = Linear(cfg.d_model, ff, cfg.bias, activation=str(cfg.activation))
        self.proj = Linear(ff, cfg.d_model, cfg.bias)
        self.proj.residual = True
        self.dropout = dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.gate_act is not None:
            gate, value = h.chunk(2, dim=-1)
            h = self.gate_act(gate) * value
        return self.dropout(self.proj(h))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = Norm(cfg.d_model, cfg.norm, cfg.bias)
        # the token mixer; named `attn` whatever it is, so checkpoints, exports and hooks
        # of attention models keep their parameter names
        self.attn = MIXERS[cfg.mixer](cfg)
        self.ln2 = Norm(cfg.d_model, cfg.norm, cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, rope: tuple | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), rope)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only language model. ``cfg.vocab_size`` must be set (> 0)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size < 1:
            raise ValueError("model.vocab_size must be set (the tokenizer's vocabulary size)")
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = (
            nn.Embedding(cfg.n_positions, cfg.d_model) if cfg.positions == "learned" else None
        )
        if cfg.positions == "rope":
            cos, sin = rope_tables(cfg.n_positions, cfg.d_model // cfg.n_head, cfg.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop = dropout(cfg.embd_dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = Norm(cfg.d_model, cfg.norm, cfg.bias)
        self.head = None if cfg.tie_embeddings else Linear(cfg.d_model, cfg.vocab_size, False)
        # recompute each block in the backward pass instead of keeping its activations
        # (train.activation_checkpointing=block; the same gradients, for about a third more
        # compute: Chen et al. 2016)
        self.checkpoint_blocks = False
        self._init_weights()

    def _init_weights(self) -> None:
        # μP: hidden matrices' std shrinks as 1/sqrt(m) (variance ∝ 1/fan_in relative to
        # the base width); embeddings and the output layer keep theirs (Yang et al. 2022)
        scale = 1.0 / math.sqrt(self.cfg.width_mult)
        resid_std = 0.02 / math.sqrt(2 * self.cfg.n_layer)
        for module in self.modules():
            if isinstance(module, Linear):
                std = resid_std if getattr(module, "residual", False) else 0.02
                if module is not self.head:
                    std *= scale
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if self.head is not None and self.cfg.readout_zero_init:
            nn.init.zeros_(self.head.weight)

    def hidden_matrices(self) -> list[nn.Parameter]:
        """The matrices both of whose dimensions grow with the width (the blocks' linear
        and LSTM weights): μP trains them at lr / m. Embeddings, the output layer, norms,
        biases and the convolution's per-channel filters are not among them."""
        out = []
        for block in self.blocks:
            for name, p in block.named_parameters():
                if p.dim() == 2 and not name.endswith("conv_weight"):
                    out.append(p)
        return out

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx: (B, T) token ids, T <= the positional table. Returns logits (B, T, vocab)
        and, with targets (B, T; -1 = ignored), the mean cross-entropy in nats per token."""
        B, T = idx.shape
        if T > self.cfg.n_positions:
            raise ValueError(
                f"sequence length {T} exceeds the positional table of {self.cfg.n_positions}"
            )
        x = self.wte(idx)  # (B, T, C)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        else:
            rope = (self.rope_cos[:T], self.rope_sin[:T])
        x = self.drop(x)
        recompute = self.checkpoint_blocks and torch.is_grad_enabled()
        for block in self.blocks:
            if recompute:  # non-reentrant: works under FSDP2 and with kernels' Functions
                x = torch.utils.checkpoint.checkpoint(block, x, rope, use_reentrant=False)
            else:
                x = block(x, rope)
        x = self.ln_f(x)
        head_weight = self.wte.weight if self.head is None else self.head.weight
        logits = kernels.linear(x, head_weight)  # (B, T, vocab)
        if self.cfg.width_mult != 1.0:
            logits = logits / self.cfg.width_mult  # μP: the output layer's 1/m
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
            )
        return logits, loss
