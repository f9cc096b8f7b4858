"""Random op inputs with edge rows, run through the int64 reference (shared by the Python and the
contract one-step tests)."""

from contextlib import contextmanager

import numpy as np

from veracity.exact import spec
from veracity.exact.ops_numpy import NumpyBackend

REF = NumpyBackend()


@contextmanager
def deployed(name):
    """A contract deployed on a fresh anvil node: its functions, while the node runs."""
    from veracity.chain.anvil import Anvil
    from veracity.chain.client import Chain
    from veracity.chain.devnet import dev_accounts

    node = Anvil(accounts=1)
    try:
        chain = Chain(node.rpc_url, dev_accounts(1)[0].key)
        yield chain.contract(name, chain.deploy(name)).functions
    finally:
        node.stop()


def picks(rng, shape, n):
    """Index tuples of ``shape`` to check: the first, the last and ``n`` random ones."""
    return [tuple(0 for _ in shape), tuple(s - 1 for s in shape),
            *[tuple(int(rng.integers(s)) for s in shape) for _ in range(n)]]


def act_rows(rng, n, k, limit=spec.ACT_MAX):
    """n activation rows of length k: random magnitudes, plus zero, saturated and one-hot rows."""
    x = rng.integers(-limit, limit + 1, (n, k)) >> rng.integers(0, 22, (n, 1))
    x[0] = 0
    x[1] = limit
    x[2] = -limit
    x[3] = 0
    x[3, rng.integers(k)] = -limit
    return x


def linear_case(rng, k=96, n=24, smooth=False):
    w = rng.normal(0, 0.05, (n, k))
    w[0] = 0  # a vanishing channel
    act_max = rng.uniform(0.1, 30, k) if smooth else None
    lin = spec.quantize_linear(w, rng.normal(0, 0.5, n), spec.ACT_FRAC, spec.ACT_FRAC, act_max=act_max)
    x = act_rows(rng, 8, k)
    return x, lin, REF.linear(x, lin)


def norm_case(rng, h=64):
    qn = spec.quantize_norm(rng.normal(1, 0.2, h), rng.normal(0, 0.2, h))
    x = act_rows(rng, 8, h)
    x[4] = 12345  # a constant row: zero variance
    return x, qn


def attention_case(rng, b=2, heads=2, t=7, dh=16, causal=False):
    q = act_rows(rng, b * heads * t, dh).reshape(b, heads, t, dh)
    k = act_rows(rng, b * heads * t, dh).reshape(b, heads, t, dh)
    v = act_rows(rng, b * heads * t, dh).reshape(b, heads, t, dh)
    valid = np.ones((b, t), dtype=np.int64)
    valid[1, -2:] = 0  # padded keys
    z = REF.attention_scores(q, k, valid, causal)
    p, psum = REF.softmax(z)
    ctx = REF.attention_context(p, psum, v, valid)
    return q, k, v, valid, z, p, psum, ctx
