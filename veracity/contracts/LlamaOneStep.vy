# pragma version ~=0.4.3
"""
@title LlamaOneStep
@notice Recomputes ONE output element of an exact op of the Llama family (SmolLM2: `exact.llm` and
        `exact.blockq`) from its input rows: the referee at the end of a dispute over such a
        model. The formulas are those of `veracity/verify/onestep_llm.py` (the reference, itself
        tested against the int64 NumPy specification); tests check that all three agree on random
        and edge elements of every op.
@dev Rows are packed big-endian two's complement, `w` bytes per element (1, 2, 4 or 8), followed
     by 32 zero bytes of padding so every element (or a whole word of elements) can be read with
     one `extract32`. Division is floor division and `>>` on int256 is arithmetic, as in the
     specification. Table entries (exp2, SiLU) are proven by the caller against the table's root;
     this contract only checks that the index shown is the one the inputs name.
"""

MAX_ROW: constant(uint256) = 2080  # the longest row of the exact op set
MAX_BLOCKS: constant(uint256) = 65  # MAX_ROW / BLOCK
MAX_PAIRS: constant(uint256) = 1040  # MAX_ROW / 2
ROW_BYTES: constant(uint256) = 8352  # MAX_ROW * 4 + 32 padding
Q_BYTES: constant(uint256) = 2112  # int8 quant rows: MAX_ROW + 32

BLOCK: constant(uint256) = 32
ACT_FRAC: constant(int256) = 12
ACT_MAX: constant(int256) = 2**23 - 1
HALF_FRAC: constant(int256) = 24  # block scales are in 2**-24 units
ROW_BITS: constant(uint256) = 6  # a block's activation scale has at most this many bits
QX: constant(int256) = 32767  # activations are 16-bit per block
TWO_QX: constant(int256) = 65534
WIDE_MAX: constant(int256) = 2**31 - 1
RMS_BITS: constant(uint256) = 26
NORM_STD_SHIFT: constant(uint256) = 4
ROPE_FRAC: constant(uint256) = 15
DOT_SHIFT: constant(uint256) = 14  # 2 * ACT_FRAC - Z_FRAC
SCALE_FRAC: constant(uint256) = 16
Z_MAX: constant(int256) = 2**30 - 1
MASKED: constant(int256) = -(2**31)
EXP2_LEN: constant(int256) = 18432  # EXP2_ROWS * 2**Z_FRAC
EMBED_SHIFT: constant(uint256) = 12  # 24 - ACT_FRAC
SILU_SHIFT: constant(uint256) = 8
SILU_OFFSET: constant(int256) = 2**15
# round(log2(e) / sqrt(D) * 2**16) (`exact.llm.score_scale`) for the head widths D the family uses
SCALE_32: constant(int256) = 16714
SCALE_64: constant(int256) = 11819
SCALE_128: constant(int256) = 8357


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
    """floor(a / b) for b != 0, as Python's // (Vyper's // truncates toward zero)."""
    q: int256 = a // b
    if a % b != 0 and ((a < 0) != (b < 0)):
        q -= 1
    return q


@internal
@pure
def _round_div(num: int256, den: int256) -> int256:
    """round_half_up(num / den) = floor((2 num + den) / (2 den))."""
    return self._fdiv(2 * num + den, 2 * den)


@internal
@pure
def _round_shift(num: int256, bits: uint256) -> int256:
    """round_div(num, 2**bits) for bits >= 1 (an arithmetic shift floors)."""
    return (num + (1 << (bits - 1))) >> bits


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


