"""How much memory a training run needs on each device, before it is built.

``estimate`` counts, per GPU, bytes of

- **weights**: fp32 master parameters (4 bytes each), their fp32 gradients and AdamW's two
  fp32 moments: the 16 bytes a parameter of mixed-precision training (Rajbhandari et al.
  2020, "ZeRO", section 3.1); DDP also keeps its gradient buckets (4 more). FSDP divides
  them by the processes and adds the gathered bf16 parameters of the root and of two
  blocks (the one computing and the one prefetched);
- **saved** for the backward: under bf16 autocast without FSDP, the bf16 copy of each
  matrix a matmul used (2 bytes a parameter); and the activations it keeps per token, counted from the lab's own block
  (``lab.model.gpt``) under the torch backend: per layer 4·r·d (each norm keeps its input
  and its normalised output, r bytes the residual stream's fp32) + a·d·(7, or 9 with RoPE:
  the q, k rotated) + a·f·(4 gated, 2 plain MLP), a bytes the compute dtype; then the
  final norm, the head's input and the fp32 log-softmax of the logits (4·V a token). With
  ``activation_checkpointing=block`` only each block's input stays, and one block's
  activations are rebuilt at a time;
- **transient**: the loss's backward (the fp32 logits' gradient and the bf16 one, 6·V a
  token) on top of everything kept.

``lab.model.footprint.measure`` checks the weight and saved terms: the same model built
under PyTorch's ``FakeTensorMode`` on the CPU (no memory is allocated), one forward and
backward and one AdamW step, counting the bytes of every parameter, gradient and optimizer
state and of the distinct storages autograd saves for the backward. Neither sees the
allocator's fragmentation or the kernels' workspaces: the planner adds ``HEADROOM``.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.config.counting import param_counts
from lab.config.schema import Mlp, ModelConfig

HEADROOM = 1.1  # fragmentation, workspaces, NCCL buffers: a tenth on top of the count

FP32, BF16 = 4, 2


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU, by what holds them."""

    weights: float  # parameters, gradients, optimizer moments (and DDP's buckets)
    saved: float  # kept for the backward pass: activations, and bf16 copies of matrices
    transient: float  # the peak of the loss's backward on top of the rest

    @property
    def total(self) -> float:
        return self.weights + self.saved + self.transient

    @property
    def planned(self) -> float:
        """``total`` with ``HEADROOM``: what the planner compares with a device's memory."""
        return self.total * HEADROOM


def matrix_params(cfg: ModelConfig) -> int:
    """Parameters that enter a matmul (the blocks' linear layers, and the head: the tied
    embedding or its own), which bf16 autocast copies to bf16."""
    d, f = cfg.d_model, cfg.ff_dim
    fc = (2 if cfg.mlp == Mlp.gated else 1) * d * f
    per_layer = 3 * d * d + d * d + fc + f * d
    return cfg.n_layer * per_layer + cfg.vocab_size * d


def block_params(cfg: ModelConfig) -> int:
    counts = param_counts(cfg)
    final_norm = (2 if cfg.bias and cfg.norm == "layernorm" else 1) * cfg.d_model
    return (counts["non_embedding"] - final_norm) // max(1, cfg.n_layer)


def activations_per_token(cfg: ModelConfig, compute_bytes: int) -> dict[str, float]:
    """Bytes autograd keeps per token: ``per_layer`` (one block), ``head`` (final norm, head
    input, log-softmax) and ``block_input`` (what a checkpointed block keeps)."""
    if cfg.mixer != "attention":
        raise ValueError(f"the memory estimate covers attention blocks, not mixer={cfg.mixer}")
    d, f, a, r = cfg.d_model, cfg.ff_dim, compute_bytes, FP32
    norm = 2 * r * d if cfg.norm == "rmsnorm" else r * d  # layer norm keeps its input only
    attention = a * d * (9 if cfg.positions == "rope" else 7)
    mlp = a * f * (4 if cfg.mlp == Mlp.gated else 2)
    per_layer = 2 * norm + attention + mlp
    head = norm + a * d + FP32 * cfg.vocab_size + 8  # + the token ids (int64)
    return {"per_layer": per_layer, "head": head, "block_input": r * d}


def estimate(
    cfg: ModelConfig,
    micro_batch: int,
    world: int = 1,
    parallel: str = "ddp",
    checkpointing: str = "none",
    bf16: bool = True,
) -> Memory:
    """Bytes per GPU for ``cfg`` at ``micro_batch`` sequences of ``cfg.context`` tokens per
    forward, on ``world`` processes under ``parallel`` (ddp | fsdp), with or without block
    checkpointing, in bf16 autocast (a GPU) or fp32 (``bf16=False``, the CPU)."""
    n = param_counts(cfg)["total"]
    a = BF16 if bf16 else FP32
    tokens = micro_batch * cfg.context
    casts = 0.0
    if parallel == "fsdp" and world > 1:
        gathered = BF16 * (2 * block_params(cfg) + n - cfg.n_layer * block_params(cfg))
        weights = 16 * n / world + (gathered if bf16 else 0)
    else:
        weights = 16 * n + (4 * n if world > 1 else 0)
        casts = BF16 * matrix_params(cfg) if bf16 else 0.0
    per = activations_per_token(cfg, a)
    if checkpointing == "block":
        kept = cfg.n_layer * per["block_input"] + per["per_layer"] + per["head"]
    else:
        kept = cfg.n_layer * per["per_layer"] + per["head"]
    transient = (FP32 + a) * cfg.vocab_size * tokens
    return Memory(weights=weights, saved=casts + kept * tokens, transient=transient)
