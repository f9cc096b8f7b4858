"""The torch backend equals the int64 NumPy reference bit for bit, op by op, edge values included."""

import numpy as np
import pytest

from veracity.exact import ops_native, spec
from veracity.exact.execute import make_backend
from veracity.exact.ops_torch import TorchBackend

NP = make_backend("numpy")
FAST = [TorchBackend("cpu")]
if ops_native.available():
    FAST.append(ops_native.NativeBackend())


def test_native_kernels_build_here():
    """CI machines have a C compiler; the fast path must not silently fall back."""
    assert ops_native.available()
    assert type(make_backend("torch")).__name__ == "NativeBackend"


def same(op, *args):
    """Run op on the reference and on every fast backend; all outputs must be equal."""
    ref = getattr(NP, op)(*[NP.tensor(a) if isinstance(a, np.ndarray) else a for a in args])
    refs = ref if isinstance(ref, tuple) else (ref,)
    for be in FAST:
        fast = getattr(be, op)(*[be.tensor(a) if isinstance(a, np.ndarray) else a for a in args])
        fasts = fast if isinstance(fast, tuple) else (fast,)
        assert len(fasts) == len(refs)
        for r, f in zip(refs, fasts):
            f = be.canonical(f, np.int64)
            np.testing.assert_array_equal(np.asarray(r, dtype=np.int64), f, err_msg=f"{op} on {type(be).__name__}")
    return refs


def activations(rng, shape, bits):
    """Random activations mixing tiny, typical and extreme magnitudes, zero rows and +-max."""
    x = rng.integers(-(1 << bits), 1 << bits, size=shape)
    x[..., 0, :] = 0
    flat = x.reshape(-1, shape[-1])
    flat[1 % len(flat), :2] = [spec.ACT_MAX, -spec.ACT_MAX] if bits >= 23 else [1 << bits, -(1 << bits)]
    flat[-1] = rng.integers(-3, 4, size=shape[-1])
    return np.clip(x, -spec.ACT_MAX, spec.ACT_MAX)


@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("bits", [3, 12, 17, 23])
@pytest.mark.parametrize("k", [64, 1040, 1536])
def test_linear_matches_reference(bits, k, smooth):
    rng = np.random.default_rng(bits * 7 + k)
    w = rng.normal(size=(48, k)) * rng.uniform(0.01, 2, size=(48, 1))
    w[0] = 0
    w[1] *= 1e-30  # a vanishing channel: its requantization shift would overflow int64
    x = activations(rng, (2, 5, k), bits)
    x[..., : k // 8] *= 2 ** min(6, 23 - bits) if smooth else 1  # outlier channels
    x = np.clip(x, -spec.ACT_MAX, spec.ACT_MAX)
    w *= 8 / (np.sqrt(k) * 2.0 ** max(0, min(23, bits + (6 if smooth else 0)) - 12))  # no saturation
    act_max = np.abs(x).reshape(-1, k).max(axis=0) / 4096.0 if smooth else None
    lin = spec.quantize_linear(w, rng.normal(size=48), frac_in=12, frac_out=12, act_max=act_max)
    (y,) = same("linear", x, lin)
    assert y.shape == (2, 5, 48)
    real = (x / 4096.0) @ w.T + lin.bias / 4096.0
    if bits >= 12:  # close to the float product (int8 error, a few percent of the max)
        assert np.abs(y / 4096.0 - real).max() < 0.05 * np.abs(real).max() + 1e-3


def test_quantize_rows_stays_in_int8():
    rng = np.random.default_rng(0)
    x = activations(rng, (64, 33), 23)
    q, ams, e = same("quantize_rows", x)
    assert q.max() <= 127 and q.min() >= -127
    assert (np.abs(q).max(axis=-1)[ams[:, 0] > 0] >= 126).all()


@pytest.mark.parametrize("bits", [0, 10, 16, 23])
def test_layernorm_matches_reference(bits):
    rng = np.random.default_rng(bits)
    norm = spec.quantize_norm(rng.normal(size=96) * 2, rng.normal(size=96))
    x = activations(rng, (7, 96), bits)
    (y,) = same("layernorm", x, norm)
    if bits == 16:
        xf = x[1:-1] / 4096.0
        ref = (xf - xf.mean(-1, keepdims=True)) / xf.std(-1, keepdims=True) * (norm.gamma / 65536.0) + norm.beta / 4096.0
        assert np.abs(y[1:-1] / 4096.0 - ref).max() < 0.01 * np.abs(ref).max()


@pytest.mark.parametrize("bits", [0, 10, 16, 23])
def test_rmsnorm_matches_reference(bits):
    rng = np.random.default_rng(bits + 100)
    norm = spec.quantize_norm(rng.normal(size=64) * 2, np.zeros(64))
    x = activations(rng, (7, 64), bits)
    (y,) = same("rmsnorm", x, norm)
    if bits == 16:
        xf = x[1:-1] / 4096.0
        ref = xf / np.sqrt((xf * xf).mean(-1, keepdims=True)) * (norm.gamma / 65536.0)
        assert np.abs(y[1:-1] / 4096.0 - ref).max() < 0.01 * np.abs(ref).max()


def test_lookup_tables_match_the_functions():
    from math import erf, exp, sqrt

    xs = np.arange(-(1 << 15), 1 << 15) / 256.0
    gelu = np.array([x * (1 + erf(x / sqrt(2))) / 2 for x in xs])
    silu = np.array([x / (1 + exp(-x)) if x > -700 else 0.0 for x in xs])
    assert np.abs(spec.gelu_lut() / 256.0 - gelu).max() <= 0.5 / 256 + 1e-9
    assert np.abs(spec.silu_lut() / 256.0 - silu).max() <= 0.5 / 256 + 1e-9
    u = np.arange(spec.EXP2_LUT_SIZE)
    assert np.abs(spec.exp2_lut() - 255 * 2.0 ** (-u / 64)).max() <= 0.5 + 1e-9


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bits", [8, 14, 23])
def test_attention_matches_reference(causal, bits):
    rng = np.random.default_rng(bits + causal)
    b, h, t, d = 2, 3, 9, 16
    q, k, v = (activations(rng, (b, h, t, d), bits) for _ in range(3))
    valid = np.ones((b, t), dtype=np.int64)
    valid[1, 6:] = 0
    (z,) = same("attention_scores", q, k, valid, causal)
    assert (z[1, :, :, 6:] == spec.MASKED_SCORE).all()
    same("scores_softmax", q, k, valid, causal)
    p, s = same("softmax", z)
    assert (p[1, :, :, 6:] == 0).all() and (p.max(axis=-1) == 255).all()
    same("attention_context", p, s, v, valid)


def test_elementwise_ops_match_reference():
    rng = np.random.default_rng(5)
    x = rng.integers(-(1 << 15) + 1, 1 << 15, size=(4, 300))
    x[0, :5] = [-(1 << 15) + 1, (1 << 15) - 1, 0, -1, 1]
    (g,) = same("gelu", x)
    assert g[0, 1] == (1 << 15) - 1 and g[0, 0] == 0 and g[0, 2] == 0
    (s,) = same("silu", x)
    assert s[0, 1] == (1 << 15) - 1 and s[0, 0] == 0 and s[0, 2] == 0
    a = activations(rng, (3, 40), 23)
    same("add", a, activations(rng, (3, 40), 23))
    same("relu", a)
    mask = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    same("mean_pool", a.reshape(3, 40, 1)[:, :3, :].repeat(5, axis=2), mask)
    same("l2_normalize", a)
