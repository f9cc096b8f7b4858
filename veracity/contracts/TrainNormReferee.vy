# pragma version ~=0.4.3
# pragma optimize codesize
"""
@title TrainNormReferee
@notice Phase three of a dispute over the tiny GPT's training step (`veracity/training/gpt.py`,
        every op a record), for its elementwise and LayerNorm ops and the gradients summed over
        tokens (the TrainAttentionReferee has attention, GELU and the embedding lookup; the
        TrainReferee the GEMMs, the loss and the optimizer): recompute the located element from
        rows of agreed earlier records, and hand the value to `Disputes` through the TrainReferee. The formulas are `veracity/verify/onestep_train.py`'s.
"""

from interfaces import IDisputes
import tensors
import trainmath

interface ITrainReferee:
    def disputes() -> IDisputes: view
    def relay(order_id: uint256, recomputed: int256): nonpayable

K_RESCALE: constant(uint8) = 43  # op kinds (`veracity/exact/program.py`)
K_SUM: constant(uint8) = 44
K_LN_REC: constant(uint8) = 46
K_XHAT: constant(uint8) = 47
K_LN_BWD: constant(uint8) = 48
K_COL_DOT: constant(uint8) = 49
K_SCATTER_ADD: constant(uint8) = 57

ACT_FRAC: constant(int256) = 12
NORM_SHIFT: constant(int256) = 16  # ACT_FRAC + NORM_STD_SHIFT: gamma's fixed point
NORM_SHIFT_U: constant(uint256) = 16
ACT_MAX: constant(int256) = 8388607
MAX_K: constant(uint256) = 1040

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
def _vector(j: tensors.Judging, desc: tensors.OpDesc, which: uint256, ref: tensors.RecordRef, t: tensors.TensorRow,
            n: uint256) -> Bytes[tensors.ROW_BYTES]:
    """Input `which`, a vector of `n` (a LayerNorm's gamma or beta, an index per token)."""
    assert len(t.dims) == 1 and t.dims[0] == n, "referee: that input is not a vector of the row's length"
    return tensors._input_row(j, desc, which, ref, t, 0)


@internal
@pure
def _norm(j: tensors.Judging, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 3],
          rows: DynArray[tensors.TensorRow, 3], c: uint256) -> int256:
    """LayerNorm's y[r, c] from row r of x and the gamma and beta records."""
    n: uint256 = tensors._last(desc.dims)
    assert tensors._same(rows[0].dims, desc.dims), "referee: the input's shape is not the output's"
    ds: DynArray[int256, MAX_K] = []
    e: int256 = 0
    den: int256 = 0
    ds, e, den = trainmath._norm_stats(trainmath._row(tensors._input_row(j, desc, 0, refs[0], rows[0], j.element // n),
                                                      rows[0]))
    gamma: int256 = tensors._at(self._vector(j, desc, 1, refs[1], rows[1], n), rows[1], c)
    beta: int256 = tensors._at(self._vector(j, desc, 2, refs[2], rows[2], n), rows[2], c)
    return max(-ACT_MAX, min(ACT_MAX, trainmath._fdiv(2 * ds[c] * gamma + den, 2 * den) + beta))


@internal
@pure
def _norm_backward(j: tensors.Judging, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 3],
                   rows: DynArray[tensors.TensorRow, 3], c: uint256) -> int256:
    """dx[r, c] = (g - mean(g) - xhat mean(g xhat)) / sigma from row r of dz and of x, and gamma."""
    n: uint256 = tensors._last(desc.dims)
    r: uint256 = j.element // n
    assert tensors._same(rows[0].dims, desc.dims) and tensors._same(rows[1].dims, desc.dims), \
        "referee: the inputs' shapes are not the output's"
    dz: DynArray[int256, MAX_K] = trainmath._row(tensors._input_row(j, desc, 0, refs[0], rows[0], r), rows[0])
    gamma: DynArray[int256, MAX_K] = trainmath._row(self._vector(j, desc, 2, refs[2], rows[2], n), rows[2])
    ds: DynArray[int256, MAX_K] = []
    e: int256 = 0
    den: int256 = 0
    ds, e, den = trainmath._norm_stats(trainmath._row(tensors._input_row(j, desc, 1, refs[1], rows[1], r), rows[1]))
    hh: int256 = convert(n, int256)
    sum_g: int256 = 0
    sum_gx: int256 = 0
    gc: int256 = 0
    xc: int256 = 0
    d2: int256 = 2 * den
    for i: uint256 in range(n, bound=MAX_K):  # round_shift inline (a call per value costs more than it)
        g: int256 = (dz[i] * gamma[i] + (1 << (NORM_SHIFT_U - 1))) >> NORM_SHIFT_U
        num: int256 = (ds[i] << (NORM_SHIFT_U + 1)) + den
        xh: int256 = num // d2
        if num % d2 != 0 and num < 0:
            xh -= 1
        sum_g += g
        sum_gx += g * xh
        if i == c:
            gc = g
            xc = xh
    m1: int256 = trainmath._fdiv(2 * sum_g + hh, 2 * hh)
    m2: int256 = trainmath._round_shift(sum_gx, hh, -ACT_FRAC)
    return trainmath._round_shift(gc - m1 - trainmath._round_shift(xc * m2, 1, -ACT_FRAC), den, NORM_SHIFT - e)


