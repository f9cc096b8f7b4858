"""The one-step verifier recomputes any single element exactly as the full op computes it."""

import numpy as np
import pytest

from veracity.exact import spec
from veracity.verify import onestep

from .cases import REF, act_rows, attention_case, linear_case, norm_case


def elements(rng, shape, n=40):
    """Random element indices, plus the first and the last."""
    idx = [tuple(int(rng.integers(s)) for s in shape) for _ in range(n)]
    return [tuple(0 for _ in shape), tuple(s - 1 for s in shape), *idx]


@pytest.mark.parametrize("smooth", [False, True])
def test_linear(fresh_rng, smooth):
    x, lin, y = linear_case(fresh_rng, smooth=smooth)
    for r, c in elements(fresh_rng, y.shape):
        got = onestep.linear(x[r].tolist(), lin.weight[c].tolist(), int(lin.mult[c]), int(lin.shift[c]),
                             int(lin.bias[c]), lin.out_max, None if lin.smooth is None else lin.smooth.tolist())
        assert got == y[r, c], (r, c)


def test_elementwise_and_tables(fresh_rng):
    a, b = act_rows(fresh_rng, 4, 50), act_rows(fresh_rng, 4, 50)[::-1]
    s, r = REF.add(a, b), REF.relu(a)
    for i, j in elements(fresh_rng, a.shape):
        assert onestep.add(int(a[i, j]), int(b[i, j])) == s[i, j]
        assert onestep.relu(int(a[i, j])) == r[i, j]
    x = fresh_rng.integers(-(1 << 15), 1 << 15, 200)
    x[:2] = [-(1 << 15), (1 << 15) - 1]
    table = spec.gelu_lut()
    g = REF.gelu(x)
    for v, want in zip(x.tolist(), g.tolist()):
        assert onestep.lut(v, v + (1 << 15), int(table[v + (1 << 15)])) == want
    with pytest.raises(onestep.OneStepError, match="needs"):
        onestep.lut(5, 5, int(table[5]))


@pytest.mark.parametrize("centre", [True, False])
def test_norms(fresh_rng, centre):
    x, qn = norm_case(fresh_rng)
    y = REF.layernorm(x, qn) if centre else REF.rmsnorm(x, qn)
    for r, c in elements(fresh_rng, y.shape):
        assert onestep.norm(x[r].tolist(), c, int(qn.gamma[c]), int(qn.beta[c]), centre) == y[r, c]


@pytest.mark.parametrize("causal", [False, True])
def test_attention(fresh_rng, causal):
    q, k, v, valid, z, p, psum, ctx = attention_case(fresh_rng, causal=causal)
    exp2 = spec.exp2_lut()
    for b, h, i, j in elements(fresh_rng, z.shape, 60):
        assert onestep.score(q[b, h, i].tolist(), k[b, h, j].tolist(), i, j, int(valid[b, j]), causal) == z[b, h, i, j]
        u = min(int(z[b, h, i].max() - z[b, h, i, j]), spec.EXP2_LUT_SIZE - 1)
        u = spec.EXP2_LUT_SIZE - 1 if z[b, h, i, j] == spec.MASKED_SCORE else u
        assert onestep.prob(z[b, h, i].tolist(), j, u, int(exp2[u])) == p[b, h, i, j]
        assert onestep.prob_sum(p[b, h, i].tolist()) == psum[b, h, i]
    for b, h, i, d in elements(fresh_rng, ctx.shape, 60):
        got = onestep.context(p[b, h, i].tolist(), int(psum[b, h, i]), v[b, h, :, d].tolist(), valid[b].tolist())
        assert got == ctx[b, h, i, d]


def test_pooling_embedding_and_l2(fresh_rng):
    h = act_rows(fresh_rng, 3 * 9, 40).reshape(3, 9, 40)
    mask = np.ones((3, 9), dtype=np.int64)
    mask[1, 5:] = 0
    mask[2] = 0  # no valid token at all
    pooled = REF.mean_pool(h, mask)
    for b, c in elements(fresh_rng, pooled.shape):
        assert onestep.mean_pool(h[b, :, c].tolist(), mask[b].tolist()) == pooled[b, c]
    x = act_rows(fresh_rng, 6, 40)
    y = REF.l2_normalize(x)
    for r, c in elements(fresh_rng, y.shape):
        assert onestep.l2_normalize(x[r].tolist(), c) == y[r, c]
    table = fresh_rng.integers(-1000, 1000, (30, 8))
    ids = fresh_rng.integers(0, 30, (2, 5))
    e = REF.embedding(table, ids)
    for b, t, c in elements(fresh_rng, e.shape):
        assert onestep.embedding(table[ids[b, t]].tolist(), int(ids[b, t]), int(ids[b, t]), c) == e[b, t, c]
    with pytest.raises(onestep.OneStepError, match="token needs"):
        onestep.embedding(table[0].tolist(), 0, 1, 0)
