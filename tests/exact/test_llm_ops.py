"""The Llama family's ops (``exact.llm``): every backend equals the int64 reference bit for bit, one
op of each kind, on random and edge values (the wide residual stream's extremes, masked keys, ties)."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import quantize

from veracity.exact import llm, ops_native, spec
from veracity.exact.execute import make_backend
from veracity.exact.llm import BlockWeights
from veracity.exact.ops_torch import TorchBackend
from veracity.models.gguf import decode_tensor

NP = make_backend("numpy")
FAST = [TorchBackend("cpu")] + ([ops_native.NativeBackend()] if ops_native.available() else [])


def same(op, *args):
    """``op`` on the reference and on every other backend (integer inputs as index tensors: int64)."""
    ref = np.asarray(getattr(NP, op)(*[NP.index(a) if isinstance(a, np.ndarray) else a for a in args]))
    for be in FAST:
        got = be.canonical(getattr(be, op)(*[be.index(a) if isinstance(a, np.ndarray) else a for a in args]), np.int64)
        np.testing.assert_array_equal(ref, got, err_msg=f"{op} on {type(be).__name__}")
    return ref


def weights(kind, rng, n=80, k=128):
    w = rng.normal(scale=0.05, size=(n, k)).astype(np.float32)
    t = decode_tensor("w", kind, (n, k), quantize(w, GGMLQuantizationType[kind]))
    return BlockWeights(t.q, t.d, t.m, kind), t.dequantized()


def wide(rng, shape):
    """Residual-stream values: typical ones, a massive channel at +-WIDE_MAX, a zero row."""
    x = rng.integers(-(1 << 16), 1 << 16, size=shape)
    x[..., 0, 3] = llm.WIDE_MAX
    x[..., -1, 5] = -llm.WIDE_MAX
    if shape[-2] > 2:
        x[..., 1, :] = 0
    return x


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
def test_block_linear_and_the_embedding(kind, fresh_rng):
    w, dense = weights(kind, fresh_rng)
    x = wide(fresh_rng, (1, 5, 128))
    y = same("block_linear", x, w, spec.ACT_FRAC, llm.WIDE_MAX)
    assert y.shape == (1, 5, 80)
    small = fresh_rng.integers(-(1 << 14), 1 << 14, size=(1, 4, 128))
    y = same("block_linear", small, w, spec.GELU_FRAC, spec.I16_MAX)
    ref = small[0] @ dense.T.astype(np.float64) / (1 << (spec.ACT_FRAC - spec.GELU_FRAC))
    assert np.abs(y[0] - np.clip(ref, -spec.I16_MAX, spec.I16_MAX)).max() <= 1 + 1e-3 * np.abs(ref).max()
    if kind == "Q8_0":
        e = same("qembed", w, np.array([[0, 79, 5, 5]]))
        np.testing.assert_allclose(e[0] / (1 << spec.ACT_FRAC), dense[[0, 79, 5, 5]], atol=2.0 ** -12)


def test_a_row_wider_than_a_chunk_is_laid_out_in_rows_and_padded_below_every_logit(fresh_rng):
    w, _ = weights("Q8_0", fresh_rng, n=llm.LOGIT_ROW + 64, k=64)
    y = same("block_linear", fresh_rng.integers(-4096, 4096, size=(1, 1, 64)), w, spec.ACT_FRAC, spec.ACT_MAX)
    assert y.shape == (1, 2, llm.LOGIT_ROW)
    assert np.all(y[0, 1, 64:] == -(spec.ACT_MAX + 1)) and y[0, 1, :64].min() >= -spec.ACT_MAX


def test_rmsnorm_of_the_wide_stream(fresh_rng):
    x = wide(fresh_rng, (1, 6, 96))
    gain = fresh_rng.integers(1 << 14, 1 << 18, size=96)
    out = same("wrmsnorm", x, gain)
    assert np.abs(out).max() <= spec.ACT_MAX
    assert np.all(out[0, 1] == 0)  # a zero row stays zero (no division by zero)


def test_rope_and_its_tables(fresh_rng):
    cos, sin = llm.rope_table(64, 100000.0)
    angles = np.arange(llm.CONTEXT)[:, None] * 100000.0 ** (-np.arange(0, 64, 2) / 64)
    assert np.abs(cos / (1 << llm.ROPE_FRAC) - np.cos(angles)).max() <= 0.5 / (1 << llm.ROPE_FRAC) + 1e-9
    assert np.abs(sin / (1 << llm.ROPE_FRAC) - np.sin(angles)).max() <= 0.5 / (1 << llm.ROPE_FRAC) + 1e-9
    x = fresh_rng.integers(-spec.ACT_MAX, spec.ACT_MAX, size=(1, 5, 3 * 64))
    y = same("rope", x, 100, 64, (cos, sin))
    pairs = lambda v: np.hypot(v[..., 0::2], v[..., 1::2])  # noqa: E731  (a rotation keeps lengths)
    assert np.all(np.abs(pairs(y) - pairs(x)) <= pairs(x) * 2.0 ** -14 + 2)
    assert np.array_equal(same("rope", x[:, :1], 0, 64, (cos, sin)), x[:, :1])  # position 0: cos 1, sin 0


def test_grouped_query_attention(fresh_rng):
    heads, kv_heads, dim, t, s = 6, 2, 16, 3, 7
    q = fresh_rng.integers(-(1 << 16), 1 << 16, size=(1, t, heads * dim))
    k = fresh_rng.integers(-(1 << 16), 1 << 16, size=(1, s, kv_heads * dim))
    q[0, 0, :dim] = spec.ACT_MAX  # extreme scores
    k[0, 0, :dim] = -spec.ACT_MAX
    z = same("gqa_scores", q, k, heads, kv_heads)
    assert z.shape == (heads, t, s)
    assert np.array_equal(z == llm.MASKED, ~llm.causal(t, s)[None].repeat(heads, 0))  # the last T keys are new
    p = same("gqa_probs", z)
    assert np.all(p[z == llm.MASKED] == 0) and np.all(p.max(axis=-1) == llm.P_MAX)
    vt = fresh_rng.integers(-spec.ACT_MAX, spec.ACT_MAX, size=(1, kv_heads * dim, s))
    ctx = same("gqa_context", p, vt, heads, kv_heads)
    assert ctx.shape == (1, t, heads * dim)
    # heads 0..2 share KV head 0: each context is a weighted mean of that head's values
    v0 = vt[0, :dim]
    assert np.all(ctx[0, :, :dim] <= v0.max(axis=-1)) and np.all(ctx[0, :, :dim] >= v0.min(axis=-1))


def test_residual_add_gate_and_the_pick(fresh_rng):
    a, b = wide(fresh_rng, (1, 3, 64)), wide(fresh_rng, (1, 3, 64))
    assert np.abs(same("resid_add", a, b)).max() <= llm.WIDE_MAX
    g = fresh_rng.integers(-spec.I16_MAX, spec.I16_MAX, size=(1, 3, 64))
    u = fresh_rng.integers(-spec.ACT_MAX, spec.ACT_MAX, size=(1, 3, 64))
    same("silu_gate", g, u)
    logits = fresh_rng.integers(-1000, 1000, size=(1, 3, 64))
    logits[0, 2, 7] = logits[0, 0, 9] = 5000  # a tie across rows: the lower id wins
    m = same("row_max", logits)
    assert m[0, :2].tolist() == [5000, 9] and m[0, 4:].tolist() == [5000, 2 * 64 + 7]
    assert same("pick", m, None, ()).tolist() == [[9]]
    assert same("pick", m, np.array([[5]]), (2, 0)).tolist() == [[9]]
    assert same("pick", m, np.array([[0]]), (2, 0)).tolist() == [[0]]  # after a stop token: the stop again


def test_a_growing_kv_cache_keeps_every_records_rows(fresh_rng):
    """The native backend grows the cache in place: each record still holds exactly its rows."""
    rows = [fresh_rng.integers(-(1 << 20), 1 << 20, size=(1, t, 12)) for t in (5, 1, 1, 3, 1)]
    for be in FAST:
        caches = [be.index(rows[0])]
        for new in rows[1:]:
            caches.append(be.kv_append(caches[-1], be.index(new)))
        for i, c in enumerate(caches):
            np.testing.assert_array_equal(be.canonical(c, np.int64), np.concatenate(rows[:i + 1], axis=1))


@pytest.mark.skipif(not ops_native.available(), reason="no C compiler")
def test_native_digests_of_growing_caches_are_their_tensor_digests(fresh_rng, monkeypatch):
    """A step's caches hashed together in C, each going on from the one it grew from, with the odd
    ones out (not int64 in C order) by hashlib, are ``tensor_digest``'s; so is every digest where
    the CPU lacks the SHA extensions, whichever growths the steps before left."""
    from veracity.exact.trace import tensor_digest

    be = ops_native.NativeBackend()
    caches = fresh_rng.integers(-(1 << 40), 1 << 40, size=(4, 1, 90, 192))
    dtypes = [np.dtype(np.int32)] * 3 + [np.dtype(np.int16)]
    for without_sha in (False, True):
        if without_sha:
            monkeypatch.setattr(ops_native, "grown_digests", lambda *args: None)
        grown: list = [None] * 4
        for rows in (37, 38, 39, 40, 41, 60, 61, 90):
            arrays = [c[:, :rows] for c in caches]
            arrays[2] = np.asfortranarray(arrays[2])
            arrays[3] = arrays[3].astype(np.int32)
            got = be.grown_digests(arrays, dtypes, grown)
            assert [d for d, _ in got] == [tensor_digest(a.astype(dt)) for a, dt in zip(arrays, dtypes)]
            grown = [g for _, g in got]
