# pragma version ~=0.4.3
# pragma optimize codesize
"""
@title TrainReferee
@notice Phase three of a dispute over a training job (`veracity/training/mlp.py`, the digits MLP's
        optimizer step with every op a record): recompute the one element the game located from
        rows of agreed earlier records (and, for the exp rows, a row of the exp table named by
        its digest), and hand the value to `Disputes`. The formulas are
        `veracity/verify/onestep.py`'s, in integers: the per-row int8 GEMM, the softmax's exp
        rows and the loss gradient, the gradient's row sums, the ReLU mask, and the optimizer's
        moment, second moment and weight updates (SGD, momentum, Adam with an integer square root).
"""

from interfaces import IDisputes
import tensors
import trainmath

K_QMM: constant(uint8) = 22  # op kinds (`veracity/exact/program.py`)
K_EXP_ROWS: constant(uint8) = 23
K_LOSS_GRAD: constant(uint8) = 24
K_ROW_SUM: constant(uint8) = 25
K_RELU_MASK: constant(uint8) = 26
K_MOMENT: constant(uint8) = 27
K_SECOND: constant(uint8) = 28
K_WEIGHT: constant(uint8) = 29

ACT_FRAC: constant(int256) = 12
W_FRAC: constant(int256) = 20
LOG2E_16: constant(int256) = 94548
EXP_SHIFT: constant(uint256) = 20
EXP_SIZE: constant(int256) = 6144


deployer: immutable(address)
disputes: public(IDisputes)
relays: public(address[3])  # the TrainNormReferee, TrainAttentionReferee and FinetuneReferee, whose verdicts this one passes on


@deploy
def __init__():
    deployer = msg.sender


@external
def set_disputes(disputes_: IDisputes):
    """
    @notice Set once, by the deployer, to the Disputes contract this referee judges for.
    @param disputes_ The Disputes contract.
    """
    assert msg.sender == deployer, "referee: only the deployer sets the disputes contract"
    assert self.disputes.address == empty(address), "referee: the disputes contract is already set"
    self.disputes = disputes_


@external
def set_relays(relays_: address[3]):
    """
    @notice Set once, by the deployer, to the referees of the tiny GPT's and the fine-tune's steps
            (the TrainNormReferee, the TrainAttentionReferee and the FinetuneReferee), whose
            verdicts `relay` passes on to Disputes (which takes verdicts from its five referees only).
    @param relays_ The three referees.
    """
    assert msg.sender == deployer, "referee: only the deployer sets the relays"
    assert self.relays[0] == empty(address), "referee: the relays are already set"
    for a: address in relays_:
        assert a != empty(address), "referee: a relay is the zero address"
    self.relays = relays_


@external
def relay(order_id: uint256, recomputed: int256):
    """
    @notice A relay referee's verdict, passed on to Disputes.
    @param order_id The disputed order's id.
    @param recomputed The element's recomputed value.
    """
    assert msg.sender in self.relays and msg.sender != empty(address), "referee: only the relays pass on verdicts"
    extcall self.disputes.judged(order_id, recomputed)


@internal
@view
def _judging(order_id: uint256, desc: tensors.OpDesc) -> tensors.Judging:
    h: bytes32 = empty(bytes32)
    record: uint256 = 0
    element: uint256 = 0
    agreed: bytes32 = empty(bytes32)
    h, record, element, agreed = staticcall self.disputes.judging(order_id)
    assert keccak256(abi_encode(desc)) == h, "referee: that is not the record's descriptor"
    return tensors.Judging(record=record, element=element, agreed=agreed)


@internal
@pure
def _element(j: tensors.Judging, desc: tensors.OpDesc, which: uint256, ref: tensors.RecordRef,
             t: tensors.TensorRow) -> int256:
    """Element `j.element` of input `which`, a record of the output's shape."""
    assert tensors._same(t.dims, desc.dims), "referee: the input's shape is not the output's"
    n: uint256 = tensors._last(desc.dims)
    assert t.row == j.element // n, "referee: that is not the element's row"
    return tensors._at(tensors._record_row(j, ref, desc.inputs[which], t), t, j.element % n)


