"""The Hugging Face formats a lab model is exported to and read back from: the weight
names and config of ``GPT2LMHeadModel`` (learned positions, layer norm, plain MLP; GPT-2's
Conv1D weights are the transpose of ``nn.Linear``'s) and of ``LlamaForCausalLM`` (RoPE,
RMSNorm, gated MLP: q, k, v split out of the fused projection, the gate and up halves of
the first MLP matrix), in both directions, and a byte-level tokenizer.json for the byte
tokenizer. The folder's ``lab_model.json`` holds the lab's own model config."""

from __future__ import annotations

import json

import torch

from lab.config.schema import Mlp, ModelConfig, NormKind, Positions
from lab.model.gpt import GPT

LAB_MODEL = "lab_model.json"
WEIGHTS = "model.safetensors"

# transformers' names for the activations the GEMM can fuse (ACT2FN)
HF_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "silu": "silu"}


def architecture(cfg: ModelConfig) -> str:
    """ "gpt2" or "llama" for a model transformers can hold; ValueError with the reason."""
    learned, layer, plain = (
        cfg.positions == Positions.learned,
        cfg.norm == NormKind.layernorm,
        cfg.mlp == Mlp.plain,
    )
    if learned and layer and plain:
        return "gpt2"
    if not learned and not layer and not plain:
        return "llama"
    raise ValueError(
        f"no faithful Hugging Face architecture for positions={cfg.positions}, "
        f"norm={cfg.norm}, mlp={cfg.mlp}: GPT-2 is learned + layernorm + plain MLP, Llama "
        "is rope + rmsnorm + gated MLP; export the plain weights with --to safetensors"
    )


def to_gpt2(model: GPT) -> tuple[dict, dict]:
    cfg, sd = model.cfg, model.state_dict()
    c, out = cfg.d_model, {}

    def bias(name, size):
        return sd.get(name, torch.zeros(size))

    out["transformer.wte.weight"] = sd["wte.weight"]
    out["transformer.wpe.weight"] = sd["wpe.weight"]
    for i in range(cfg.n_layer):
        p, q = f"blocks.{i}.", f"transformer.h.{i}."
        for ours, theirs in (("ln1", "ln_1"), ("ln2", "ln_2")):
            out[q + theirs + ".weight"] = sd[p + ours + ".weight"]
            out[q + theirs + ".bias"] = bias(p + ours + ".bias", c)
        for ours, theirs in (
            ("attn.qkv", "attn.c_attn"),
            ("attn.proj", "attn.c_proj"),
            ("mlp.fc", "mlp.c_fc"),
            ("mlp.proj", "mlp.c_proj"),
        ):
            w = sd[p + ours + ".weight"]  # (out, in); GPT-2's Conv1D holds (in, out)
            out[q + theirs + ".weight"] = w.t().contiguous()
            out[q + theirs + ".bias"] = bias(p + ours + ".bias", w.shape[0])
    out["transformer.ln_f.weight"] = sd["ln_f.weight"]
    out["transformer.ln_f.bias"] = bias("ln_f.bias", c)
    if not cfg.tie_embeddings:  # tied: transformers ties lm_head to the embedding on load
        out["lm_head.weight"] = sd["head.weight"]
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.n_positions,
        "n_embd": c,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.ff_dim,
        "activation_function": HF_ACTIVATIONS[str(cfg.activation)],
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.embd_dropout,
        "attn_pdrop": cfg.attn_dropout,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": cfg.vocab_size - 1,
        "eos_token_id": cfg.vocab_size - 1,
    }
    return out, config


def to_llama(model: GPT) -> tuple[dict, dict]:
    cfg, sd = model.cfg, model.state_dict()
    c, ff, out = cfg.d_model, cfg.ff_dim, {}
    out["model.embed_tokens.weight"] = sd["wte.weight"]
    for i in range(cfg.n_layer):
        p, q = f"blocks.{i}.", f"model.layers.{i}."
        out[q + "input_layernorm.weight"] = sd[p + "ln1.weight"]
        out[q + "post_attention_layernorm.weight"] = sd[p + "ln2.weight"]
        for name, part in zip(("q", "k", "v"), sd[p + "attn.qkv.weight"].split(c)):
            out[q + f"self_attn.{name}_proj.weight"] = part.contiguous()
        out[q + "self_attn.o_proj.weight"] = sd[p + "attn.proj.weight"]
        gate, up = sd[p + "mlp.fc.weight"].split(ff)  # act(gate) ⊙ value, in that order
        out[q + "mlp.gate_proj.weight"] = gate.contiguous()
        out[q + "mlp.up_proj.weight"] = up.contiguous()
        out[q + "mlp.down_proj.weight"] = sd[p + "mlp.proj.weight"]
        if cfg.bias:
            for name, part in zip(("q", "k", "v"), sd[p + "attn.qkv.bias"].split(c)):
                out[q + f"self_attn.{name}_proj.bias"] = part.contiguous()
            out[q + "self_attn.o_proj.bias"] = sd[p + "attn.proj.bias"]
            gate_b, up_b = sd[p + "mlp.fc.bias"].split(ff)
            out[q + "mlp.gate_proj.bias"] = gate_b.contiguous()
            out[q + "mlp.up_proj.bias"] = up_b.contiguous()
            out[q + "mlp.down_proj.bias"] = sd[p + "mlp.proj.bias"]
    out["model.norm.weight"] = sd["ln_f.weight"]
    if not cfg.tie_embeddings:  # tied: transformers ties lm_head to the embedding on load
        out["lm_head.weight"] = sd["head.weight"]
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": c,
        "intermediate_size": ff,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_head,
        "head_dim": c // cfg.n_head,
        "hidden_act": HF_ACTIVATIONS[str(cfg.activation)],
        "max_position_embeddings": cfg.n_positions,
        "rms_norm_eps": 1e-5,
        "rope_theta": cfg.rope_theta,
        "attention_bias": cfg.bias,
        "mlp_bias": cfg.bias,
        "attention_dropout": cfg.attn_dropout,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": cfg.vocab_size - 1,
        "eos_token_id": cfg.vocab_size - 1,
    }
    return out, config


