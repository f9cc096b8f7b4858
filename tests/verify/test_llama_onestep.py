"""The Llama family's one-step referee (``contracts/LlamaOneStep.vy``) agrees with its Python mirror
(``verify.onestep_llm``) and with the int64 NumPy reference (``exact.llm``, ``exact.blockq``) on
random and edge elements of every op, on a real anvil node: the wide stream's extremes, zero rows
and blocks, masked keys, ties; and the longest rows SmolLM2 needs fit the gas target."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import quantize

from veracity.exact import blockq, llm, spec
from veracity.models.gguf import decode_tensor
from veracity.verify import onestep_llm as ref
from veracity.verify.onestep import OneStepError
from veracity.verify.rows import padded

from .cases import deployed, picks

ONE_STEP_GAS = 3_000_000
WIDE = llm.WIDE_MAX


@pytest.fixture(scope="module")
def referee():
    with deployed("LlamaOneStep") as functions:
        yield functions


def weights(kind, rng, n, k):
    w = rng.normal(scale=0.05, size=(n, k)).astype(np.float32)
    t = decode_tensor("w", kind, (n, k), quantize(w, GGMLQuantizationType[kind]))
    return t.q.astype(np.int64), t.d.astype(np.int64), None if t.m is None else t.m.astype(np.int64)


def wide_rows(rng, t, k):
    """Residual-stream rows: a zero row, a massive channel (+-WIDE_MAX) beside a zero block, a row
    of negative extremes, tiny values, and typical ones."""
    x = rng.integers(-(1 << 16), 1 << 16, size=(t, k)) >> rng.integers(0, 12, size=(t, 1))
    x[0] = 0
    x[1, 3] = WIDE
    x[1, 40:72] = 0
    x[2] = -np.abs(x[2])
    x[2, ::7] = -WIDE
    x[3] = rng.integers(-3, 4, size=k)
    x[4, -1] = -WIDE
    x[4, 5] = WIDE
    if t > 5:  # every block's max 2**30 (e = 25, a = 32): +-2**29 = +-a 2**(e - 1) code +-QX / 2, a tie
        x[5] = rng.integers(-(1 << 29), 1 << 29, size=k)
        x[5, ::32] = 1 << 30
        x[5, 1::32] = 1 << 29
        x[5, 2::32] = -(1 << 29)
    return x


def linear_call(referee, x, q, d, m, frac_out, out_max):
    k = len(x)
    empty = padded([0], 4)
    return referee.block_linear(padded(x, 4), 4, padded(q, 1), padded(d, 4), empty if m is None else padded(m, 4),
                                m is not None, k, frac_out, out_max)


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
def test_block_linear(referee, fresh_rng, kind):
    q, d, m = weights(kind, fresh_rng, n=6, k=256)
    x = wide_rows(fresh_rng, 7, 256)
    for frac_out, out_max in [(spec.ACT_FRAC, WIDE), (spec.GELU_FRAC, spec.I16_MAX), (spec.ACT_FRAC, spec.ACT_MAX)]:
        y = blockq.block_linear(x, q, d, m, spec.ACT_FRAC, frac_out, out_max)
        for t, n in picks(fresh_rng, y.shape, 3) + [(1, 2), (2, 3), (3, 4), (4, 5), (5, 1)]:
            mn = None if m is None else m[n].tolist()
            got = linear_call(referee, x[t].tolist(), q[n].tolist(), d[n].tolist(), mn, frac_out, out_max).call()
            want = ref.block_linear(x[t].tolist(), q[n].tolist(), d[n].tolist(), mn, frac_out, out_max)
            assert got == want == y[t, n], (kind, frac_out, t, n)
    # rows of 1, 2 and 8 bytes per element read the same
    for width, limit in [(1, 127), (2, 1 << 15), (8, 1 << 40)]:
        xs = fresh_rng.integers(-limit, limit, size=(2, 256))
        xs[1, 9] = -limit
        y = blockq.block_linear(xs, q, d, m, spec.ACT_FRAC, spec.ACT_FRAC, WIDE)
        mm = padded([0], 4) if m is None else padded(m[1], 4)
        got = referee.block_linear(padded(xs[1], width), width, padded(q[1], 1), padded(d[1], 4), mm, m is not None,
                                   256, spec.ACT_FRAC, WIDE).call()
        assert got == y[1, 1], width


def test_block_linear_refuses_a_partial_block(referee):
    with pytest.raises(Exception, match="whole blocks"):
        referee.block_linear(padded([1] * 40, 4), 4, padded([1] * 40, 1), padded([1, 1], 4), b"", False, 40,
                             12, 100).call()
    with pytest.raises(OneStepError):
        ref.block_linear([1] * 40, [1] * 40, [1, 1], None, 12, 100)


def test_qembed_rope_resid_add_and_silu_gate(referee, fresh_rng):
    q, d, _ = weights("Q8_0", fresh_rng, n=10, k=64)
    q[4, 1], q[4, 2], d[4, 0] = 1, -1, 1 << 11  # +-0.5: ties round up
    ids = np.array([[0, 9, 4, 4]])
    emb = llm.qembed(q, d, ids)
    for t, j in picks(fresh_rng, emb.shape[1:], 4) + [(2, 1), (3, 2)]:
        qq, dd = int(q[ids[0, t], j]), int(d[ids[0, t], j // 32])
        assert referee.qembed(qq, dd).call() == ref.qembed(qq, dd) == emb[0, t, j]

    x = fresh_rng.integers(-spec.ACT_MAX, spec.ACT_MAX + 1, size=(1, 5, 16))
    x[0, 0, :2] = [spec.ACT_MAX, -spec.ACT_MAX]
    cos = fresh_rng.integers(-(1 << 15), (1 << 15) + 1, size=(8, 4))
    sin = fresh_rng.integers(-(1 << 15), (1 << 15) + 1, size=(8, 4))
    cos[2, 0], sin[2, 0] = 1 << 15, -(1 << 15)
    x[0, 1, :2], cos[3, 0], sin[3, 0] = [1, 0], 1 << 14, -(1 << 14)  # +-0.5: ties round up
    y = llm.rope(x, 2, 8, cos, sin)
    for t, c in picks(fresh_rng, (5, 16), 6) + [(0, 0), (0, 1), (1, 0), (1, 1)]:
        i, p = (c % 8) // 2, 2 + t
        a, b = int(x[0, t, c - c % 2]), int(x[0, t, c - c % 2 + 1])
        cs, sn = int(cos[p, i]), int(sin[p, i])
        got = referee.rope(a, b, cs, sn, c % 2 == 1).call()
        assert got == ref.rope(a, b, cs, sn, c % 2 == 1) == y[0, t, c], (t, c)

    a = np.array([WIDE, -WIDE, WIDE, 0, 12345, -(1 << 30)] + fresh_rng.integers(-WIDE, WIDE, 4).tolist())
    b = np.array([WIDE, -WIDE, -WIDE, -WIDE, -12346, -(1 << 30)] + fresh_rng.integers(-WIDE, WIDE, 4).tolist())
    s = llm.resid_add(a, b)
    for u, v, w in zip(a.tolist(), b.tolist(), s.tolist()):
        assert referee.resid_add(u, v).call() == ref.resid_add(u, v) == w

    silu = spec.silu_lut()
    g = np.array([-(1 << 15) + 1, (1 << 15) - 1, 0, -1, 700] + fresh_rng.integers(-(1 << 15) + 1, 1 << 15, 4).tolist())
    u = np.array([WIDE, -WIDE, 5, -WIDE, WIDE] + fresh_rng.integers(-WIDE, WIDE, 4).tolist())
    out = llm.silu_gate(g, u, silu)
    for gg, uu, want in zip(g.tolist(), u.tolist(), out.tolist()):
        idx = gg + (1 << 15)
        assert referee.silu_gate(gg, idx, int(silu[idx]), uu).call() == ref.silu_gate(gg, idx, int(silu[idx]), uu) == want
    with pytest.raises(Exception, match="wrong SiLU table index"):
        referee.silu_gate(3, 3 + (1 << 15) + 1, 0, 1).call()
    with pytest.raises(OneStepError):
        ref.silu_gate(3, 4, 0, 1)


def test_wrmsnorm(referee, fresh_rng):
    h = 96
    x = wide_rows(fresh_rng, 6, h)
    x[5] = WIDE  # every value at the extreme
    gain = fresh_rng.integers(-(1 << 22), 1 << 22, size=h)
    gain[0] = (1 << 22) - 1
    y = llm.wrmsnorm(x, gain)
    for t, c in picks(fresh_rng, y.shape, 4) + [(1, 3), (2, 0), (4, 5), (5, 1), (3, 7)]:
        got = referee.wrmsnorm(padded(x[t], 4), 4, h, c, int(gain[c])).call()
        assert got == ref.wrmsnorm(x[t].tolist(), c, int(gain[c])) == y[t, c], (t, c)


@pytest.mark.parametrize("dim", [64, 32, 128])
def test_gqa_scores(referee, fresh_rng, dim):
    assert ref.SCORE_SCALES[dim] == llm.score_scale(dim)  # as the contract hard-codes it
    heads, kv_heads, t, s = 6, 2, 3, 7
    q = fresh_rng.integers(-spec.ACT_MAX, spec.ACT_MAX + 1, size=(1, t, heads * dim)) >> fresh_rng.integers(0, 16)
    k = fresh_rng.integers(-spec.ACT_MAX, spec.ACT_MAX + 1, size=(1, s, kv_heads * dim)) >> fresh_rng.integers(0, 16)
    q[0, 0] = spec.ACT_MAX  # the largest dot, positive and negative: clipped to +-Z_MAX
    k[0, 0] = spec.ACT_MAX
    k[0, 1] = -spec.ACT_MAX
    z = llm.gqa_scores(q, k, heads, kv_heads)
    vis = llm.causal(t, s)
    group = heads // kv_heads
    for h, i, j in picks(fresh_rng, z.shape, 6) + [(0, 0, 0), (1, 0, 1), (2, 1, 6), (5, 2, 6)]:
        qs = q[0, i, h * dim:(h + 1) * dim]
        ks = k[0, j, (h // group) * dim:(h // group + 1) * dim]
        got = referee.gqa_score(padded(qs, 4), padded(ks, 4), 4, dim, bool(vis[i, j])).call()
        assert got == ref.gqa_score(qs.tolist(), ks.tolist(), bool(vis[i, j])) == z[h, i, j], (h, i, j)
    with pytest.raises(Exception, match="no score scale"):
        referee.gqa_score(padded([1] * 48, 4), padded([1] * 48, 4), 4, 48, True).call()


def _prob_rows(rng):
    """Scores rows: random with causal masks, all masked but one, ties at the max, gaps past the
    table's end, and extremes +-Z_MAX."""
    s = 24
    z = rng.integers(-(1 << 15), 1 << 15, size=(6, s))
    z[0, 10:] = llm.MASKED
    z[1] = llm.MASKED
    z[1, 7] = -5
    z[2, [3, 9, 20]] = 40000
    z[3, ::2] = llm.Z_MAX
    z[3, 1::2] = -llm.Z_MAX
    z[4, 0] = llm.Z_MAX
    z[4, 1] = llm.Z_MAX - (llm.EXP2_ROWS << llm.Z_FRAC) + 1  # exactly the table's last index
    z[4, 2] = llm.Z_MAX - (llm.EXP2_ROWS << llm.Z_FRAC) + 2
    z[5] = llm.MASKED
    return z


