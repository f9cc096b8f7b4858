# pragma version ~=0.4.3
"""
@title OneStep
@notice Recomputes ONE output element of an exact op from its input rows: the referee at the
        end of a dispute. The formulas are those of `veracity/verify/onestep.py` (the reference,
        itself tested against the op set's int64 specification); tests check that both agree on
        random and edge elements of every op.
@dev Rows are packed big-endian two's complement, `w` bytes per element (1, 2, 4 or 8), followed
     by 32 zero bytes of padding so every element can be read with one `extract32`. Division is
     floor division and `>>` on int256 is arithmetic, as in the specification.
"""

MAX_ROW: constant(uint256) = 2080  # the longest row the exact op set has (MAX_K)
ROW_BYTES: constant(uint256) = 8352  # MAX_ROW * 4 + 32 padding
W_BYTES: constant(uint256) = 2112  # int8 weight rows: MAX_ROW + 32

ACT_MAX: constant(int256) = 2**23 - 1
I16_MAX: constant(int256) = 2**15 - 1
QMAX: constant(int256) = 127
ROW_BITS: constant(uint256) = 12
RECIP_SHIFT: constant(uint256) = 17
NORM_BITS: constant(uint256) = 15
NORM_STD_SHIFT: constant(uint256) = 4
SCORE_FRAC: constant(int256) = 6
ACT_FRAC: constant(int256) = 12
EXP2_LUT_SIZE: constant(int256) = 1024
MASKED_SCORE: constant(int256) = -(2**15)


@internal
@pure
def _bitlen(x: uint256) -> uint256:
    n: uint256 = 0
    v: uint256 = x
    for s: uint256 in [128, 64, 32, 16, 8, 4, 2, 1]:
        if v >= 1 << s:
            v = v >> s
            n += s
    if v > 0:
        n += 1
    return n


@internal
@pure
def _fdiv(a: int256, b: int256) -> int256:
    """floor(a / b) for b > 0 (Vyper's // truncates toward zero)."""
    q: int256 = a // b
    if a % b != 0 and a < 0:
        q -= 1
    return q


@internal
@pure
def _round_div(num: int256, den: int256) -> int256:
    return self._fdiv(2 * num + den, 2 * den)


@internal
@pure
def _clip(v: int256, limit: int256) -> int256:
    return max(-limit, min(limit, v))


@internal
@pure
def _row_exp(amax: int256, bits: uint256) -> uint256:
    """The shift that brings a row's max to at most `bits` bits."""
    b: uint256 = self._bitlen(convert(amax, uint256))
    if b > bits:
        return b - bits
    return 0


@internal
@pure
def _recip(ams: int256) -> int256:
    if ams > 0:
        return (QMAX << RECIP_SHIFT) // ams
    return 0


@external
@pure
def linear(x: Bytes[ROW_BYTES], xw: uint256, weight: Bytes[W_BYTES], smooth: Bytes[ROW_BYTES], n: uint256,
           mult: int256, shift_: int256, bias: int256, out_max: int256) -> int256:
    """
    @notice y[r, c] from row r of x, row c of the int8 weights, optional smoothing multipliers and
            channel c's requantization.
    @param x Row r of the input.
    @param xw The input's bytes per element.
    @param weight Row c of the int8 weights.
    @param smooth The smoothing multipliers, 4 bytes each (empty for none).
    @param n The row length.
    @param mult Channel c's requantization multiplier.
    @param shift_ Channel c's requantization shift.
    @param bias Channel c's bias.
    @param out_max The output's clip bound.
    @return The element.
    """
    assert n <= MAX_ROW and len(x) >= n * xw + 32 and len(weight) >= n + 32, "onestep: rows too short"
    smoothed: bool = len(smooth) > 0
    assert not smoothed or len(smooth) >= n * 4 + 32, "onestep: smoothing row too short"
    xb: uint256 = 256 - 8 * xw
    amax: int256 = 0
    # unsafe arithmetic below is bounded: |x| < 2**31, smoothing < 2**32, |q|, |w| <= 127, n <= 2080
    for i: uint256 in range(n, bound=MAX_ROW):
        v: int256 = convert(extract32(x, unsafe_mul(i, xw)), int256) >> xb
        if smoothed:
            v = unsafe_mul(v, convert(extract32(smooth, unsafe_mul(i, 4)), int256) >> 224)
        amax = max(amax, abs(v))
    e: uint256 = self._row_exp(amax, ROW_BITS)
    half: int256 = (1 << e) >> 1
    ams: int256 = (amax + half) >> e
    inv: int256 = self._recip(ams)
    rnd: int256 = 1 << (RECIP_SHIFT - 1)
    acc: int256 = 0
    for i: uint256 in range(n, bound=MAX_ROW):
        v: int256 = convert(extract32(x, unsafe_mul(i, xw)), int256) >> xb
        if smoothed:
            v = unsafe_mul(v, convert(extract32(smooth, unsafe_mul(i, 4)), int256) >> 224)
        q: int256 = unsafe_add(unsafe_mul(unsafe_add(v, half) >> e, inv), rnd) >> RECIP_SHIFT
        acc = unsafe_add(acc, unsafe_mul(q, convert(extract32(weight, i), int256) >> 248))
    sh: int256 = shift_ - convert(e, int256)
    assert sh >= 1, "onestep: requantization shift below 1"
    prod: int256 = acc * ams * mult
    return self._clip(((prod + (1 << convert(sh - 1, uint256))) >> convert(sh, uint256)) + bias, out_max)


