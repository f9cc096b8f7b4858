"""Float weights come in from a torch state dict or a safetensors file, for all three models."""

import numpy as np
import pytest
import torch

from veracity.errors import ModelError
from veracity.exact.execute import Exec, make_backend
from veracity.models import gpt as gptmod
from veracity.models import mlp
from veracity.models.encoder import ExactEncoder, minilm_dir
from veracity.models.weights import from_torch, load_safetensors, save_safetensors
from veracity.workloads.infer import infer


def test_mlp_state_dict_and_safetensors_give_the_same_model(tmp_path):
    model, _ = mlp.train_float(seed=2, epochs=3)
    path = tmp_path / "mlp.safetensors"
    save_safetensors(model.state_dict(), path)
    a = mlp.ExactMLP.from_state_dict(from_torch(model.state_dict()))
    b = mlp.load(path)
    items = [np.arange(64) % 17, np.full(64, 16)]
    assert infer(a, items).trace_root == infer(b, items).trace_root


def test_minilm_from_torch_state_dict_equals_safetensors(minilm):
    from veracity.models.encoder import CALIBRATION, float_bert

    state = from_torch(float_bert().state_dict())
    again = ExactEncoder.from_state_dict(state, minilm.cfg, minilm.tokenizer, load_safetensors(CALIBRATION))
    items = [minilm.parse({"text": "Weights from a state dict or a file are the same model."})]
    assert infer(again, items).trace_root == infer(minilm, items).trace_root


def test_tiny_gpt_trained_here_imports_and_follows_float(tmp_path):
    """Train a small GPT in float (seconds), import it, and generate like the float model does."""
    text = gptmod.corpus()
    cfg = gptmod.GPTConfig(vocab="".join(sorted(set(text))), block=64, layers=1, heads=2, embd=64)
    model = gptmod.train_float(text, cfg, steps=250, ctx=32)
    path = tmp_path / "gpt.safetensors"
    gptmod.save(model, path)
    from_file = gptmod.ExactGPT.load(path)
    from_dict = gptmod.ExactGPT.from_state_dict(from_torch(model.state_dict()), cfg)
    prompt = "the provider "
    item = from_file.parse({"text": prompt, "max_tokens": 12})
    out_file = infer(from_file, [item])
    assert out_file.trace_root == infer(from_dict, [item]).trace_root
    # next-token agreement with float on corpus windows (quantization may flip a rare near-tie)
    agree = 0
    ex = Exec(make_backend("torch"))
    for lo in range(0, 1200, 60):
        ids = [cfg.vocab.index(c) for c in text[lo:lo + 40]]
        with torch.no_grad():
            f = int(model(torch.tensor([ids]))[0, -1].argmax())
        agree += int(np.argmax(from_file.logits(ex, ids))) == f
    assert agree >= 18, f"exact and float agreed on {agree}/20 next tokens"


def test_wrong_weights_are_refused_with_a_clear_message():
    model, _ = mlp.train_float(seed=0, epochs=1)
    state = from_torch(model.state_dict())
    del state["2.weight"]
    with pytest.raises(ModelError, match="'2.weight' missing"):
        mlp.ExactMLP.from_state_dict(state)
    state = from_torch(model.state_dict())
    state["0.weight"] = state["0.weight"][:, :10]
    with pytest.raises(ModelError, match="shape"):
        mlp.ExactMLP.from_state_dict(state)
    with pytest.raises(ModelError, match="not found"):
        load_safetensors("/nonexistent/weights.safetensors")


def test_minilm_weights_come_from_the_package():
    assert (minilm_dir() / "model.safetensors").is_file()
