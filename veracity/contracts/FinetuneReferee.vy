# pragma version ~=0.4.3
# pragma optimize codesize
"""
@title FinetuneReferee
@notice Phase three of a dispute over MiniLM's fine-tuning step (`veracity/training/lora.py`, every
        op a record), for the ops the other training referees do not have: the mean over each
        sentence's tokens and its backward, the adapter's GEMM over the GELU activations' rows of
        1,536 (the adapter's rows stored in two halves), and the adapter gradient through those
        activations' per-token int8 form (their scales, the scaled gradient, their int8 values
        transposed, and the GEMM with an int8 operand as it is). The value goes to `Disputes`
        through the TrainReferee. The formulas are `veracity/verify/onestep_train.py`'s.
"""

from interfaces import IDisputes
import tensors
import trainmath

interface ITrainReferee:
    def disputes() -> IDisputes: view
    def relay(order_id: uint256, recomputed: int256): nonpayable

K_SEG_MEAN: constant(uint8) = 58  # op kinds (`veracity/exact/program.py`)
K_SEG_SPREAD: constant(uint8) = 59
K_ROW_QSCALE: constant(uint8) = 60
K_QSCALE_MUL: constant(uint8) = 61
K_QUANT_T: constant(uint8) = 62
K_QMM_INT8W: constant(uint8) = 63
K_QMM_W2: constant(uint8) = 64

QMAX: constant(int256) = 127
ROW_BITS: constant(uint256) = 12
RECIP_SHIFT: constant(uint256) = 17
WIDE: constant(uint256) = 1536  # the longest row read here (the GELU activations'), streamed, never stored
LANES: constant(uint256) = tensors.CHUNK_MAX // 4  # the two-halves GEMM's lanes of 4 values (a chunk of int8 rows)

train: public(immutable(ITrainReferee))


@deploy
def __init__(train_: ITrainReferee):
    train = train_


@internal
@view
def _judging(order_id: uint256, desc: tensors.OpDesc) -> tensors.Judging:
    h: bytes32 = empty(bytes32)
    record: uint256 = 0
    element: uint256 = 0
    agreed: bytes32 = empty(bytes32)
    h, record, element, agreed = staticcall (staticcall train.disputes()).judging(order_id)
    assert keccak256(abi_encode(desc)) == h, "referee: that is not the record's descriptor"
    return tensors.Judging(record=record, element=element, agreed=agreed)


@internal
@pure
def _amax(row: Bytes[tensors.ROW_BYTES], w: uint256, k: uint256) -> int256:
    """The largest |value| of the first `k` signed `w`-byte values of a row (read in place: a row
    passed to a function per element would be copied every time)."""
    bits: uint256 = 256 - 8 * w
    m: int256 = 0
    for i: uint256 in range(k, bound=WIDE):
        m = max(m, abs(convert(extract32(row, i * w), int256) >> bits))
    return m


@internal
@pure
def _scale(amax: int256) -> (int256, uint256, int256):
    """Per-row int8 quantization's (rescaled max, shift, reciprocal) for a row's max |value|."""
    b: uint256 = tensors._bitlen(convert(amax, uint256))
    e: uint256 = 0
    if b > ROW_BITS:
        e = b - ROW_BITS
    ams: int256 = (amax + convert((1 << e) >> 1, int256)) >> e
    inv: int256 = 0
    if ams > 0:
        inv = (QMAX << RECIP_SHIFT) // ams
    return ams, e, inv


@internal
@pure
def _q(v: int256, e: uint256, inv: int256) -> int256:
    return ((v + convert((1 << e) >> 1, int256)) >> e) * inv + (1 << (RECIP_SHIFT - 1)) >> RECIP_SHIFT