@external
@pure
def block_linear(x: Bytes[ROW_BYTES], xw: uint256, q: Bytes[Q_BYTES], d: Bytes[ROW_BYTES], m: Bytes[ROW_BYTES],
                 has_m: bool, k: uint256, frac_out: int256, out_max: int256) -> int256:
    """
    @notice y[t, n] of the block-quantized linear (`exact.blockq.block_linear`, ACT_FRAC input
            bits): row t of x quantized per block of 32 to 16 bits, times row n of the weights.
    @param x Row t of the input (k values).
    @param xw The input's bytes per element (1, 2, 4 or 8).
    @param q Row n of the int8 quants (k values, 1 byte each).
    @param d Row n of the block scales (k / 32 values, 4 bytes each, 2**-24 units).
    @param m Row n of the block minimums (as d; read only if has_m).
    @param has_m Whether the matrix has minimums (Q4_1).
    @param k The row length, a multiple of 32.
    @param frac_out The output's fractional bits.
    @param out_max The output's clip bound.
    @return The element.
    """
    assert k % BLOCK == 0 and k <= MAX_ROW, "llama onestep: k is not whole blocks within the longest row"
    assert xw == 1 or xw == 2 or xw == 4 or xw == 8, "llama onestep: element width is not 1, 2, 4 or 8"
    nb: uint256 = k // BLOCK
    assert len(x) >= k * xw + 32 and len(q) >= k + 32 and len(d) >= nb * 4 + 32, "llama onestep: rows too short"
    assert not has_m or len(m) >= nb * 4 + 32, "llama onestep: minimums row too short"
    assert frac_out >= 0 and frac_out <= HALF_FRAC + ACT_FRAC and out_max >= 0, "llama onestep: bad output format"
    x1: uint256 = xw << 3
    x2: uint256 = x1 << 1
    x3: uint256 = x1 + x2
    x4: uint256 = x1 << 2
    xb: uint256 = 256 - x1
    quads: uint256 = 8 // xw  # a word holds 32 / xw elements, read 4 at a time; a block is xw words
    # pass 1: each block's largest |x| (block b is the words at bytes [32 xw b, 32 xw (b + 1))),
    # as the largest f(v) = 2 v for v >= 0, 2 |v| - 1 for v < 0 (one comparison per value):
    # max |v| = (max f + 1) >> 1
    amaxs: int256[MAX_BLOCKS] = empty(int256[MAX_BLOCKS])
    top: int256 = 0
    pos: uint256 = 0
    for b: uint256 in range(nb, bound=MAX_BLOCKS):
        fm: int256 = 0
        for wi: uint256 in range(xw, bound=8):
            word: int256 = extract32(x, pos, output_type=int256)
            pos = unsafe_add(pos, 32)
            for t: uint256 in range(quads, bound=8):
                v: int256 = word >> xb
                fm = max(fm, (v << 1) ^ (v >> 255))
                v = (word << x1) >> xb
                fm = max(fm, (v << 1) ^ (v >> 255))
                v = (word << x2) >> xb
                fm = max(fm, (v << 1) ^ (v >> 255))
                v = (word << x3) >> xb
                fm = max(fm, (v << 1) ^ (v >> 255))
                word = word << x4
        am: int256 = unsafe_add(fm, 1) >> 1
        amaxs[b] = am
        top = max(top, am)
    e: uint256 = self._row_exp(top, ROW_BITS)
    ceil_add: int256 = (1 << e) - 1
    # pass 2: qx = floor((2 QX x + a 2**e) / (2 a 2**e)) in -QX..QX; adding QX * den keeps the
    # numerator non-negative, so the (truncating) division floors. One accumulator holds both
    # block sums, sum qx (q 2**64 + 1) = dot 2**64 + sx (|sx| <= 32 QX < 2**63). Unsafe
    # arithmetic below is bounded: |x| <= a 2**e < 2**64, |q| <= 128, |dot| < 2**28.
    acc: int256 = 0
    for b: uint256 in range(nb, bound=MAX_BLOCKS):
        am: int256 = amaxs[b]
        if am == 0:
            continue  # a zero block: every qx is 0
        a: int256 = (am + ceil_add) >> e
        half: int256 = a << e
        den: int256 = unsafe_add(half, half)
        off: int256 = unsafe_add(half, unsafe_mul(QX, den))
        qword: int256 = extract32(q, b << 5, output_type=int256)
        both: int256 = 0
        pos = unsafe_mul(b, xw) << 5
        for wi: uint256 in range(xw, bound=8):
            word: int256 = extract32(x, pos, output_type=int256)
            pos = unsafe_add(pos, 32)
            for t: uint256 in range(quads, bound=8):
                both = unsafe_add(both, unsafe_mul(unsafe_add((qword >> 248) << 64, 1), unsafe_sub(
                    unsafe_div(unsafe_add(unsafe_mul(TWO_QX, word >> xb), off), den), QX)))
                both = unsafe_add(both, unsafe_mul(unsafe_add(((qword << 8) >> 248) << 64, 1), unsafe_sub(
                    unsafe_div(unsafe_add(unsafe_mul(TWO_QX, (word << x1) >> xb), off), den), QX)))
                both = unsafe_add(both, unsafe_mul(unsafe_add(((qword << 16) >> 248) << 64, 1), unsafe_sub(
                    unsafe_div(unsafe_add(unsafe_mul(TWO_QX, (word << x2) >> xb), off), den), QX)))
                both = unsafe_add(both, unsafe_mul(unsafe_add(((qword << 24) >> 248) << 64, 1), unsafe_sub(
                    unsafe_div(unsafe_add(unsafe_mul(TWO_QX, (word << x3) >> xb), off), den), QX)))
                word = word << x4
                qword = qword << 32
        dot: int256 = unsafe_add(both, 2**63) >> 64
        term: int256 = (extract32(d, b << 2, output_type=int256) >> 224) * dot
        if has_m:
            sx: int256 = unsafe_sub(both, dot << 64)
            term += (extract32(m, b << 2, output_type=int256) >> 224) * sx
        acc += a * term
    sh: int256 = HALF_FRAC + ACT_FRAC - frac_out - convert(e, int256)
    num: int256 = acc
    den: int256 = QX
    if sh >= 0:
        den = QX << convert(sh, uint256)
    else:
        num = acc << convert(-sh, uint256)
    return self._clip(self._fdiv(2 * num + den, 2 * den), out_max)


