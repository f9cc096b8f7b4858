"""The contract's one-step verifier agrees with the Python reference on random and edge elements
of every op, on a real anvil node; and its worst case (the longest linear row) fits the gas target."""

import numpy as np
import pytest

from veracity.exact import spec
from veracity.verify import onestep
from veracity.verify.rows import padded

from .cases import REF, act_rows, attention_case, deployed, linear_case, norm_case, picks

ONE_STEP_GAS = 3_000_000


@pytest.fixture(scope="module")
def referee():
    with deployed("OneStep") as functions:
        yield functions


@pytest.mark.parametrize("smooth", [False, True])
def test_linear(referee, fresh_rng, smooth):
    x, lin, y = linear_case(fresh_rng, k=200, n=8, smooth=smooth)
    sm = b"" if lin.smooth is None else padded(lin.smooth, 4)
    for r, c in picks(fresh_rng, y.shape, 6):
        got = referee.linear(padded(x[r], 4), 4, padded(lin.weight[c], 1), sm, x.shape[1], int(lin.mult[c]),
                             int(lin.shift[c]), int(lin.bias[c]), lin.out_max).call()
        want = onestep.linear(x[r].tolist(), lin.weight[c].tolist(), int(lin.mult[c]), int(lin.shift[c]),
                              int(lin.bias[c]), lin.out_max, None if lin.smooth is None else lin.smooth.tolist())
        assert got == want == y[r, c], (r, c)


def test_elementwise_and_tables(referee, fresh_rng):
    a = act_rows(fresh_rng, 4, 3).ravel()
    b = act_rows(fresh_rng, 4, 3).ravel()[::-1]
    for u, v in zip(a.tolist(), b.tolist()):
        assert referee.add(u, v).call() == onestep.add(u, v)
        assert referee.relu(u).call() == onestep.relu(u)
    table = spec.silu_lut()
    for x in [-(1 << 15), (1 << 15) - 1, 0, int(fresh_rng.integers(-(1 << 15), 1 << 15))]:
        assert referee.lut(x, x + (1 << 15), int(table[x + (1 << 15)])).call() == int(REF.silu(np.array(x)))
    with pytest.raises(Exception, match="wrong table entry"):
        referee.lut(3, 4, 0).call()


@pytest.mark.parametrize("centre", [True, False])
def test_norms(referee, fresh_rng, centre):
    x, qn = norm_case(fresh_rng, h=96)
    y = REF.layernorm(x, qn) if centre else REF.rmsnorm(x, qn)
    for r, c in picks(fresh_rng, y.shape, 6):
        got = referee.norm(padded(x[r], 4), 4, x.shape[1], c, int(qn.gamma[c]), int(qn.beta[c]), centre).call()
        assert got == onestep.norm(x[r].tolist(), c, int(qn.gamma[c]), int(qn.beta[c]), centre) == y[r, c]


@pytest.mark.parametrize("causal", [False, True])
def test_attention(referee, fresh_rng, causal):
    q, k, v, valid, z, p, psum, ctx = attention_case(fresh_rng, causal=causal)
    exp2 = spec.exp2_lut()
    for bb, h, i, j in picks(fresh_rng, z.shape, 6):
        got = referee.score(padded(q[bb, h, i], 4), padded(k[bb, h, j], 4), 4, q.shape[-1], i, j,
                            bool(valid[bb, j]), causal).call()
        assert got == onestep.score(q[bb, h, i].tolist(), k[bb, h, j].tolist(), i, j, int(valid[bb, j]), causal)
        assert got == z[bb, h, i, j]
        u = min(int(z[bb, h, i].max() - z[bb, h, i, j]), spec.EXP2_LUT_SIZE - 1)
        u = spec.EXP2_LUT_SIZE - 1 if z[bb, h, i, j] == spec.MASKED_SCORE else u
        assert referee.prob(padded(z[bb, h, i], 2), 2, z.shape[-1], j, u, int(exp2[u])).call() == p[bb, h, i, j]
        assert referee.prob_sum(padded(p[bb, h, i], 1, signed=False), 1, p.shape[-1]).call() == psum[bb, h, i]
    for bb, h, i, d in picks(fresh_rng, ctx.shape, 6):
        got = referee.context(padded(p[bb, h, i], 1, signed=False), 1, int(psum[bb, h, i]), padded(v[bb, h, :, d], 4),
                              4, padded(valid[bb], 1, signed=False), 1, v.shape[2]).call()
        want = onestep.context(p[bb, h, i].tolist(), int(psum[bb, h, i]), v[bb, h, :, d].tolist(), valid[bb].tolist())
        assert got == want == ctx[bb, h, i, d]


def test_pooling_embedding_and_l2(referee, fresh_rng):
    hh = act_rows(fresh_rng, 2 * 9, 12).reshape(2, 9, 12)
    mask = np.ones((2, 9), dtype=np.int64)
    mask[1, 4:] = 0
    pooled = REF.mean_pool(hh, mask)
    for bb, c in picks(fresh_rng, pooled.shape, 4):
        got = referee.mean_pool(padded(hh[bb, :, c], 4), 4, padded(mask[bb], 1, signed=False), 1, 9).call()
        assert got == onestep.mean_pool(hh[bb, :, c].tolist(), mask[bb].tolist()) == pooled[bb, c]
    x = act_rows(fresh_rng, 5, 48)
    y = REF.l2_normalize(x)
    for r, c in picks(fresh_rng, y.shape, 4):
        assert referee.l2_normalize(padded(x[r], 4), 4, 48, c).call() == onestep.l2_normalize(x[r].tolist(), c) == y[r, c]
    table = fresh_rng.integers(-(2**23), 2**23, (5, 8))
    assert referee.embedding(padded(table[3], 4), 4, 3, 3, 7).call() == onestep.embedding(table[3].tolist(), 3, 3, 7)
    with pytest.raises(Exception, match="not the token's"):
        referee.embedding(padded(table[3], 4), 4, 3, 2, 0).call()


def test_the_longest_linear_row_fits_the_gas_target(referee, fresh_rng):
    x, lin, y = linear_case(fresh_rng, k=1536, n=4, smooth=True)  # MiniLM's FFN down-projection width
    r, c = 5, 1
    call = referee.linear(padded(x[r], 4), 4, padded(lin.weight[c], 1), padded(lin.smooth, 4), 1536,
                          int(lin.mult[c]), int(lin.shift[c]), int(lin.bias[c]), lin.out_max)
    assert call.call() == y[r, c]
    gas = call.estimate_gas()
    print(f"one-step gas, linear K=1536 smoothed: {gas}")
    assert gas < ONE_STEP_GAS