@internal
@pure
def _w2_dot(x: Bytes[tensors.ROW_BYTES], w1: Bytes[tensors.ROW_BYTES], w2: Bytes[tensors.ROW_BYTES], half: uint256,
            xw: uint256, ww: uint256, sh: int256) -> int256:
    """`train.qmatmul`'s element from row t of x (2 * `half` values of `xw` bytes) and the two
    halves of w's row c (`half` values of `ww` bytes each): both rows quantized to int8 per row,
    then round_shift(dot(q(x), q(w)) ax aw, 127**2, ex + ew + sh), as `_scale` and `_q`.

    The rows are read in place a word at a time, in lanes of 4 values (x's first and second half,
    w's two halves: 4 words a lane), each value a shift of its word (read one by one, with checked
    arithmetic, they cost about 750 gas each: the judgement took 3.4M gas). A lane past a half
    reads the values after it (in x, its second half: the maximum is over x anyway; in w, the
    row's 32 bytes of padding: zeros, which quantize to 0 and add nothing). The unchecked
    arithmetic is bounded: |v| <= 2**63, |(v + h) >> e| <= 2**63, times the reciprocal
    (< 2**24) under 2**87, and |q| <= 128."""
    xs: uint256 = xw << 3  # a value's bits in x, in w
    ws: uint256 = ww << 3
    xb: uint256 = 256 - xs
    wb: uint256 = 256 - ws
    xl: uint256 = xw << 2  # a lane's bytes in x, in w
    wl: uint256 = ww << 2
    xh: uint256 = half * xw  # where x's second half starts
    lanes: uint256 = (half + 3) >> 2
    # pass 1: the largest f(v) = 2 v for v >= 0, 2 |v| - 1 for v < 0 (one comparison a value): max |v| = (max f + 1) >> 1
    fx: int256 = 0
    fw: int256 = 0
    for l: uint256 in range(lanes, bound=LANES):
        a: int256 = extract32(x, unsafe_mul(l, xl), output_type=int256)
        b: int256 = extract32(x, unsafe_add(xh, unsafe_mul(l, xl)), output_type=int256)
        p: int256 = extract32(w1, unsafe_mul(l, wl), output_type=int256)
        q: int256 = extract32(w2, unsafe_mul(l, wl), output_type=int256)
        for t: uint256 in range(4):
            v: int256 = a >> xb
            fx = max(fx, (v << 1) ^ (v >> 255))
            v = b >> xb
            fx = max(fx, (v << 1) ^ (v >> 255))
            v = p >> wb
            fw = max(fw, (v << 1) ^ (v >> 255))
            v = q >> wb
            fw = max(fw, (v << 1) ^ (v >> 255))
            a = a << xs
            b = b << xs
            p = p << ws
            q = q << ws
    ax: int256 = 0
    ex: uint256 = 0
    ix: int256 = 0
    aw: int256 = 0
    ew: uint256 = 0
    iw: int256 = 0
    ax, ex, ix = self._scale(unsafe_add(fx, 1) >> 1)
    aw, ew, iw = self._scale(unsafe_add(fw, 1) >> 1)
    # pass 2: each value's int8 quantization inline (``_q``; a call a value costs more than it), the products summed
    hx: int256 = convert((1 << ex) >> 1, int256)
    hw: int256 = convert((1 << ew) >> 1, int256)
    rnd: int256 = 1 << (RECIP_SHIFT - 1)
    acc: int256 = 0
    for l: uint256 in range(lanes, bound=LANES):
        a: int256 = extract32(x, unsafe_mul(l, xl), output_type=int256)
        b: int256 = extract32(x, unsafe_add(xh, unsafe_mul(l, xl)), output_type=int256)
        p: int256 = extract32(w1, unsafe_mul(l, wl), output_type=int256)
        q: int256 = extract32(w2, unsafe_mul(l, wl), output_type=int256)
        for t: uint256 in range(4):
            qa: int256 = unsafe_add(unsafe_mul(unsafe_add(a >> xb, hx) >> ex, ix), rnd) >> RECIP_SHIFT
            qb: int256 = unsafe_add(unsafe_mul(unsafe_add(b >> xb, hx) >> ex, ix), rnd) >> RECIP_SHIFT
            qp: int256 = unsafe_add(unsafe_mul(unsafe_add(p >> wb, hw) >> ew, iw), rnd) >> RECIP_SHIFT
            qq: int256 = unsafe_add(unsafe_mul(unsafe_add(q >> wb, hw) >> ew, iw), rnd) >> RECIP_SHIFT
            acc = unsafe_add(acc, unsafe_add(unsafe_mul(qa, qp), unsafe_mul(qb, qq)))
            a = a << xs
            b = b << xs
            p = p << ws
            q = q << ws
    return trainmath._round_shift(acc * ax * aw, QMAX * QMAX, convert(ex + ew, int256) + sh)


@internal
@pure
def _starts(j: tensors.Judging, desc: tensors.OpDesc, ref: tensors.RecordRef,
            t: tensors.TensorRow) -> DynArray[int256, trainmath.MAX_K]:
    """The sentences' first tokens, then the total (input 1, one row)."""
    assert len(t.dims) == 1, "referee: the starts are one row"
    return trainmath._row(tensors._input_row(j, desc, 1, ref, t, 0), t)