@internal
@view
def _qmm(j: tensors.Judging, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 3],
         rows: DynArray[tensors.TensorRow, 3]) -> int256:
    """y[r, c] = round_shift(dot(q(x_r), q(w_c)) * ax * aw, 127**2, ex + ew + params[0])
    (+ b[c] >> params[1] when the record reads a bias): row r of x, row c of w [N, K], or,
    batched (w [G, N, K], y [G, M, N]), row N g + c of w."""
    n: uint256 = tensors._last(desc.dims)
    w_row: uint256 = j.element % n
    if len(rows[1].dims) == 3:
        w_row += j.element // (desc.dims[len(desc.dims) - 2] * n) * n
    assert rows[0].row == j.element // n and rows[1].row == w_row, "referee: those are not the element's rows"
    y: int256 = trainmath._qdot(trainmath._row(tensors._record_row(j, refs[0], desc.inputs[0], rows[0]), rows[0]),
                                trainmath._row(tensors._record_row(j, refs[1], desc.inputs[1], rows[1]), rows[1]),
                                desc.params[0])
    if len(desc.inputs) == 3:
        b: tensors.TensorRow = rows[2]
        assert b.row == 0 and len(b.dims) == 1, "referee: the bias is one row"
        y += tensors._at(tensors._record_row(j, refs[2], desc.inputs[2], b), b, j.element % n) >> \
            convert(desc.params[1], uint256)
    return y


@internal
@view
def _exp_rows(j: tensors.Judging, desc: tensors.OpDesc, ref: tensors.RecordRef, z: tensors.TensorRow,
              table: tensors.TensorRow) -> int256:
    """p[r, c] = table[min(((max(z_r) - z[r, c]) * log2(e)) >> 20, 6143)]."""
    assert tensors._same(z.dims, desc.dims), "referee: the input's shape is not the output's"
    n: uint256 = tensors._last(desc.dims)
    assert z.row == j.element // n, "referee: that is not the element's row"
    row: DynArray[int256, trainmath.MAX_K] = trainmath._row(tensors._record_row(j, ref, desc.inputs[0], z), z)
    top: int256 = min_value(int256)
    for v: int256 in row:
        top = max(top, v)
    u: int256 = min(((top - row[j.element % n]) * LOG2E_16) >> EXP_SHIFT, EXP_SIZE - 1)
    entry: uint256 = convert(u, uint256)
    assert table.row == entry // 256 and tensors._last(table.dims) == 256, "referee: not the entry's row of the table"
    return tensors._at(tensors._row(table, desc.consts[0]), table, entry % 256)


@internal
@view
def _loss_grad(j: tensors.Judging, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 3],
               rows: DynArray[tensors.TensorRow, 3]) -> int256:
    """g[r, c] = round_shift(p[r, c], sum(p_r), 12) - (c == label_r) * 2**12."""
    p: tensors.TensorRow = rows[0]
    y: tensors.TensorRow = rows[1]
    assert tensors._same(p.dims, desc.dims), "referee: the input's shape is not the output's"
    n: uint256 = tensors._last(desc.dims)
    r: uint256 = j.element // n
    assert p.row == r and y.row == 0 and len(y.dims) == 1, "referee: those are not the element's rows"
    row: DynArray[int256, trainmath.MAX_K] = trainmath._row(tensors._record_row(j, refs[0], desc.inputs[0], p), p)
    g: int256 = trainmath._round_shift(row[j.element % n], trainmath._sum(row), ACT_FRAC)
    if tensors._at(tensors._record_row(j, refs[1], desc.inputs[1], y), y, r) == convert(j.element % n, int256):
        g -= 4096  # 2**ACT_FRAC
    return g


