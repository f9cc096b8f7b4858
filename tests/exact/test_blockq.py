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
    from veracity.exact import ops_native

    assert np.array_equal(got, ops_native.block_linear(x, t.q, t.d, t.m, 12, 12, (1 << 23) - 1))
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


# the native kernel (``native.c: bq_linear``) -------------------------------------------------------
def _native():
    from veracity.exact import ops_native

    if ops_native.library() is None:
        pytest.skip("no C compiler: the native kernels are unavailable")
    return ops_native


def _edge_rows(rng, t, k):
    """Random rows, then the cases the quantization must get right: a zero row, a zero block, a
    row of one huge value (2**31 - 1) among small ones, negative extremes, and tiny values."""
    x = np.round(rng.normal(scale=1.5, size=(t, k)) * (1 << 12)).astype(np.int64)
    x[0] = 0
    if t > 1:
        x[1, 3] = (1 << 31) - 1
        x[1, 40:72] = 0
    if t > 2:
        x[2] = -np.abs(x[2])
        x[2, ::7] = -(1 << 31) + 1
    if t > 3:
        x[3] = rng.integers(-3, 4, size=k)
    return x


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("k", [256, 1536])
def test_native_gives_the_numpy_integers_on_any_thread_count(kind, k, fresh_rng):
    import torch

    ops_native = _native()
    t, _ = _weights(kind, fresh_rng, n=83, k=k)  # 83: a partial group of 16 output rows
    packed = ops_native.pack_blocks(t.q, t.d, t.m)
    assert packed is not None
    before = torch.get_num_threads()
    try:
        for rows in (1, 2, 5, 37):
            x = _edge_rows(fresh_rng, rows, k)
            for frac_out, out_max in ((12, (1 << 23) - 1), (20, 1 << 40), (0, 1000)):
                want = blockq.block_linear(x, t.q, t.d, t.m, 12, frac_out, out_max)
                for nt in (1, 2):
                    torch.set_num_threads(nt)
                    got = ops_native.block_linear(x, t.q, t.d, t.m, 12, frac_out, out_max, packed)
                    assert np.array_equal(got, want), (rows, frac_out, nt)
                    assert np.array_equal(ops_native.block_linear_native(packed, x, 12, frac_out, out_max, nt=nt),
                                          want)
    finally:
        torch.set_num_threads(before)


def test_native_extreme_scales_and_quants(fresh_rng):
    """Quants at their type's ends (8-bit -128..127, so the dot is scaled by a only where it fits)
    and scales at the edge of int32, against the reference; inputs outside the kernel's range
    (|x| >= 2**36, a shift of more than 63 bits) fall back to NumPy, with the same integers."""
    ops_native = _native()
    n, k = 40, 96
    cases = [  # q, d, m
        (fresh_rng.integers(-128, 128, (n, k)), fresh_rng.integers(-(1 << 24), 1 << 24, (n, k // 32)), None),
        (fresh_rng.integers(-20, 21, (n, k)), fresh_rng.integers(-(1 << 31) + 1, 1 << 31, (n, k // 32)), None),
        (fresh_rng.integers(0, 16, (n, k)), fresh_rng.integers(-(1 << 31) + 1, 1 << 31, (n, k // 32)),
         fresh_rng.integers(-(1 << 31) + 1, 1 << 31, (n, k // 32))),
        (fresh_rng.integers(-8, 8, (n, k)), fresh_rng.integers(-(1 << 27), 1 << 27, (n, k // 32)), None),
    ]
    for q, d, m in cases:
        q = q.astype(np.int8)
        assert ops_native.pack_blocks(q, d, m) is not None
        for x in (_edge_rows(fresh_rng, 6, k), fresh_rng.integers(-(1 << 35), 1 << 35, (3, k)),
                  np.full((2, k), 1 << 40)):
            for frac_out in (12, -10, -20, 60):
                want = blockq.block_linear(x, q, d, m, 12, frac_out, 1 << 62)
                got = ops_native.block_linear(x, q, d, m, 12, frac_out, 1 << 62)
                assert np.array_equal(got, want)
    big = fresh_rng.integers(-128, 128, (n, k)).astype(np.int8)
    assert ops_native.pack_blocks(big, np.full((n, k // 32), 1 << 26), None) is None  # dot (a d) would pass int32
    x = _edge_rows(fresh_rng, 3, k)
    assert np.array_equal(ops_native.block_linear(x, big, np.full((n, k // 32), 1 << 26), None, 12, 12, 1 << 23),
                          blockq.block_linear(x, big, np.full((n, k // 32), 1 << 26), None, 12, 12, 1 << 23))
