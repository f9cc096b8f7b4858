"""The block-quantized linear (``exact.blockq``): GGUF weights as stored, activations per block of
32, integers throughout; the same on both backends and close to the float product."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import quantize

from veracity.exact import blockq
from veracity.models.gguf import decode_tensor


def _weights(kind, rng, n=96, k=256):
    w = rng.normal(scale=0.04, size=(n, k)).astype(np.float32)
    t = decode_tensor("w", kind, (n, k), quantize(w, GGMLQuantizationType[kind]))
    return t, t.dequantized()


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
def test_both_backends_give_the_same_integers_close_to_the_float_product(kind, fresh_rng):
    t, w = _weights(kind, fresh_rng)
    x = np.round(fresh_rng.normal(scale=1.5, size=(7, 256)) * (1 << 12)).astype(np.int64)
    blockq.check_range(t.q, t.d, t.m)
    got = blockq.block_linear(x, t.q, t.d, t.m, 12, 12)
    assert np.array_equal(got, blockq.block_linear(x, t.q, t.d, t.m, 12, 12, backend="torch"))
    ref = blockq.linear_reference(x, w, 12, 12)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.01  # int8 activations, exact weights


def test_an_outlier_channel_coarsens_only_its_own_block(fresh_rng):
    """Why activations are quantized per block of 32 (as llama.cpp does) and not per row: with one
    channel 200x the others, the row's other blocks keep their resolution."""
    t, w = _weights("Q4_1", fresh_rng)
    x = np.round(fresh_rng.normal(scale=1.0, size=(16, 256)) * (1 << 12)).astype(np.int64)
    x[:, 5] *= 200
    ref = blockq.linear_reference(x, w, 12, 12)
    by_block = np.linalg.norm(blockq.block_linear(x, t.q, t.d, t.m, 12, 12) - ref)
    row_max = np.abs(x).max(axis=1, keepdims=True)  # one scale per row instead
    per_row = np.round(x * 127 / row_max) * row_max / 127
    by_row = np.linalg.norm(blockq.linear_reference(per_row, w, 12, 12) - ref)
    assert by_block < by_row / 2


def test_the_shipped_models_matrices_fit_the_exact_range():
    from veracity.models.gguf import read_gguf, smollm2_path

    f = read_gguf(smollm2_path())
    for name, t in f.tensors.items():
        if t.kind != "F32":
            blockq.check_range(t.q, t.d, t.m)
    big = f.tensors["blk.0.attn_q.weight"]
    with pytest.raises(ValueError, match="outside the exact int64 range"):
        blockq.check_range(big.q, big.d << 20, big.m)
