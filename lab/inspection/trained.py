"""A trained model to look inside: ``Run`` (the model, its tokenizer and the corpus it read,
from a run folder, a checkpoint or an export), ``trace`` (one forward pass observed through
hooks: hidden states and attention maps from the reference math) and what the views share."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from kernels import reference  # noqa: E402
from lab.config.schema import DataConfig  # noqa: E402
from lab.data.corpus import load_corpus  # noqa: E402
from lab.model.gpt import GPT  # noqa: E402
from lab.runs.artifacts import load_model  # noqa: E402
from lab.runs.records import read_record  # noqa: E402


class Run:
    """A trained model, its tokenizer, and (when the folder has a record) its data config."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.dir = path if path.is_dir() else path.parent
        self.model, self.tokenizer = load_model(path)  # a checkpoint, a run folder, an export
        self.record = read_record(self.dir)
        config = (self.record or {}).get("config")
        data = config.get("data") if isinstance(config, dict) else None
        data = data if isinstance(data, dict) else {}
        # the corpus the run read; where token files are cached is this machine's choice,
        # never a path a record (perhaps someone else's) names
        keep = set(DataConfig.__dataclass_fields__) - {"cache_dir"}
        self.data = DataConfig(**{k: v for k, v in data.items() if k in keep})

    def encode(self, text: str, truncate: bool = True) -> torch.Tensor:
        """Token ids of ``text`` (1, T), truncated with a warning to the positional table;
        with ``truncate=False`` a text longer than it is a ValueError instead."""
        if not hasattr(self.tokenizer, "encode"):
            raise ValueError(
                "this model was trained on pre-tokenized ids: it has no text tokenizer"
            )
        ids = self.tokenizer.encode(text.encode("utf-8")).astype(np.int64)
        limit = self.model.cfg.n_positions
        if ids.size > limit and not truncate:
            raise ValueError(
                f"--text is {ids.size} tokens, longer than the model's context of {limit}: "
                "shorten it"
            )
        if ids.size > limit:
            warnings.warn(
                f"the text has {ids.size} tokens; truncated to the model's {limit}", stacklevel=2
            )
            ids = ids[:limit]
        if ids.size == 0:
            raise ValueError("--text must not be empty")
        return torch.as_tensor(ids)[None]

    def val_windows(self, n: int, length: int) -> np.ndarray:
        """n windows of ``length`` tokens, evenly spaced over the run's validation split."""
        val = load_corpus(self.data).val
        starts = np.linspace(0, val.size - length - 1, num=n).astype(np.int64)
        return np.stack([np.asarray(val[s : s + length], dtype=np.int64) for s in starts])

    def sample_text(self, length: int = 64) -> str:
        return self.tokenizer.decode(self.val_windows(1, length)[0])


@torch.no_grad()
def trace(model: GPT, ids: torch.Tensor) -> dict:
    """Observe one forward pass of the model (forward hooks; nothing re-implemented):
    hidden states after the embedding and every block, each layer's attention maps
    (B, H, T, T) from the reference math on the model's own q and k, and how far the maps'
    output is from the model's own attention output (``max_attention_error``). A model
    whose token mixer is not attention has no maps (an empty list)."""
    model.eval()
    hidden, calls = [], []
    attention = model.cfg.mixer == "attention"
    hooks = [model.blocks[0].register_forward_pre_hook(lambda m, args: hidden.append(args[0]))]
    for block in model.blocks:
        if attention:
            hooks.append(
                block.attn.register_forward_hook(lambda m, args, out: calls.append((m, args, out)))
            )
        hooks.append(block.register_forward_hook(lambda m, args, out: hidden.append(out)))
    try:
        model(ids)
    finally:
        for hook in hooks:
            hook.remove()
    maps, error = [], 0.0
    for attn, args, own in calls:
        q, k, v = attn.heads(*args)
        p = reference.attention_probs(q, k, causal=True)  # (B, H, T, T)
        from_maps = attn.merge((p @ v.float()).to(v.dtype))
        error = max(error, float((from_maps - own).abs().max()))
        maps.append(p)
    return {"hidden": hidden, "maps": maps, "max_attention_error": error}


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of attention rows, per head: (B, H, T, T) → (H,)."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean(dim=(0, 2))


def token_labels(tokenizer, ids) -> list[str]:
    return [repr(tokenizer.decode([i]))[1:-1] or "·" for i in ids]


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
