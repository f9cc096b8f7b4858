# pragma version ~=0.4.3
"""
@title Referee
@notice Phase three of a dispute: recompute the one element the game located, from its inputs
        (rows of agreed earlier records, proven through the provider's trace root, and rows of
        the record's constants, proven against the digests in its descriptor), with `OneStep`,
        and hand the value to `Disputes`, which settles. Anyone may call: the verdict depends
        only on what is proven. Kept apart from `Disputes` for the contract size limit.
"""

import tensors

interface IMarket:
    def orders(order_id: uint256) -> Order: view

interface IDisputes:
    def judging(order_id: uint256) -> (bytes32, uint256, uint256, bytes32): view
    def judged(order_id: uint256, recomputed: int256): nonpayable

interface IOneStep:
    def linear(x: Bytes[tensors.ROW_BYTES], xw: uint256, weight: Bytes[tensors.ROW_BYTES],
               smooth: Bytes[tensors.ROW_BYTES], n: uint256, mult: int256, shift_: int256, bias: int256,
               out_max: int256) -> int256: pure

struct Order:
    client: address
    spec_cid: bytes32
    kind: uint8
    model_id: bytes32
    max_price: uint256
    deadline: uint256
    challenge_window: uint256
    spot_check_bps: uint256
    state: uint8
    provider: address
    price: uint256
    collateral: uint256
    output_cid: bytes32
    trace_root: bytes32
    trace_length: uint256
    committed_at: uint256

struct Judging:
    record: uint256
    element: uint256
    challenger_root: bytes32

ACT_MAX: constant(int256) = 2**23 - 1
K_LINEAR: constant(uint8) = 2  # op kinds (`veracity/exact/program.py`)
K_ADD: constant(uint8) = 3
K_RELU: constant(uint8) = 4

market: public(immutable(IMarket))
onestep: public(immutable(IOneStep))
disputes: public(IDisputes)


@deploy
def __init__(market_: IMarket, onestep_: IOneStep):
    market = market_
    onestep = onestep_


@external
def set_disputes(disputes_: IDisputes):
    """
    @notice Set once, at deployment, to the Disputes contract this Referee judges for.
    """
    assert self.disputes.address == empty(address), "referee: the disputes contract is already set"
    self.disputes = disputes_


@internal
@view
def _judging(order_id: uint256, desc: tensors.OpDesc, kind: uint8) -> Judging:
    h: bytes32 = empty(bytes32)
    record: uint256 = 0
    element: uint256 = 0
    root: bytes32 = empty(bytes32)
    h, record, element, root = staticcall self.disputes.judging(order_id)
    assert keccak256(abi_encode(desc)) == h, "referee: that is not the record's descriptor"
    assert desc.kind == kind, "referee: the record is of another kind"
    return Judging(record=record, element=element, challenger_root=root)


@internal
def _judged(order_id: uint256, recomputed: int256):
    extcall self.disputes.judged(order_id, recomputed)