@internal
@view
def _row_sum(j: tensors.Judging, desc: tensors.OpDesc, ref: tensors.RecordRef, x: tensors.TensorRow) -> int256:
    """y[c] = sum(x[c, :]) << params[0] (a bias gradient: the loss gradient's column c)."""
    assert x.row == j.element, "referee: that is not the element's row"
    return trainmath._sum(trainmath._row(tensors._record_row(j, ref, desc.inputs[0], x), x)) << \
        convert(desc.params[0], uint256)


@internal
@pure
def _mean(g: int256, grad: int256) -> int256:
    """The summed gradient's batch mean, clipped (`grad` packs batch | clip << 16)."""
    limit: int256 = grad >> 16
    return max(-limit, min(limit, trainmath._round_shift(g, grad & 65535, 0)))


@internal
@pure
def _update(kind: uint8, params: DynArray[int256, 2], a: int256, b: int256, c: int256) -> int256:
    """The optimizer's records (params[0]: optimizer | rate << 8). A moment from (moment, summed
    gradient; params[1]: batch | clip << 16): momentum ((v mu) >> 10) + g, Adam's
    (v b1 + g (1024 - b1)) >> 10; the second moment (s b2 + g^2 (1024 - b2)) >> 10 (other
    optimizers keep it); the tensor from (w, m, s; params[1]: eps): w - (m lr) >> 16, or Adam's
    w - round_shift(m lr, (isqrt(s) + eps) << 16, 20)."""
    code: int256 = params[0] & 255
    rate: int256 = params[0] >> 8
    if kind == K_WEIGHT:
        if code == 3:
            root: int256 = convert(isqrt(convert(c, uint256)), int256)
            return a - trainmath._round_shift(b * rate, (root + params[1]) << 16, W_FRAC)
        return a - ((b * rate) >> 16)
    g: int256 = self._mean(b, params[1])
    if kind == K_MOMENT and code == 3:
        return (a * rate + g * (1024 - rate)) >> 10
    if kind == K_MOMENT:
        return ((a * rate) >> 10) + g
    if code == 3:
        return (a * rate + g * g * (1024 - rate)) >> 10
    return a


@external
def judge(order_id: uint256, desc: tensors.OpDesc, refs: DynArray[tensors.RecordRef, 3],
          rows: DynArray[tensors.TensorRow, 3], table: tensors.TensorRow):
    """
    @notice Judge the located element of a training record: `refs` and `rows` prove the rows of
            its input records the op reads (in the descriptor's input order; for a GEMM, row r of
            x, row c of w, then the bias), `table` the exp table's row for the exp rows.
            Elementwise ops (the ReLU mask, the updates) read the element's row of each input.
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param refs The input records' links to the agreed chain value, in input order.
    @param rows The rows of the input records the op reads, with their chunk proofs.
    @param table The exp table's row, with its chunk proof (exp rows only).
    """
    j: tensors.Judging = self._judging(order_id, desc)
    assert len(refs) == len(rows) and len(rows) >= len(desc.inputs), "referee: give a row of every input"
    k: uint8 = desc.kind
    y: int256 = 0
    if k == K_QMM:
        y = self._qmm(j, desc, refs, rows)
    elif k == K_EXP_ROWS:
        y = self._exp_rows(j, desc, refs[0], rows[0], table)
    elif k == K_LOSS_GRAD:
        y = self._loss_grad(j, desc, refs, rows)
    elif k == K_ROW_SUM:
        y = self._row_sum(j, desc, refs[0], rows[0])
    elif k == K_RELU_MASK:
        y = self._element(j, desc, 0, refs[0], rows[0])
        if self._element(j, desc, 1, refs[1], rows[1]) <= 0:
            y = 0
    elif k == K_MOMENT or k == K_SECOND or k == K_WEIGHT:
        v: int256[3] = empty(int256[3])
        for i: uint256 in range(3):
            if i < len(desc.inputs):
                v[i] = self._element(j, desc, i, refs[i], rows[i])
        y = self._update(k, desc.params, v[0], v[1], v[2])
    else:
        raise "referee: not a training record"
    extcall self.disputes.judged(order_id, y)