@external
@pure
def qembed(q: int256, d: int256) -> int256:
    """
    @notice An embedding element: the Q8_0 table's quant q times its block scale d (2**-24 units),
            in ACT_FRAC bits: round(q d / 2**12). The caller proves the table row is the token's.
    @param q The quant.
    @param d Its block's scale.
    @return The element.
    """
    return self._round_shift(q * d, EMBED_SHIFT)


@external
@pure
def wrmsnorm(x: Bytes[ROW_BYTES], xw: uint256, h: uint256, c: uint256, gain: int256) -> int256:
    """
    @notice RMSNorm element y[t, c] of the wide residual stream (`exact.llm.wrmsnorm`): the row
            rescaled to RMS_BITS bits, D = isqrt(mean(ds**2) * 2**8), round(ds[c] gain / D).
    @param x Row t of the input (h values).
    @param xw The input's bytes per element.
    @param h The row length.
    @param c The channel.
    @param gain Channel c's gain.
    @return The element.
    """
    assert h > 0 and h <= MAX_ROW and c < h and len(x) >= h * xw + 32, "llama onestep: bad row"
    assert xw > 0 and xw <= 8, "llama onestep: element width above 8 bytes"
    xb: uint256 = 256 - 8 * xw
    hi: int256 = 0
    lo: int256 = 0
    for i: uint256 in range(h, bound=MAX_ROW):
        v: int256 = extract32(x, unsafe_mul(i, xw), output_type=int256) >> xb
        hi = max(hi, v)
        lo = min(lo, v)
    e: uint256 = self._row_exp(max(hi, -lo), RMS_BITS)
    half: int256 = (1 << e) >> 1
    ss: int256 = 0
    # unsafe arithmetic bounded: |ds| <= 2**26 + 1 for 8-byte values too, h <= 2080
    for i: uint256 in range(h, bound=MAX_ROW):
        ds: int256 = unsafe_add(extract32(x, unsafe_mul(i, xw), output_type=int256) >> xb, half) >> e
        ss = unsafe_add(ss, unsafe_mul(ds, ds))
    dc: int256 = ((extract32(x, c * xw, output_type=int256) >> xb) + half) >> e
    ms: uint256 = convert(ss, uint256) // h
    den: int256 = max(convert(isqrt(ms << (2 * NORM_STD_SHIFT)), int256), 1)
    return self._clip(self._round_div(dc * gain, den), ACT_MAX)