@external
def judge(order_id: uint256, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 3],
          rows: DynArray[tensors.TensorRow, 3], table: tensors.TensorRow):
    """
    @notice Judge the located element of a fine-tuning step's record: `refs` and `rows` prove the
            rows of its input records the op reads (`veracity/verify/game.py: step_rows` names
            them; the two-halves GEMM reads row r of x and rows 2c and 2c + 1 of w).
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param refs The input records' links to the agreed chain value.
    @param rows The rows of the input records the op reads, with their chunk proofs.
    @param table Unused (the TrainAttentionReferee's table row).
    """
    j: tensors.Judging = self._judging(order_id, desc)
    k: uint8 = desc.kind
    n: uint256 = tensors._last(desc.dims)
    r: uint256 = j.element // n
    c: uint256 = j.element % n
    y: int256 = 0
    if k == K_SEG_MEAN:  # [S, H] from the transposed tokens [H, T] and the starts
        starts: DynArray[int256, trainmath.MAX_K] = self._starts(j, desc, refs[1], rows[1])
        z: DynArray[int256, trainmath.MAX_K] = trainmath._row(tensors._input_row(j, desc, 0, refs[0], rows[0], c),
                                                              rows[0])
        assert r + 1 < len(starts), "referee: no such sentence"
        lo: uint256 = convert(starts[r], uint256)
        hi: uint256 = convert(starts[r + 1], uint256)
        assert lo < hi and hi <= len(z), "referee: the sentence has no tokens"
        for i: uint256 in range(lo, hi, bound=trainmath.MAX_K):
            y += z[i]
        cnt: int256 = convert(hi - lo, int256)
        y = trainmath._fdiv(2 * y + cnt, 2 * cnt)
    elif k == K_SEG_SPREAD:  # [T, H] from the pooled gradient [S, H] and the starts
        starts: DynArray[int256, trainmath.MAX_K] = self._starts(j, desc, refs[1], rows[1])
        t: int256 = convert(r, int256)
        s: uint256 = max_value(uint256)
        for i: uint256 in range(len(starts) - 1, bound=trainmath.MAX_K):
            if starts[i] <= t and t < starts[i + 1]:
                s = i
                break
        assert s != max_value(uint256), "referee: the token is in no sentence"
        g: int256 = tensors._at(tensors._input_row(j, desc, 0, refs[0], rows[0], s), rows[0], c)
        y = trainmath._round_shift(g, starts[s + 1] - starts[s], 0)
    elif k == K_ROW_QSCALE or k == K_QUANT_T:  # [T, 2] or [I, T] from row t of x
        t: uint256 = r
        if k == K_QUANT_T:
            t = c
        x: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 0, refs[0], rows[0], t)
        w: uint256 = tensors._itemsize(rows[0].dtype)
        ams: int256 = 0
        e: uint256 = 0
        inv: int256 = 0
        ams, e, inv = self._scale(self._amax(x, w, tensors._last(rows[0].dims)))
        if k == K_QUANT_T:
            assert r < tensors._last(rows[0].dims), "referee: no such column"
            y = self._q(convert(extract32(x, r * w), int256) >> (256 - 8 * w), e, inv)
        elif c == 0:
            y = ams
        else:
            y = convert(e, int256)
    elif k == K_QSCALE_MUL:  # (x * max) << shift, row t of the scales [T, 2]
        assert len(rows[1].dims) == 2 and tensors._last(rows[1].dims) == 2, "referee: the scales are pairs"
        sc: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 1, refs[1], rows[1], r)
        y = (tensors._input_element(j, desc, 0, refs[0], rows[0]) * tensors._at(sc, rows[1], 0)) << \
            convert(tensors._at(sc, rows[1], 1), uint256)
    elif k == K_QMM_INT8W:  # y [R, ...] : row r of x quantized, row c of the int8 w as it is
        per: uint256 = 1
        for i: uint256 in range(1, 4):
            if i < len(desc.dims):
                per *= desc.dims[i]
        qx: DynArray[int256, trainmath.MAX_K] = []
        ax: int256 = 0
        ex: int256 = 0
        qx, ax, ex = trainmath._quantized(trainmath._row(
            tensors._input_row(j, desc, 0, refs[0], rows[0], j.element // per), rows[0]))
        wv: DynArray[int256, trainmath.MAX_K] = trainmath._row(
            tensors._input_row(j, desc, 1, refs[1], rows[1], j.element % per), rows[1])
        y = trainmath._round_shift(trainmath._dot(qx, wv) * ax, QMAX * QMAX, ex + desc.params[0])
    elif k == K_QMM_W2:  # y [T, N]: row t of x [T, K], rows 2c and 2c + 1 of w [N, 2, K/2]
        assert len(rows) == 3 and len(rows[2].dims) == 3 and rows[2].dims[1] == 2, "referee: w's rows are halves"
        x: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 0, refs[0], rows[0], r)
        w1: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 1, refs[1], rows[1], 2 * c)
        w2: Bytes[tensors.ROW_BYTES] = tensors._input_row(j, desc, 1, refs[2], rows[2], 2 * c + 1)
        half: uint256 = tensors._last(rows[1].dims)
        assert tensors._last(rows[0].dims) == 2 * half, "referee: rows of different lengths"
        y = self._w2_dot(x, w1, w2, half, tensors._itemsize(rows[0].dtype), tensors._itemsize(rows[1].dtype),
                         desc.params[0])
    else:
        raise "referee: not a fine-tuning step's record"
    extcall train.relay(order_id, y)