@internal
@view
def _row(t: tensors.TensorRow, digest: bytes32) -> Bytes[tensors.ROW_BYTES]:
    """Row `t.row` of the tensor with `digest`, padded for OneStep."""
    assert tensors._digest(t.dtype, t.dims, t.chunk_root) == digest, "referee: that tensor is not the one named"
    row: uint256 = 0
    rows: uint256 = 0
    per: uint256 = 0
    chunks: uint256 = 0
    row, rows, per, chunks = tensors._layout(t.dtype, t.dims)
    assert t.row < rows, "referee: no such row"
    assert tensors._proves(t.chunk_root, sha256(concat(b"\x03", t.chunk)), t.row // per, chunks, t.chunk_proof), \
        "referee: the chunk is not in the tensor"
    return concat(slice(t.chunk, (t.row % per) * row, row), empty(bytes32))


@internal
@view
def _record_row(order_id: uint256, j: Judging, ref: tensors.RecordRef, index: uint256, t: tensors.TensorRow) -> Bytes[tensors.ROW_BYTES]:
    """Row of an agreed earlier record (`index`), proven through either party's trace root: both
    hold the same chain values before the differing record, so either proof shows the record."""
    o: Order = staticcall market.orders(order_id)
    assert ref.index == index and index < j.record, "referee: an input must be an earlier, agreed record"
    digest: bytes32 = tensors._digest(t.dtype, t.dims, t.chunk_root)
    link: bytes32 = sha256(concat(b"\x02", ref.prev, tensors._leaf(ref.step, ref.op, digest)))
    assert tensors._proves(o.trace_root, link, index, o.trace_length, ref.chain_proof) or \
        tensors._proves(j.challenger_root, link, index, o.trace_length, ref.chain_proof), \
        "referee: that record is not in the committed trace"
    return self._row(t, digest)


@external
def judge_linear(order_id: uint256, desc: tensors.OpDesc, x_ref: tensors.RecordRef, x: tensors.TensorRow, w: tensors.TensorRow, req: tensors.TensorRow):
    """
    @notice Judge y[r, c] of a linear: row r of its input record, row c of its int8 weights and
            of its (mult, shift, bias) constants.
    """
    j: Judging = self._judging(order_id, desc, K_LINEAR)
    n: uint256 = desc.dims[len(desc.dims) - 1]
    r: uint256 = j.element // n
    c: uint256 = j.element % n
    assert x.row == r and w.row == c and req.row == c, "referee: those are not the element's rows"
    assert w.dtype == 1 and req.dtype == 4, "referee: wrong constant dtypes"
    xrow: Bytes[tensors.ROW_BYTES] = self._record_row(order_id, j, x_ref, desc.inputs[0], x)
    wrow: Bytes[tensors.ROW_BYTES] = self._row(w, desc.consts[0])
    rq: Bytes[tensors.ROW_BYTES] = self._row(req, desc.consts[1])
    k: uint256 = w.dims[1]
    assert x.dims[len(x.dims) - 1] == k, "referee: the input's width is not the weights'"
    y: int256 = staticcall onestep.linear(xrow, tensors._itemsize(x.dtype), slice(wrow, 0, k + 32), b"", k,
                                              tensors._element(rq, 0, 4, True), tensors._element(rq, 4, 4, True),
                                              tensors._element(rq, 8, 4, True), desc.params[0])
    self._judged(order_id, y)


@internal
@view
def _same_shape_element(order_id: uint256, j: Judging, desc: tensors.OpDesc, which: uint256, ref: tensors.RecordRef,
                        t: tensors.TensorRow) -> int256:
    """Element `j.element` of input `which`, a record of the output's shape."""
    assert keccak256(abi_encode(t.dims)) == keccak256(abi_encode(desc.dims)), "referee: the input's shape is not the output's"
    n: uint256 = desc.dims[len(desc.dims) - 1]
    assert t.row == j.element // n, "referee: that is not the element's row"
    row: Bytes[tensors.ROW_BYTES] = self._record_row(order_id, j, ref, desc.inputs[which], t)
    w: uint256 = tensors._itemsize(t.dtype)
    return tensors._element(row, (j.element % n) * w, w, t.dtype != 2)


@external
def judge_relu(order_id: uint256, desc: tensors.OpDesc, x_ref: tensors.RecordRef, x: tensors.TensorRow):
    """
    @notice Judge y = max(x, 0) from the input record's element.
    """
    j: Judging = self._judging(order_id, desc, K_RELU)
    self._judged(order_id, max(self._same_shape_element(order_id, j, desc, 0, x_ref, x), 0))


@external
def judge_add(order_id: uint256, desc: tensors.OpDesc, a_ref: tensors.RecordRef, a: tensors.TensorRow, b_ref: tensors.RecordRef, b: tensors.TensorRow):
    """
    @notice Judge y = clip(a + b) from the two input records' elements.
    """
    j: Judging = self._judging(order_id, desc, K_ADD)
    v: int256 = self._same_shape_element(order_id, j, desc, 0, a_ref, a) + \
        self._same_shape_element(order_id, j, desc, 1, b_ref, b)
    self._judged(order_id, max(-ACT_MAX, min(ACT_MAX, v)))