def test_gqa_probs(referee, fresh_rng):
    z = _prob_rows(fresh_rng)
    table = llm.exp2_table()
    p = llm.gqa_probs(z)
    cells = picks(fresh_rng, z.shape, 8) + [(1, 7), (1, 0), (2, 3), (2, 20), (3, 1), (4, 1), (4, 2), (5, 4), (0, 12)]
    for r, j in cells:
        u = ref.exp2_index(z[r].tolist(), j)
        got = referee.gqa_prob(padded(z[r], 4), 4, z.shape[1], j, u, int(table[u])).call()
        assert got == ref.gqa_prob(z[r].tolist(), j, u, int(table[u])) == p[r, j], (r, j)
    with pytest.raises(Exception, match="wrong exp2 table index"):
        u = ref.exp2_index(z[2].tolist(), 3)
        referee.gqa_prob(padded(z[2], 4), 4, z.shape[1], 3, u + 1, int(table[u + 1])).call()
    with pytest.raises(OneStepError):
        ref.gqa_prob(z[2].tolist(), 3, 1, 0)


def test_gqa_context(referee, fresh_rng):
    heads, kv_heads, dim, t, s = 4, 2, 8, 3, 12
    z = llm.gqa_scores(fresh_rng.integers(-(1 << 20), 1 << 20, size=(1, t, heads * dim)),
                       fresh_rng.integers(-(1 << 20), 1 << 20, size=(1, s, kv_heads * dim)), heads, kv_heads)
    p = llm.gqa_probs(z)
    vt = fresh_rng.integers(-spec.ACT_MAX, spec.ACT_MAX + 1, size=(1, kv_heads * dim, s))
    vt[0, 0] = spec.ACT_MAX
    vt[0, 1] = -spec.ACT_MAX
    vt[0, 2] = 0
    ctx = llm.gqa_context(p, vt, heads, kv_heads)
    group = heads // kv_heads
    for i, c in picks(fresh_rng, ctx.shape[1:], 6) + [(0, 0), (2, 1), (1, 2), (2, dim + 1)]:
        h, dd = divmod(c, dim)
        prow, vrow = p[h, i], vt[0, (h // group) * dim + dd]
        got = referee.gqa_context(padded(prow, 4), 4, padded(vrow, 4), 4, s).call()
        assert got == ref.gqa_context(prow.tolist(), vrow.tolist()) == ctx[0, i, c], (i, c)
    # a row of zero weights: the specification's integer division by zero gives 0
    zero = np.zeros((1, 1, s), dtype=np.int64)
    with np.errstate(divide="ignore"):
        want = llm.gqa_context(zero, vt[:, :1], 1, 1)[0, 0, 0]
    assert referee.gqa_context(padded(zero[0, 0], 4), 4, padded(vt[0, 0], 4), 4, s).call() == \
        ref.gqa_context(zero[0, 0].tolist(), vt[0, 0].tolist()) == want == 0


def test_row_max_and_pick(referee, fresh_rng):
    n = 2 * llm.LOGIT_ROW + 100  # three rows, the last one padded
    y = fresh_rng.integers(-(1 << 20), 1 << 20, size=(3, n))
    y[0, [5, 2100]] = 1 << 21  # a tie across rows: the first row's (the lower id) wins the pick
    y[1, [2050, 2060]] = 1 << 22  # a tie within a row: its first index
    y[2, -1] = 1 << 23  # the best in the padded row
    rows = llm.linear_record(y, WIDE)
    m = llm.row_max(rows)
    chosen = llm.pick(m)
    w = llm.LOGIT_ROW
    for t in range(3):
        for r in range(rows.shape[1]):
            row = padded(rows[t, r], 4)
            for which in (0, 1):
                got = referee.row_max(row, 4, w, r, which).call()
                assert got == ref.row_max(rows[t, r].tolist(), r, which) == m[t, 2 * r + which], (t, r, which)
        got = referee.pick(padded(m[t], 4), 4, rows.shape[1]).call()
        assert got == ref.pick(m[t].tolist()) == chosen[t, 0] == int(np.argmax(y[t])), t
    assert chosen[0, 0] == 5 and chosen[1, 0] == 2050


def test_the_longest_rows_fit_the_gas_target(referee, fresh_rng):
    gas = {}
    # the FFN down projection (K = 1536, Q4_1: minimums too) on a wide row with extremes
    q, d, m = weights("Q4_1", fresh_rng, n=2, k=1536)
    x = wide_rows(fresh_rng, 5, 1536)[4]
    y = blockq.block_linear(x[None], q, d, m, spec.ACT_FRAC, spec.ACT_FRAC, WIDE)
    call = linear_call(referee, x.tolist(), q[1].tolist(), d[1].tolist(), m[1].tolist(), spec.ACT_FRAC, WIDE)
    assert call.call() == y[0, 1]
    gas["block_linear K=1536 Q4_1"] = call.estimate_gas()

    s = llm.CONTEXT
    p = fresh_rng.integers(0, llm.P_MAX + 1, size=s)
    v = fresh_rng.integers(-spec.ACT_MAX, spec.ACT_MAX + 1, size=s)
    call = referee.gqa_context(padded(p, 4), 4, padded(v, 4), 4, s)
    assert call.call() == llm.gqa_context(p[None, None], v[None, None], 1, 1)[0, 0, 0]
    gas["gqa_context S=2048"] = call.estimate_gas()

    z = fresh_rng.integers(-(1 << 20), 1 << 20, size=s)
    z[s // 2:] = llm.MASKED
    u = ref.exp2_index(z.tolist(), 7)
    call = referee.gqa_prob(padded(z, 4), 4, s, 7, u, int(llm.exp2_table()[u]))
    assert call.call() == llm.gqa_probs(z[None])[0, 7]
    gas["gqa_prob S=2048"] = call.estimate_gas()

    h = 576
    x = wide_rows(fresh_rng, 5, h)[1]
    gain = fresh_rng.integers(-(1 << 22), 1 << 22, size=h)
    call = referee.wrmsnorm(padded(x, 4), 4, h, 3, int(gain[3]))
    assert call.call() == llm.wrmsnorm(x[None], gain)[0, 3]
    gas["wrmsnorm H=576"] = call.estimate_gas()

    rows = llm.linear_record(fresh_rng.integers(-(1 << 20), 1 << 20, size=(1, llm.LOGIT_ROW)), WIDE)
    gas["row_max W=2048"] = referee.row_max(padded(rows[0, 0], 4), 4, llm.LOGIT_ROW, 0, 1).estimate_gas()
    for name, g in gas.items():
        print(f"llama one-step gas, {name}: {g}")
    assert max(gas.values()) < ONE_STEP_GAS, gas
