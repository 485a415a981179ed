"""lab-export: transformers loads the export and computes the lab's logits; greedy decoding
gives the same tokens; the tokenizer goes along; exports come back into the lab."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lab.config.schema import ModelConfig
from lab.data.tokenizer import ByteTokenizer
from lab.inspection.generate import generate
from lab.model.gpt import GPT
from lab.runs.artifacts import load_model
from lab.runs.checkpoint import save_checkpoint
from lab.runs.export import export, main

transformers = pytest.importorskip("transformers")  # the [hf] extra; CI installs it

CONFIGS = {
    "demo": {},  # learned positions, layer norm, gelu, tied: GPT-2
    "gpt2_untied_relu_nobias": {"activation": "relu", "tie_embeddings": False, "bias": False},
    "llama": {"positions": "rope", "norm": "rmsnorm", "mlp": "gated", "activation": "silu"},
    "llama_bias_untied": {
        "positions": "rope",
        "norm": "rmsnorm",
        "mlp": "gated",
        "activation": "gelu_tanh",
        "tie_embeddings": False,
    },
}


def _run(tmp_path, **knobs):
    cfg = ModelConfig(
        name="t", n_layer=2, n_head=4, d_model=32, context=48, vocab_size=257, **knobs
    )
    torch.manual_seed(0)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():  # weights far from init, so logits differ by position
            p.add_(torch.randn_like(p) * 0.1)
    payload = {
        "model": model.state_dict(),
        "model_config": json_config(cfg),
        "tokenizer": ByteTokenizer().to_payload(),
    }
    save_checkpoint(tmp_path / "run" / "checkpoint.pt", payload)
    return model.eval(), tmp_path / "run"


def json_config(cfg):
    return {
        f.name: (str(v) if isinstance(v, str) else v)
        for f in dataclasses.fields(cfg)
        for v in [getattr(cfg, f.name)]
    }


@pytest.mark.parametrize("name", CONFIGS)
def test_transformers_loads_the_export_with_the_same_logits_and_tokens(tmp_path, name):
    model, run = _run(tmp_path, **CONFIGS[name])
    out = export(run, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    expected = "llama" if "llama" in name else "gpt2"
    assert hf.config.model_type == expected
    ids = torch.tensor([list(b"def f(x):\n    return x")])
    with torch.no_grad():
        ours, _ = model(ids)
        theirs = hf(ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    greedy_ours = generate(model, ids, 12, temperature=0)
    greedy_hf = hf.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=256)
    assert greedy_hf.tolist() == greedy_ours.tolist()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "def f(x):\n\treturn 'é'"
    assert tok(text)["input_ids"] == ByteTokenizer().encode(text.encode()).tolist()
    assert tok.decode(tok(text)["input_ids"]) == text
    back, _ = load_model(out)  # lab-generate and lab-inspect read an export as a run
    torch.testing.assert_close(back(ids)[0], ours)


def test_plain_safetensors_export_round_trips(tmp_path):
    from safetensors.torch import load_file

    model, run = _run(tmp_path, positions="rope", norm="layernorm")  # no HF equivalent
    assert main([str(run), "--to", "safetensors", str(tmp_path / "st")]) == 0
    weights = load_file(str(tmp_path / "st" / "model.safetensors"))
    assert set(weights) == set(model.state_dict())
    back, _ = load_model(tmp_path / "st")
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(back(ids)[0], model(ids)[0])


def test_a_model_without_a_faithful_hf_architecture_is_refused_with_the_reason(tmp_path, capsys):
    _, run = _run(tmp_path, positions="rope", norm="layernorm")
    assert main([str(run), "--to", "hf", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "no faithful Hugging Face architecture" in err and "--to safetensors" in err
