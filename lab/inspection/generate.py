"""``lab-generate``: sample text from a trained model, to see what it learned.

    lab-generate RUN_DIR_OR_CHECKPOINT [--prompt "def "] [--tokens 200]
                 [--temperature 0.8] [--top-k 40] [--samples 1] [--seed 0]

Temperature 0 is greedy decoding. A prompt longer than the model's positional table keeps
its last tokens; generation slides the same window.
"""

from __future__ import annotations

import argparse
import sys

import torch

from lab.model.gpt import GPT
from lab.runs.artifacts import load_model


@torch.no_grad()
def generate(
    model: GPT,
    ids: torch.Tensor,
    new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend ids (B, T) by ``new_tokens`` sampled tokens; returns (B, T + new_tokens)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    window = model.cfg.n_positions
    for _ in range(new_tokens):
        logits, _ = model(ids[:, -window:])
        logits = logits[:, -1, :].float()
        if temperature == 0:
            nxt = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lab-generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="a run folder (with checkpoint.pt) or a checkpoint file")
    parser.add_argument("--prompt", default="def ")
    parser.add_argument("--tokens", type=int, default=200, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=40)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("tokens", "samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    try:
        model, tok = load_model(args.checkpoint)
        if not hasattr(tok, "encode"):
            raise ValueError(
                "this model was trained on pre-tokenized ids: there is no text tokenizer"
            )
        prompt = tok.encode(args.prompt.encode()).astype("int64")
        if prompt.size == 0:
            raise ValueError("--prompt must not be empty")
        if prompt.size > model.cfg.n_positions:
            print(
                f"warning: the prompt has {prompt.size} tokens; keeping the last "
                f"{model.cfg.n_positions} (the positional table)",
                file=sys.stderr,
            )
        ids = torch.as_tensor(prompt)[None].repeat(args.samples, 1)
        gen = torch.Generator().manual_seed(args.seed)
        out = generate(model, ids, args.tokens, args.temperature, args.top_k, gen)
    except (ValueError, FileNotFoundError) as e:
        print(f"lab-generate: error: {e}", file=sys.stderr)
        return 2
    for i, row in enumerate(out):
        if args.samples > 1:
            print(f"--- sample {i + 1}")
        print(tok.decode(row.tolist()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