@external
@pure
def rope(a: int256, b: int256, cos: int256, sin: int256, second: bool) -> int256:
    """
    @notice One element of a rotated pair (a, b) (`exact.llm.rope`): round((a cos - b sin) / 2**15)
            for the first, round((a sin + b cos) / 2**15) for the second. The caller proves the
            table's cos and sin for the position and the pair.
    @param a The pair's first input.
    @param b The pair's second input.
    @param cos The table's cosine.
    @param sin The table's sine.
    @param second Whether the element is the pair's second.
    @return The element.
    """
    if second:
        return self._round_shift(a * sin + b * cos, ROPE_FRAC)
    return self._round_shift(a * cos - b * sin, ROPE_FRAC)


@external
@pure
def gqa_score(q: Bytes[ROW_BYTES], k: Bytes[ROW_BYTES], w: uint256, dim: uint256, visible: bool) -> int256:
    """
    @notice Base-2 attention score z[h, t, s] (`exact.llm.gqa_scores`): round(round(q.k / 2**14) c
            / 2**16) clipped to Z_MAX, c = round(log2(e) / sqrt(dim) 2**16); MASKED for a key
            the query does not see.
    @param q The query's slice of head h (dim values).
    @param k The key's slice of head h's KV head (dim values).
    @param w The rows' bytes per element.
    @param dim The head width (32, 64 or 128).
    @param visible Whether key s is at or before the query's position.
    @return The element.
    """
    if not visible:
        return MASKED
    c: int256 = 0
    if dim == 64:
        c = SCALE_64
    elif dim == 32:
        c = SCALE_32
    elif dim == 128:
        c = SCALE_128
    else:
        raise "llama onestep: no score scale for this head width"
    assert w > 0 and w <= 8 and len(q) >= dim * w + 32 and len(k) >= dim * w + 32, "llama onestep: rows too short"
    xb: uint256 = 256 - 8 * w
    dot: int256 = 0
    for i: uint256 in range(dim, bound=128):
        p: uint256 = unsafe_mul(i, w)
        # unsafe: each product below 2**128, 128 of them
        dot = unsafe_add(dot, unsafe_mul(extract32(q, p, output_type=int256) >> xb,
                                         extract32(k, p, output_type=int256) >> xb))
    z: int256 = self._round_shift(self._round_shift(dot, DOT_SHIFT) * c, SCALE_FRAC)
    return self._clip(z, Z_MAX)


@external
@pure
def gqa_prob(z: Bytes[ROW_BYTES], zw: uint256, s: uint256, j: uint256, index: uint256, entry: int256) -> int256:
    """
    @notice Probability p[h, t, j] (`exact.llm.gqa_probs`): the exp2 table's entry at
            min(zmax - z[j], len - 1), the last (zero) entry for a masked key; zmax over the row's
            unmasked scores.
    @param z Row (h, t) of the scores (s values).
    @param zw The scores' bytes per element (at most 4: MASKED is the int32 minimum).
    @param s The row length.
    @param j The key.
    @param index The table index shown.
    @param entry The table's entry at `index` (proven by the caller).
    @return The element.
    """
    assert s <= MAX_ROW and j < s and len(z) >= s * zw + 32, "llama onestep: bad row"
    assert zw > 0 and zw <= 4, "llama onestep: scores wider than int32"
    xb: uint256 = 256 - 8 * zw
    zmax: int256 = MASKED  # masked entries are the int32 minimum: max() skips them
    for i: uint256 in range(s, bound=MAX_ROW):
        zmax = max(zmax, extract32(z, unsafe_mul(i, zw), output_type=int256) >> xb)
    zj: int256 = extract32(z, j * zw, output_type=int256) >> xb
    u: int256 = EXP2_LEN - 1
    if zj != MASKED:
        u = min(zmax - zj, EXP2_LEN - 1)
    assert index == convert(u, uint256), "llama onestep: wrong exp2 table index for these scores"
    return entry