@external
@pure
def add(a: int256, b: int256) -> int256:
    """
    @notice y = clip(a + b) to the activation range.
    @param a The first input.
    @param b The second input.
    @return The element.
    """
    return self._clip(a + b, ACT_MAX)


@external
@pure
def relu(x: int256) -> int256:
    """
    @notice y = max(x, 0).
    @param x The input.
    @return The element.
    """
    return max(x, 0)


@external
@pure
def lut(x: int256, index: int256, entry: int256) -> int256:
    """
    @notice A table op (GELU, SiLU): the entry at x + 2**15, itself proven against the table's root.
    @param x The input.
    @param index The table index shown (must be x + 2**15).
    @param entry The table's entry at `index`.
    @return The element.
    """
    assert index == x + 2**15, "onestep: wrong table entry for this input"
    return entry


@external
@pure
def norm(x: Bytes[ROW_BYTES], xw: uint256, n: uint256, c: uint256, gamma: int256, beta: int256,
         centre: bool) -> int256:
    """
    @notice LayerNorm (`centre`) or RMSNorm element y[r, c] from row r.
    @param x Row r of the input.
    @param xw The input's bytes per element.
    @param n The row length.
    @param c The channel.
    @param gamma Channel c's scale.
    @param beta Channel c's shift.
    @param centre True for LayerNorm, False for RMSNorm.
    @return The element.
    """
    assert n <= MAX_ROW and n > 0 and c < n and len(x) >= n * xw + 32, "onestep: bad row"
    xb: uint256 = 256 - 8 * xw
    mu: int256 = 0
    if centre:
        total: int256 = 0
        for i: uint256 in range(n, bound=MAX_ROW):
            v: int256 = convert(extract32(x, i * xw), int256) >> xb
            total += v
        mu = self._round_div(total, convert(n, int256))
    amax: int256 = 0
    for i: uint256 in range(n, bound=MAX_ROW):
        v: int256 = convert(extract32(x, i * xw), int256) >> xb
        amax = max(amax, abs(v - mu))
    e: uint256 = self._row_exp(amax, NORM_BITS)
    half: int256 = (1 << e) >> 1
    var: int256 = 0
    dc: int256 = 0
    for i: uint256 in range(n, bound=MAX_ROW):
        v: int256 = convert(extract32(x, i * xw), int256) >> xb
        ds: int256 = (v - mu + half) >> e
        var += ds * ds
        if i == c:
            dc = ds
    den: int256 = max(convert(isqrt(convert((var << (2 * NORM_STD_SHIFT)) // convert(n, int256), uint256)), int256), 1)
    return self._clip(self._round_div(dc * gamma, den) + beta, ACT_MAX)


@external
@pure
def embedding(row: Bytes[ROW_BYTES], rw: uint256, row_index: uint256, token_id: uint256, c: uint256) -> int256:
    """
    @notice y[t, c] = table[ids[t], c]: the row shown must be the one the token names.
    @param row The table's row shown.
    @param rw The table's bytes per element.
    @param row_index The index of the row shown.
    @param token_id The token id.
    @param c The channel.
    @return The element.
    """
    assert row_index == token_id, "onestep: the table row is not the token's"
    assert len(row) >= (c + 1) * rw + 32, "onestep: bad row"
    v: int256 = convert(convert(extract32(row, c * rw), uint256) >> (256 - 8 * rw), int256)
    return v - ((v >> (8 * rw - 1)) << (8 * rw))


@external
@pure
def score(q: Bytes[ROW_BYTES], k: Bytes[ROW_BYTES], w: uint256, n: uint256, i: uint256, j: uint256,
          key_valid: bool, causal: bool) -> int256:
    """
    @notice Base-2 attention logit z[i, j] from the head's query row i and key row j.
    @param q The head's query row i.
    @param k The head's key row j.
    @param w The rows' bytes per element.
    @param n The head width.
    @param i The query position.
    @param j The key position.
    @param key_valid Whether key j is unmasked.
    @param causal Whether keys after the query are masked.
    @return The element.
    """
    if not key_valid or (causal and j > i):
        return MASKED_SCORE
    assert n <= MAX_ROW and len(q) >= n * w + 32 and len(k) >= n * w + 32, "onestep: rows too short"
    xb: uint256 = 256 - 8 * w
    amq: int256 = 0
    amk: int256 = 0
    for t: uint256 in range(n, bound=MAX_ROW):
        a: int256 = convert(extract32(q, t * w), int256) >> xb
        b: int256 = convert(extract32(k, t * w), int256) >> xb
        amq = max(amq, abs(a))
        amk = max(amk, abs(b))
    eq: uint256 = self._row_exp(amq, ROW_BITS)
    ek: uint256 = self._row_exp(amk, ROW_BITS)
    hq: int256 = (1 << eq) >> 1
    hk: int256 = (1 << ek) >> 1
    sq: int256 = (amq + hq) >> eq
    sk: int256 = (amk + hk) >> ek
    iq: int256 = self._recip(sq)
    ik: int256 = self._recip(sk)
    rnd: int256 = 1 << (RECIP_SHIFT - 1)
    acc: int256 = 0
    for t: uint256 in range(n, bound=MAX_ROW):
        a: int256 = convert(extract32(q, t * w), int256) >> xb
        b: int256 = convert(extract32(k, t * w), int256) >> xb
        qa: int256 = ((((a) + hq) >> eq) * iq + rnd) >> RECIP_SHIFT
        kb: int256 = ((((b) + hk) >> ek) * ik + rnd) >> RECIP_SHIFT
        acc += qa * kb
    num: int256 = acc * sq * sk
    k2: int256 = convert(eq + ek, int256) + SCORE_FRAC - 2 * ACT_FRAC
    den: int256 = QMAX * QMAX
    pos: uint256 = convert(max(k2, 0), uint256)
    neg: uint256 = convert(max(-k2, 0), uint256)
    z: int256 = self._fdiv(((num << pos) << 1) + (den << neg), (2 * den) << neg)
    return self._clip(z, I16_MAX)


@external
@pure
def prob(z: Bytes[ROW_BYTES], zw: uint256, n: uint256, j: uint256, index: int256, entry: int256) -> int256:
    """
    @notice p[i, j]: the exp2 table entry at min(rowmax - z[j], size - 1), the last entry if masked.
    @param z Row i of the scores.
    @param zw The scores' bytes per element.
    @param n The row length.
    @param j The column.
    @param index The table index shown.
    @param entry The table's entry at `index`.
    @return The element.
    """
    assert n <= MAX_ROW and j < n and len(z) >= n * zw + 32, "onestep: bad row"
    xb: uint256 = 256 - 8 * zw
    zmax: int256 = min_value(int256)
    zj: int256 = 0
    for t: uint256 in range(n, bound=MAX_ROW):
        v: int256 = convert(extract32(z, t * zw), int256) >> xb
        zmax = max(zmax, v)
        if t == j:
            zj = v
    u: int256 = min(zmax - zj, EXP2_LUT_SIZE - 1)
    if zj == MASKED_SCORE:
        u = EXP2_LUT_SIZE - 1
    assert index == u, "onestep: wrong exp2 entry for these scores"
    return entry


@external
@pure
def prob_sum(p: Bytes[ROW_BYTES], pw: uint256, n: uint256) -> int256:
    """
    @notice s[i] = sum of row i of the (unsigned) probabilities.
    @param p Row i of the probabilities.
    @param pw Their bytes per element.
    @param n The row length.
    @return The sum.
    """
    assert n <= MAX_ROW and len(p) >= n * pw + 32, "onestep: bad row"
    total: int256 = 0
    for t: uint256 in range(n, bound=MAX_ROW):
        total += convert(convert(extract32(p, t * pw), uint256) >> (256 - 8 * pw), int256)
    return total


@external
@pure
def context(p: Bytes[ROW_BYTES], pw: uint256, psum: int256, v: Bytes[ROW_BYTES], vw: uint256,
            mask: Bytes[ROW_BYTES], mw: uint256, n: uint256) -> int256:
    """
    @notice ctx[i, d] from row i of the probabilities (unsigned), their sum, column d of v over the
            tokens and the key mask (unsigned).
    @param p Row i of the probabilities.
    @param pw Their bytes per element.
    @param psum Their sum.
    @param v Column d of v over the tokens.
    @param vw v's bytes per element.
    @param mask The key mask.
    @param mw The mask's bytes per element.
    @param n The token count.
    @return The element.
    """
    assert n <= MAX_ROW and len(p) >= n * pw + 32 and len(v) >= n * vw + 32 and len(mask) >= n * mw + 32, \
        "onestep: rows too short"
    assert psum > 0, "onestep: a probability row sums to at least 1"
    xb: uint256 = 256 - 8 * vw
    amax: int256 = 0
    for t: uint256 in range(n, bound=MAX_ROW):
        a: int256 = convert(extract32(v, t * vw), int256) >> xb
        m: int256 = convert(convert(extract32(mask, t * mw), uint256) >> (256 - 8 * mw), int256)
        amax = max(amax, abs((a) * m))
    e: uint256 = self._row_exp(amax, ROW_BITS)
    half: int256 = (1 << e) >> 1
    ams: int256 = (amax + half) >> e
    inv: int256 = self._recip(ams)
    rnd: int256 = 1 << (RECIP_SHIFT - 1)
    acc: int256 = 0
    for t: uint256 in range(n, bound=MAX_ROW):
        a: int256 = convert(extract32(v, t * vw), int256) >> xb
        m: int256 = convert(convert(extract32(mask, t * mw), uint256) >> (256 - 8 * mw), int256)
        q: int256 = (((((a) * m) + half) >> e) * inv + rnd) >> RECIP_SHIFT
        acc += convert(convert(extract32(p, t * pw), uint256) >> (256 - 8 * pw), int256) * q
    return self._clip(self._round_div(acc * (ams << e), QMAX * psum), ACT_MAX)


@external
@pure
def mean_pool(h: Bytes[ROW_BYTES], hw: uint256, mask: Bytes[ROW_BYTES], mw: uint256, n: uint256) -> int256:
    """
    @notice y[c] from column c of h over the tokens and the (unsigned) token mask.
    @param h Column c of h over the tokens.
    @param hw h's bytes per element.
    @param mask The token mask.
    @param mw The mask's bytes per element.
    @param n The token count.
    @return The element.
    """
    assert n <= MAX_ROW and len(h) >= n * hw + 32 and len(mask) >= n * mw + 32, "onestep: rows too short"
    xb: uint256 = 256 - 8 * hw
    total: int256 = 0
    count: int256 = 0
    for t: uint256 in range(n, bound=MAX_ROW):
        a: int256 = convert(extract32(h, t * hw), int256) >> xb
        m: int256 = convert(convert(extract32(mask, t * mw), uint256) >> (256 - 8 * mw), int256)
        total += (a) * m
        count += m
    return self._round_div(total, max(count, 1))


@external
@pure
def l2_normalize(x: Bytes[ROW_BYTES], xw: uint256, n: uint256, c: uint256) -> int256:
    """
    @notice y[c] = x[c] / |x| in 2**15 fixed point.
    @param x The input row.
    @param xw The input's bytes per element.
    @param n The row length.
    @param c The channel.
    @return The element.
    """
    assert n <= MAX_ROW and c < n and len(x) >= n * xw + 32, "onestep: bad row"
    xb: uint256 = 256 - 8 * xw
    amax: int256 = 0
    for t: uint256 in range(n, bound=MAX_ROW):
        a: int256 = convert(extract32(x, t * xw), int256) >> xb
        amax = max(amax, abs(a))
    e: uint256 = self._row_exp(amax, NORM_BITS)
    half: int256 = (1 << e) >> 1
    total: int256 = 0
    xc: int256 = 0
    for t: uint256 in range(n, bound=MAX_ROW):
        a: int256 = convert(extract32(x, t * xw), int256) >> xb
        s: int256 = (a + half) >> e
        total += s * s
        if t == c:
            xc = s
    norm_: int256 = convert(isqrt(convert(total, uint256)), int256)
    if norm_ == 0:
        return 0
    return self._round_div(xc << 15, norm_)