@external
def judge(order_id: uint256, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 3],
          rows: DynArray[tensors.TensorRow, 3], table: tensors.TensorRow):
    """
    @notice Judge the located element of a tiny-GPT training record: `refs` and `rows` prove the
            rows of its input records the op reads, in the descriptor's input order
            (`veracity/verify/game.py: step_rows` names them).
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param refs The input records' links to the agreed chain value, in input order.
    @param rows The rows of the input records the op reads, with their chunk proofs.
    @param table Unused (the TrainAttentionReferee's table row).
    """
    j: tensors.Judging = self._judging(order_id, desc)
    assert len(refs) == len(rows) and len(rows) >= len(desc.inputs), "referee: give a row of every input"
    k: uint8 = desc.kind
    n: uint256 = tensors._last(desc.dims)
    c: uint256 = j.element % n
    y: int256 = 0
    if k == K_RESCALE:
        y = trainmath._round_shift(tensors._input_element(j, desc, 0, refs[0], rows[0]), 1, desc.params[0])
    elif k == K_SUM:
        y = tensors._input_element(j, desc, 0, refs[0], rows[0]) + tensors._input_element(j, desc, 1, refs[1], rows[1])
    elif k == K_LN_REC:
        y = self._norm(j, desc, refs, rows, c)
    elif k == K_XHAT:
        assert tensors._same(rows[0].dims, desc.dims), "referee: the input's shape is not the output's"
        ds: DynArray[int256, MAX_K] = []
        e: int256 = 0
        den: int256 = 0
        ds, e, den = trainmath._norm_stats(trainmath._row(tensors._input_row(j, desc, 0, refs[0], rows[0], j.element // n),
                                                          rows[0]))
        y = trainmath._round_shift(ds[c], den, NORM_SHIFT)
    elif k == K_LN_BWD:
        y = self._norm_backward(j, desc, refs, rows, c)
    elif k == K_COL_DOT:  # y[c] from row c of two [C, tokens] tensors
        y = trainmath._dot(trainmath._row(tensors._input_row(j, desc, 0, refs[0], rows[0], j.element), rows[0]),
                           trainmath._row(tensors._input_row(j, desc, 1, refs[1], rows[1], j.element), rows[1]))
        y = trainmath._round_shift(trainmath._round_shift(y, 1, desc.params[0]), 1, desc.params[1])
    elif k == K_SCATTER_ADD:  # g[v, c]: row c of the transposed gradient [C, N], the index [N]
        m: uint256 = tensors._last(rows[0].dims)
        g: DynArray[int256, MAX_K] = trainmath._row(tensors._input_row(j, desc, 0, refs[0], rows[0], c), rows[0])
        index: DynArray[int256, MAX_K] = trainmath._row(self._vector(j, desc, 1, refs[1], rows[1], m), rows[1])
        v: int256 = convert(j.element // n, int256)
        for i: uint256 in range(m, bound=MAX_K):
            if index[i] == v:
                y += g[i]
    else:
        raise "referee: not a tiny-GPT training record"
    extcall train.relay(order_id, y)
