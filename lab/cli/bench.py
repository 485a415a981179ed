"""Training-step throughput of the lab against a minimal plain-PyTorch loop, side by side.

    python -m lab.cli.bench                  CPU: the demo's `mini` model, torch backend
    python -m lab.cli.bench --model tiny --batch-size 16 --context 64 --steps 30
    python -m lab.cli.bench --gpt2           GPU: GPT-2 small (12 × 768, T = 1024, B = 32, bf16,
                                         the 50,257-token vocabulary)

The lab's step is ``lab.training.run.Trainer.train_step`` (batch sampling, the kernels' dispatch
and checks, loss, clipping, AdamW). The plain loop is the same architecture written with
``nn.Linear``, ``nn.LayerNorm`` and ``F.scaled_dot_product_attention`` on a fixed batch:
what a researcher would write in an afternoon. Both are timed in alternating rounds in one
process and the ratio of medians is reported; with ``--gpt2`` the plain loop is also
``torch.compile``d (the PyTorch baseline in lab/BENCHMARKS.md) and MFU is reported against 989 TFLOP/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab.config.composition import compose
from lab.config.counting import flops_per_token
from lab.config.schema import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig
from lab.training.distributed import Dist

GPT2_VOCAB = 50257  # GPT-2's BPE vocabulary: --gpt2 tokens/s compare with GPT-2's


class PlainGPT(nn.Module):
    """The lab's default architecture (pre-LN, GELU, learned positions, tied head) in plain
    PyTorch modules."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.n_head = cfg.n_head
        self.wte = nn.Embedding(cfg.vocab_size, d)
        self.wpe = nn.Embedding(cfg.context, d)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "ln1": nn.LayerNorm(d),
                    "qkv": nn.Linear(d, 3 * d),
                    "proj": nn.Linear(d, d),
                    "ln2": nn.LayerNorm(d),
                    "fc": nn.Linear(d, 4 * d),
                    "out": nn.Linear(4 * d, d),
                }
            )
            for _ in range(cfg.n_layer)
        )
        self.ln_f = nn.LayerNorm(d)

    def forward(self, idx):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for m in self.layers:
            q, k, v = m["qkv"](m["ln1"](x)).split(x.shape[-1], dim=2)
            q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + m["proj"](y.transpose(1, 2).reshape(B, T, -1))
            x = x + m["out"](F.gelu(m["fc"](m["ln2"](x))))
        return F.linear(self.ln_f(x), self.wte.weight)


def timed(fn, steps: int, device) -> float:
    """Seconds per call of fn over ``steps`` calls (synchronising a GPU around them)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def compare(
    cfg: Config, steps: int, rounds: int, compile_plain: bool = False, vocab_size: int = 257
) -> dict:
    """Seconds per step of the lab's trainer and of the plain loop, medians over rounds.
    Both models get ``vocab_size`` rows of embedding and output layer (the byte corpus's
    tokens index the first 257; GPT-2's 50,257 make the output layer the cost it is)."""
    from lab.data.corpus import load_corpus
    from lab.training.device import peak_flops, resolve_device
    from lab.training.trainer import Trainer

    device = resolve_device(cfg.train.device)
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=vocab_size))
    corpus = load_corpus(cfg.data, cfg.model.context)
    import kernels

    kernels.set_backend(cfg.train.backend, **cfg.train.backend_ops)
    trainer = Trainer(cfg, corpus, device, out=None, dist=Dist(), key="bench")
    n = cfg.train.batch_size * cfg.model.context

    def lab_step():
        trainer.train_step(n, cfg.optim.lr)

    torch.manual_seed(0)
    plain = PlainGPT(cfg.model).to(device)
    net = torch.compile(plain) if compile_plain else plain
    opt = torch.optim.AdamW(plain.parameters(), lr=cfg.optim.lr, fused=device.type == "cuda")
    x = torch.randint(0, vocab_size, (cfg.train.batch_size, cfg.model.context), device=device)
    y = torch.randint(0, vocab_size, (cfg.train.batch_size, cfg.model.context), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def plain_step():
        with autocast:
            loss = F.cross_entropy(net(x).float().view(-1, vocab_size), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), cfg.optim.grad_clip)
        opt.step()

    for fn in (lab_step, plain_step):  # warm-up (and compilation)
        for _ in range(3):
            fn()
    lab_t, plain_t = [], []
    for _ in range(rounds):
        lab_t.append(timed(lab_step, steps, device))
        plain_t.append(timed(plain_step, steps, device))
    lab_s, plain_s = statistics.median(lab_t), statistics.median(plain_t)
    # each round's pair was timed back to back: the median of their ratios resists drift
    ratio = statistics.median(p / q for p, q in zip(plain_t, lab_t))
    fpt = flops_per_token(cfg.model)["6N_attn_head"]
    peak = peak_flops(device)
    return {
        "tokens_per_step": n,
        "lab_tokens_per_s": n / lab_s,
        "plain_tokens_per_s": n / plain_s,
        "ratio": ratio,
        "lab_mfu": n / lab_s * fpt / peak if peak else None,
        "plain_mfu": n / plain_s * fpt / peak if peak else None,
        "backends": {op: kernels.backend_for(op, device) for op in kernels.OPS},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.cli.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="mini", help="a conf/model preset")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--backend", default="torch", choices=["auto", "torch", "triton"])
    parser.add_argument("--gpt2", action="store_true", help="GPT-2 small on a GPU, bf16")
    args = parser.parse_args(argv)
    if args.gpt2:
        if not torch.cuda.is_available():
            print("lab.cli.bench: --gpt2 needs a CUDA GPU", file=sys.stderr)
            return 2
        model = ModelConfig(name="gpt2-small", n_layer=12, n_head=12, d_model=768, context=1024)
        cfg = Config(
            model=model,
            data=DataConfig(max_bytes=8_000_000),
            optim=OptimConfig(),
            train=TrainConfig(batch_size=32, device="cuda", backend=args.backend),
        )
    else:
        cfg = compose(
            [
                f"model={args.model}",
                f"model.context={args.context}",
                f"train.batch_size={args.batch_size}",
                f"train.backend={args.backend}",
            ]
        )
    vocab = GPT2_VOCAB if args.gpt2 else 257
    r = compare(cfg, args.steps, args.rounds, compile_plain=args.gpt2, vocab_size=vocab)
    device = (
        torch.cuda.get_device_name()
        if cfg.train.device == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(
        f"{time.strftime('%Y-%m-%d')} | {device} | torch {torch.__version__} | model {cfg.model.name} "
        f"B={cfg.train.batch_size} T={cfg.model.context} vocab {vocab:,} | "
        f"backends {r['backends']}"
    )
    print(
        f"lab step:   {r['lab_tokens_per_s']:>12,.0f} tokens/s"
        + (f"  MFU {r['lab_mfu']:.3f}" if r["lab_mfu"] else "")
    )
    plain_name = "plain loop (compiled)" if args.gpt2 else "plain loop"
    print(
        f"{plain_name}: {r['plain_tokens_per_s']:>12,.0f} tokens/s"
        + (f"  MFU {r['plain_mfu']:.3f}" if r["plain_mfu"] else "")
    )
    print(
        f"ratio lab / plain: {r['ratio']:.3f}  (median over {args.rounds} back-to-back rounds "
        f"of {args.steps} steps each)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