def byte_tokenizer_json(vocab_size: int) -> dict:
    """A tokenizer.json (Hugging Face tokenizers) whose ids are the byte values of the text:
    byte-level pre-tokenizer and decoder (GPT-2's byte-to-character map), BPE without
    merges over the 256 byte characters, and id 256 for the end of document."""
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    chars = pre_tokenizers.ByteLevel.alphabet()
    byte_to_char = _bytes_to_unicode()
    vocab = {byte_to_char[b]: b for b in range(256)}
    assert set(vocab) == set(chars)
    tok = HfTokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    if vocab_size > 256:
        tok.add_special_tokens(["<|endoftext|>"])
    return json.loads(tok.to_str())


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 byte values to printable characters (Radford et
    al. 2019, the byte-level BPE of GPT-2)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping




def from_hf(model: GPT, weights: dict) -> dict:
    """The lab's state dict from an export's Hugging Face weights (the inverse of to_gpt2 and
    to_llama), checked by mapping the model's own weights forward and matching the names."""
    forward = to_gpt2 if architecture(model.cfg) == "gpt2" else to_llama
    cfg, sd = model.cfg, {}
    names, _ = forward(model)
    if set(names) != set(weights):
        raise ValueError("the export's weights do not match its lab_model.json")
    if architecture(cfg) == "gpt2":
        sd["wte.weight"] = weights["transformer.wte.weight"]
        sd["wpe.weight"] = weights["transformer.wpe.weight"]
        for i in range(cfg.n_layer):
            p, q = f"blocks.{i}.", f"transformer.h.{i}."
            for ours, theirs in (("ln1", "ln_1"), ("ln2", "ln_2")):
                sd[p + ours + ".weight"] = weights[q + theirs + ".weight"]
                if cfg.bias:
                    sd[p + ours + ".bias"] = weights[q + theirs + ".bias"]
            for ours, theirs in (
                ("attn.qkv", "attn.c_attn"),
                ("attn.proj", "attn.c_proj"),
                ("mlp.fc", "mlp.c_fc"),
                ("mlp.proj", "mlp.c_proj"),
            ):
                sd[p + ours + ".weight"] = weights[q + theirs + ".weight"].t().contiguous()
                if cfg.bias:
                    sd[p + ours + ".bias"] = weights[q + theirs + ".bias"]
        sd["ln_f.weight"] = weights["transformer.ln_f.weight"]
        if cfg.bias:
            sd["ln_f.bias"] = weights["transformer.ln_f.bias"]
    else:
        sd["wte.weight"] = weights["model.embed_tokens.weight"]
        for i in range(cfg.n_layer):
            p, q = f"blocks.{i}.", f"model.layers.{i}."
            sd[p + "ln1.weight"] = weights[q + "input_layernorm.weight"]
            sd[p + "ln2.weight"] = weights[q + "post_attention_layernorm.weight"]
            sd[p + "attn.qkv.weight"] = torch.cat(
                [weights[q + f"self_attn.{n}_proj.weight"] for n in "qkv"]
            )
            sd[p + "attn.proj.weight"] = weights[q + "self_attn.o_proj.weight"]
            sd[p + "mlp.fc.weight"] = torch.cat(
                [weights[q + "mlp.gate_proj.weight"], weights[q + "mlp.up_proj.weight"]]
            )
            sd[p + "mlp.proj.weight"] = weights[q + "mlp.down_proj.weight"]
            if cfg.bias:
                sd[p + "attn.qkv.bias"] = torch.cat(
                    [weights[q + f"self_attn.{n}_proj.bias"] for n in "qkv"]
                )
                sd[p + "attn.proj.bias"] = weights[q + "self_attn.o_proj.bias"]
                sd[p + "mlp.fc.bias"] = torch.cat(
                    [weights[q + "mlp.gate_proj.bias"], weights[q + "mlp.up_proj.bias"]]
                )
                sd[p + "mlp.proj.bias"] = weights[q + "mlp.down_proj.bias"]
        sd["ln_f.weight"] = weights["model.norm.weight"]
    if not cfg.tie_embeddings:
        sd["head.weight"] = weights["lm_head.weight"]
    return sd