@external
@pure
def gqa_context(p: Bytes[ROW_BYTES], pw: uint256, v: Bytes[ROW_BYTES], vw: uint256, s: uint256) -> int256:
    """
    @notice Context element (`exact.llm.gqa_context`): round(sum_j p_j v_j / sum_j p_j) clipped to
            ACT_MAX (0 for a row of zero weights, as the specification's integer division by 0).
    @param p Row (h, t) of the probabilities (s values).
    @param pw Their bytes per element.
    @param v The matching row of the transposed V cache (s values).
    @param vw Its bytes per element.
    @param s The row length.
    @return The element.
    """
    assert s <= MAX_ROW and len(p) >= s * pw + 32 and len(v) >= s * vw + 32, "llama onestep: rows too short"
    assert pw > 0 and pw <= 8 and vw > 0 and vw <= 8, "llama onestep: element width above 8 bytes"
    pb: uint256 = 256 - 8 * pw
    vb: uint256 = 256 - 8 * vw
    num: int256 = 0
    den: int256 = 0
    # unsafe: 2080 products of 64-bit values stay far below 2**255
    for i: uint256 in range(s, bound=MAX_ROW):
        pi: int256 = extract32(p, unsafe_mul(i, pw), output_type=int256) >> pb
        num = unsafe_add(num, unsafe_mul(pi, extract32(v, unsafe_mul(i, vw), output_type=int256) >> vb))
        den = unsafe_add(den, pi)
    if den == 0:
        return 0
    return self._clip(self._round_div(num, den), ACT_MAX)


@external
@pure
def resid_add(a: int256, b: int256) -> int256:
    """
    @notice The wide residual stream's sum: a + b clipped to WIDE_MAX.
    @param a The first input.
    @param b The second input.
    @return The element.
    """
    return self._clip(a + b, WIDE_MAX)


@external
@pure
def silu_gate(g: int256, index: uint256, entry: int256, u: int256) -> int256:
    """
    @notice SwiGLU element (`exact.llm.silu_gate`): round(silu[g] u / 2**8) clipped to WIDE_MAX.
    @param g The gate (GELU_FRAC bits).
    @param index The SiLU table index shown (must be g + 2**15).
    @param entry The table's entry at `index` (proven by the caller).
    @param u The up projection's element.
    @return The element.
    """
    assert g + SILU_OFFSET >= 0 and index == convert(g + SILU_OFFSET, uint256), \
        "llama onestep: wrong SiLU table index for this gate"
    return self._clip(self._round_shift(entry * u, SILU_SHIFT), WIDE_MAX)


@external
@pure
def row_max(x: Bytes[ROW_BYTES], xw: uint256, n: uint256, r: uint256, which: uint256) -> int256:
    """
    @notice One entry of `exact.llm.row_max` for logits row r (of width n): which 0, its largest
            value; which 1, r n + the first index holding it (a token id).
    @param x The logits row (n values).
    @param xw Its bytes per element.
    @param n The row width.
    @param r The row's index within the position's logits.
    @param which 0 for the value, 1 for the token id.
    @return The element.
    """
    assert n > 0 and n <= MAX_ROW and len(x) >= n * xw + 32, "llama onestep: bad row"
    assert xw > 0 and xw <= 8 and which < 2, "llama onestep: bad element"
    xb: uint256 = 256 - 8 * xw
    best: int256 = min_value(int256)
    at: uint256 = 0
    for i: uint256 in range(n, bound=MAX_ROW):
        v: int256 = extract32(x, unsafe_mul(i, xw), output_type=int256) >> xb
        if v > best:
            best = v
            at = i
    if which == 0:
        return best
    return convert(r * n + at, int256)


@external
@pure
def pick(m: Bytes[ROW_BYTES], mw: uint256, pairs: uint256) -> int256:
    """
    @notice The picked token (`exact.llm.pick` without the stop rule): the id of the (value, id)
            pair with the largest value, the first such pair on ties.
    @param m A position's row of pairs [v0, i0, v1, i1, ...].
    @param mw Its bytes per element.
    @param pairs The number of pairs.
    @return The token id.
    """
    assert pairs > 0 and pairs <= MAX_PAIRS and len(m) >= 2 * pairs * mw + 32, "llama onestep: bad row"
    assert mw > 0 and mw <= 8, "llama onestep: element width above 8 bytes"
    xb: uint256 = 256 - 8 * mw
    best: int256 = min_value(int256)
    at: uint256 = 0
    for i: uint256 in range(pairs, bound=MAX_PAIRS):
        v: int256 = extract32(m, unsafe_mul(i, 2 * mw), output_type=int256) >> xb
        if v > best:
            best = v
            at = i
    return extract32(m, (2 * at + 1) * mw, output_type=int256) >> xb
