"""``lab-export``: hand a trained model to the Hugging Face ecosystem, and read it back.

    lab-export RUN --to hf OUT            safetensors + config.json + tokenizer, for transformers
    lab-export RUN --to safetensors OUT   the lab's own weights as safetensors, and its config

``--to hf`` writes the architecture ``transformers`` already has for the model:

- learned positions + layer norm + plain MLP → ``GPT2LMHeadModel`` (GPT-2's Conv1D weights
  are the transpose of ``nn.Linear``'s; a model without biases gets zero biases, the same
  function);
- RoPE + RMSNorm + gated MLP → ``LlamaForCausalLM`` (q, k, v split out of the fused
  projection; the gate and up halves of the first MLP matrix; biases through
  ``attention_bias`` / ``mlp_bias``).

Any other combination has no faithful equivalent there and is refused with the reason. The
tokenizer goes with the weights: the run's BPE ``tokenizer.json``, or for bytes a
byte-level BPE without merges whose ids are the byte values (256 is end of document). The
folder also holds ``lab_model.json`` (the lab's model config), so ``lab-generate`` and
``lab-inspect`` read an export as they read a run (``lab.runs.artifacts.load_model``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from lab.config.schema import ModelConfig
from lab.runs.artifacts import load_model
from lab.runs.files import write_atomic, write_text_atomic
from lab.runs.records import read_record
from lab.runs.hf_format import LAB_MODEL, WEIGHTS, architecture, byte_tokenizer_json, to_gpt2, to_llama


def _save_tokenizer(tokenizer, model_cfg: ModelConfig, out: Path) -> None:
    from lab.data.tokenizer import ByteTokenizer

    if isinstance(tokenizer, ByteTokenizer):
        spec = byte_tokenizer_json(model_cfg.vocab_size)
    else:  # a tokenizers model (a run of ids alone: refuse_mismatched_tokenizer said no)
        spec = json.loads(tokenizer.tok.to_str())
    write_text_atomic(out / "tokenizer.json", json.dumps(spec))
    eos = "<|endoftext|>"
    write_text_atomic(
        out / "tokenizer_config.json",
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": eos,
                "bos_token": eos,
                "model_max_length": model_cfg.n_positions,
            }
        )
    )


def refuse_mismatched_tokenizer(tokenizer, cfg: ModelConfig) -> None:
    """Raise ValueError, with the reason, when the run's tokenizer cannot go with its model:
    none (pre-tokenized ids), or one with more tokens than the model's vocabulary (its ids
    past the embedding would index nothing; transformers would generate garbage)."""
    from lab.data.tokenizer import IdTokenizer

    if isinstance(tokenizer, IdTokenizer):
        raise ValueError(
            f"this model was trained on pre-tokenized ids ({tokenizer.vocab_size:,} of them) "
            "with no tokenizer: there is no tokenizer to export. Train with the ids' "
            "tokenizer.json beside the .bin files (or data.tokenizer=PATH), or export with "
            "--to safetensors"
        )
    if tokenizer.vocab_size > cfg.vocab_size:
        raise ValueError(
            f"the run's tokenizer ({getattr(tokenizer, 'name', '?')}) has "
            f"{tokenizer.vocab_size:,} tokens and its model's vocabulary {cfg.vocab_size:,}: "
            "they were not trained together"
        )


def export(run: str | Path, out: str | Path, to: str = "hf", force: bool = False) -> Path:
    """Write the model of ``run`` (a run folder or checkpoint) to ``out``, every file with
    the umask's mode. Raises ValueError for a model transformers cannot hold faithfully
    (``to="hf"``), and for an ``out`` that is a file or a folder holding anything (another
    export's config.json would mislead transformers) unless ``force``, which clears it."""
    from safetensors.torch import save

    if to not in ("hf", "safetensors"):
        raise ValueError(f"--to must be 'hf' or 'safetensors', got {to!r}")
    model, tokenizer = load_model(run)
    _warn_if_unfinished(Path(run))
    cfg, out = model.cfg, Path(out)
    if to == "hf":
        refuse_mismatched_tokenizer(tokenizer, cfg)
    _clear(out, force)
    if to == "hf":
        weights, config = to_gpt2(model) if architecture(cfg) == "gpt2" else to_llama(model)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.json", json.dumps(config, indent=2))
        _save_tokenizer(tokenizer, cfg, out)
    else:
        weights = dict(model.state_dict())
        out.mkdir(parents=True, exist_ok=True)
    blob = save({k: v.detach().contiguous() for k, v in weights.items()})
    write_atomic(out / WEIGHTS, lambda f: f.write(blob))
    lab_model = {
        "format": to,
        "model_config": json.loads(json.dumps(cfg.__dict__, default=str)),
        "tokenizer": tokenizer.to_payload() if hasattr(tokenizer, "to_payload") else None,
    }
    write_text_atomic(out / LAB_MODEL, json.dumps(lab_model, indent=2))
    return out


def _clear(out: Path, force: bool) -> None:
    """Make way for an export at ``out``: nothing there, or (``force``) what is there
    removed first; else ValueError naming what is in the way."""
    if not (out.exists() or out.is_symlink()):
        return
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        return
    if not force:
        what = "a folder that is not empty" if out.is_dir() else "a file"
        raise ValueError(f"{out} is {what}; choose a new folder, or add --force to replace it")
    if out.is_dir() and not out.is_symlink():
        shutil.rmtree(out)
    else:
        out.unlink()


def _warn_if_unfinished(run: Path) -> None:
    record = read_record(run if run.is_dir() else run.parent)
    status = (record or {}).get("status")
    if status not in (None, "ok"):
        print(
            f"lab-export: warning: the run's record says {status!r}: this is its last "
            "checkpoint, not a finished model",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lab-export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", help="a run folder (with checkpoint.pt) or a checkpoint file")
    parser.add_argument("--to", choices=["hf", "safetensors"], default="hf")
    parser.add_argument("out", help="the folder to write (new or empty)")
    parser.add_argument("--force", action="store_true", help="replace what OUT holds")
    args = parser.parse_args(argv)
    try:
        out = export(args.run, args.out, args.to, args.force)
    except ImportError as e:
        print(
            f"lab-export: error: {e.name or e} is not installed: pip install -e '.[hf]'",
            file=sys.stderr,
        )
        return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"lab-export: error: {e}", file=sys.stderr)
        return 2
    print(f"exported ({args.to}): {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
