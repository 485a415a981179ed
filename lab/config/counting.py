"""Parameter and FLOP counting, in one place, under the usual conventions.

Parameters (``param_counts``):
- ``embedding``: the token table V·d, the learned position table T·d (none with RoPE), and
  an untied output head V·d (the vocabulary-sized matrices Kaplan et al. 2020 leave out).
- ``non_embedding``: everything else, per layer 12·d² + 13·d with biases, layer norm and
  d_ff = 4d (a gated MLP: three d×d_ff matrices): Kaplan's N, whose laws are cleanest in it.
  The token mixer's share per layer: attention 4d² + 4d (qkv and output projections); the
  gated convolution 3d² + 2d·K + 5d (d → 2d in, the 2d K-tap filters and their bias, d → d
  out); the LSTM 8d² + 8d (four gates, input and recurrent matrices, PyTorch's two bias
  vectors).
- ``total``: all parameters, Chinchilla's N (Hoffmann et al. 2022 count embeddings).

Training FLOPs per token (``flops_per_token``), forward + backward = 3 × forward:
- ``6N``: 6·N_non_embedding (Kaplan's C ≈ 6ND).
- ``6N_attn``: + 12·L·T·d, the attention scores and weighted sum (QKᵀ and AV, 2·T·d
  each forward, no causal discount), as in PaLM (Chowdhery et al. 2022, appendix B),
  which is also the convention of this lab's MFU figures. The convolution and the LSTM
  use each weight once per token, so for them it equals 6N (their elementwise gates
  are left out, as attention's softmax is).
- ``6N_attn_head``: + 6·d·V, the output projection onto the vocabulary.
C for a run is flops_per_token × D.
"""

from __future__ import annotations

from lab.config.record import FLOP_CONVENTIONS  # noqa: F401 - the conventions flops_per_token gives
from lab.config.schema import Mixer, Mlp, ModelConfig


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """Exact parameter counts of ``lab.model.gpt.GPT(cfg)``: total, non_embedding, embedding."""
    d, L, V, ff = cfg.d_model, cfg.n_layer, cfg.vocab_size, cfg.ff_dim
    b = 1 if cfg.bias else 0
    norm = d * (1 + (b if cfg.norm == "layernorm" else 0))  # weight (+ bias; RMSNorm has none)
    up = 2 * ff if cfg.mlp == Mlp.gated else ff  # gated MLP: gate and value
    mlp = (d * up + up * b) + (ff * d + d * b)  # up, down
    per_layer = 2 * norm + mixer_params(cfg) + mlp
    non_embedding = L * per_layer + norm  # + the final norm
    positions = cfg.n_positions * d if cfg.positions == "learned" else 0  # RoPE has no table
    embedding = V * d + positions + (0 if cfg.tie_embeddings else V * d)
    return {
        "total": non_embedding + embedding,
        "non_embedding": non_embedding,
        "embedding": embedding,
    }


def mixer_params(cfg: ModelConfig) -> int:
    """Parameters of one block's token mixer (``lab.model.gpt.MIXERS``)."""
    d, b = cfg.d_model, 1 if cfg.bias else 0
    if cfg.mixer == Mixer.conv:  # in d → 2d, 2d filters of K taps (+ bias), out d → d
        return (2 * d * d + 2 * d * b) + (2 * d * cfg.conv_kernel + 2 * d * b) + (d * d + d * b)
    if cfg.mixer == Mixer.lstm:  # 4 gates × (input d×d + recurrent d×d + b_ih + b_hh)
        return 4 * (2 * d * d + 2 * d * b)
    return (3 * d * d + 3 * d * b) + (d * d + d * b)  # attention: qkv, output projection


def flops_per_token(cfg: ModelConfig) -> dict[str, int]:
    """Training FLOPs per token under each convention in FLOP_CONVENTIONS."""
    n = param_counts(cfg)["non_embedding"]
    six_n = 6 * n
    attention = cfg.mixer == Mixer.attention
    attn = 12 * cfg.n_layer * cfg.context * cfg.d_model if attention else 0
    head = 6 * cfg.d_model * cfg.vocab_size
    return {"6N": six_n, "6N_attn": six_n + attn, "6N_attn_head": six_n + attn + head}


def training_flops(cfg: ModelConfig, tokens: int) -> dict[str, float]:
    """C = flops_per_token × D under each convention."""
    return {k: float(v) * tokens for k, v in flops_per_token(cfg).items()}


def budget_tokens(cfg: ModelConfig, budget: float) -> int:
    """D for a compute budget C under C = 6·N·D (N non-embedding): round(C / (6·N))."""
    return int(round(budget / (6 * param_counts(cfg)["non_embedding"])))


def below_one_context(cfg) -> str | None:
    """Why a run's compute budget (``cfg.data.budget``) is too small to train it: D below
    one context; None when it is not (or there is no budget)."""
    if cfg.data.budget is None:
        return None
    tokens = budget_tokens(cfg.model, cfg.data.budget)
    if tokens >= cfg.model.context:
        return None
    return (
        f"budget C={cfg.data.budget:.3g} is too small for model {cfg.model.name!r}: "
        f"D = C/(6N) = {tokens} tokens, below one context of {cfg.model.context}"
    )
