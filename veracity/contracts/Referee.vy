# pragma version ~=0.4.3
"""
@title Referee
@notice Phase three of a dispute, for the elementwise, row, layout and pooling ops: recompute
        the one element the game located, from its inputs (rows of agreed earlier records,
        proven through a trace root, and rows of the record's constants, proven against the
        digests in its descriptor), with `OneStep`, and hand the value to `Disputes`, which
        settles. Anyone may call: the verdict depends only on what is proven. `AttentionReferee`
        judges the attention and generation ops; they are two contracts for the size limit.
"""

from interfaces import IDisputes
from interfaces import IOneStep
import tensors

ACT_MAX: constant(int256) = 2**23 - 1
K_LINEAR: constant(uint8) = 2  # op kinds (`veracity/exact/program.py`)
K_ADD: constant(uint8) = 3
K_RELU: constant(uint8) = 4
K_GELU: constant(uint8) = 5
K_SILU: constant(uint8) = 6
K_LAYERNORM: constant(uint8) = 7
K_RMSNORM: constant(uint8) = 8
K_EMBEDDING: constant(uint8) = 9
K_MEAN_POOL: constant(uint8) = 14
K_L2: constant(uint8) = 15
K_TRANSPOSE: constant(uint8) = 16

onestep: public(immutable(IOneStep))
deployer: immutable(address)
disputes: public(IDisputes)


@deploy
def __init__(onestep_: IOneStep):
    onestep = onestep_
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


@internal
@view
def _judging(order_id: uint256, desc: tensors.OpDesc, kind: uint8) -> tensors.Judging:
    h: bytes32 = empty(bytes32)
    record: uint256 = 0
    element: uint256 = 0
    agreed: bytes32 = empty(bytes32)
    h, record, element, agreed = staticcall self.disputes.judging(order_id)
    assert keccak256(abi_encode(desc)) == h, "referee: that is not the record's descriptor"
    assert desc.kind == kind, "referee: the record is of another kind"
    return tensors.Judging(record=record, element=element, agreed=agreed)


@internal
def _judged(order_id: uint256, recomputed: int256):
    extcall self.disputes.judged(order_id, recomputed)


@internal
@view
def _input_element(j: tensors.Judging, desc: tensors.OpDesc, which: uint256, ref: tensors.RecordRef,
                   t: tensors.TensorRow) -> int256:
    """Element `j.element` of input `which`, a record of the output's shape."""
    assert tensors._same(t.dims, desc.dims), "referee: the input's shape is not the output's"
    n: uint256 = tensors._last(desc.dims)
    assert t.row == j.element // n, "referee: that is not the element's row"
    return tensors._at(tensors._record_row(j, ref, desc.inputs[which], t), t, j.element % n)


@external
def judge_linear(order_id: uint256, desc: tensors.OpDesc, x_ref: tensors.RecordRef, x: tensors.TensorRow,
                 w: tensors.TensorRow, req: tensors.TensorRow, smooth: tensors.TensorRow):
    """
    @notice y[r, c] of a linear: row r of its input record, row c of its int8 weights and of its
            (mult, shift, bias); for a smoothed linear, its multipliers (`smooth`, row 0).
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param x_ref The input record's link to the agreed chain value.
    @param x Row r of the input, with its chunk proof.
    @param w Row c of the weights, with its chunk proof.
    @param req Row c of (mult, shift, bias), with its chunk proof.
    @param smooth Row 0 of the smoothing multipliers, with its chunk proof (ignored for a plain linear).
    """
    j: tensors.Judging = self._judging(order_id, desc, K_LINEAR)
    n: uint256 = tensors._last(desc.dims)
    r: uint256 = j.element // n
    c: uint256 = j.element % n
    assert x.row == r and w.row == c and req.row == c, "referee: those are not the element's rows"
    assert w.dtype == 1 and req.dtype == 4, "referee: wrong constant dtypes"
    xrow: Bytes[tensors.ROW_BYTES] = tensors._record_row(j, x_ref, desc.inputs[0], x)
    wrow: Bytes[tensors.ROW_BYTES] = tensors._row(w, desc.consts[0])
    rq: Bytes[tensors.ROW_BYTES] = tensors._row(req, desc.consts[1])
    k: uint256 = w.dims[1]
    assert tensors._last(x.dims) == k, "referee: the input's width is not the weights'"
    srow: Bytes[tensors.ROW_BYTES] = b""
    if len(desc.consts) == 3:
        assert smooth.row == 0 and smooth.dtype == 4, "referee: the smoothing multipliers are row 0, int32"
        srow = tensors._row(smooth, desc.consts[2])
    self._judged(order_id, staticcall onestep.linear(xrow, tensors._itemsize(x.dtype), slice(wrow, 0, k + 32), srow, k,
                                                     tensors._at(rq, req, 0), tensors._at(rq, req, 1),
                                                     tensors._at(rq, req, 2), desc.params[0]))


@external
def judge_relu(order_id: uint256, desc: tensors.OpDesc, x_ref: tensors.RecordRef, x: tensors.TensorRow):
    """
    @notice y = max(x, 0) from the input record's element.
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param x_ref The input record's link to the agreed chain value.
    @param x The element's row of the input, with its chunk proof.
    """
    j: tensors.Judging = self._judging(order_id, desc, K_RELU)
    self._judged(order_id, max(self._input_element(j, desc, 0, x_ref, x), 0))


@external
def judge_add(order_id: uint256, desc: tensors.OpDesc, a_ref: tensors.RecordRef, a: tensors.TensorRow,
              b_ref: tensors.RecordRef, b: tensors.TensorRow):
    """
    @notice y = clip(a + b) from the two input records' elements.
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param a_ref The first input record's link to the agreed chain value.
    @param a The element's row of a, with its chunk proof.
    @param b_ref The second input record's link to the agreed chain value.
    @param b The element's row of b, with its chunk proof.
    """
    j: tensors.Judging = self._judging(order_id, desc, K_ADD)
    v: int256 = self._input_element(j, desc, 0, a_ref, a) + self._input_element(j, desc, 1, b_ref, b)
    self._judged(order_id, max(-ACT_MAX, min(ACT_MAX, v)))


@external
def judge_lut(order_id: uint256, desc: tensors.OpDesc, x_ref: tensors.RecordRef, x: tensors.TensorRow,
              table: tensors.TensorRow):
    """
    @notice A table op (GELU, SiLU): the entry at x + 2**15 of the table ([256, 256] int16).
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param x_ref The input record's link to the agreed chain value.
    @param x The element's row of the input, with its chunk proof.
    @param table The entry's row of the table, with its chunk proof.
    """
    j: tensors.Judging = self._judging(order_id, desc, desc.kind)
    assert desc.kind == K_GELU or desc.kind == K_SILU, "referee: not a table op"
    index: uint256 = convert(self._input_element(j, desc, 0, x_ref, x) + 2**15, uint256)
    assert table.row == index // 256, "referee: that is not the entry's row of the table"
    self._judged(order_id, tensors._at(tensors._row(table, desc.consts[0]), table, index % 256))


@external
def judge_norm(order_id: uint256, desc: tensors.OpDesc, x_ref: tensors.RecordRef, x: tensors.TensorRow,
               affine: tensors.TensorRow):
    """
    @notice LayerNorm or RMSNorm y[r, c]: row r of the input record, (gamma, beta) of channel c.
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param x_ref The input record's link to the agreed chain value.
    @param x Row r of the input, with its chunk proof.
    @param affine Row c of (gamma, beta), with its chunk proof.
    """
    j: tensors.Judging = self._judging(order_id, desc, desc.kind)
    assert desc.kind == K_LAYERNORM or desc.kind == K_RMSNORM, "referee: not a norm"
    assert tensors._same(x.dims, desc.dims), "referee: the input's shape is not the output's"
    n: uint256 = tensors._last(desc.dims)
    c: uint256 = j.element % n
    assert x.row == j.element // n and affine.row == c, "referee: those are not the element's rows"
    xrow: Bytes[tensors.ROW_BYTES] = tensors._record_row(j, x_ref, desc.inputs[0], x)
    ga: Bytes[tensors.ROW_BYTES] = tensors._row(affine, desc.consts[0])
    self._judged(order_id, staticcall onestep.norm(xrow, tensors._itemsize(x.dtype), n, c, tensors._at(ga, affine, 0),
                                                   tensors._at(ga, affine, 1), desc.kind == K_LAYERNORM))


@external
def judge_embedding(order_id: uint256, desc: tensors.OpDesc, ids_ref: tensors.RecordRef, ids: tensors.TensorRow,
                    table: tensors.TensorRow):
    """
    @notice y[p, c] = table[ids[p], c]: the token id from the ids record, its row of the table.
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param ids_ref The ids record's link to the agreed chain value.
    @param ids The token's row of the ids, with its chunk proof.
    @param table The token's row of the table, with its chunk proof.
    """
    j: tensors.Judging = self._judging(order_id, desc, K_EMBEDDING)
    n: uint256 = tensors._last(desc.dims)
    p: uint256 = j.element // n
    t: uint256 = tensors._last(ids.dims)
    assert ids.row == p // t, "referee: that is not the token's row of the ids"
    token: int256 = tensors._at(tensors._record_row(j, ids_ref, desc.inputs[0], ids), ids, p % t)
    row: Bytes[tensors.ROW_BYTES] = tensors._row(table, desc.consts[0])
    self._judged(order_id, staticcall onestep.embedding(row, tensors._itemsize(table.dtype), table.row,
                                                        convert(token, uint256), j.element % n))


@external
def judge_l2_normalize(order_id: uint256, desc: tensors.OpDesc, x_ref: tensors.RecordRef, x: tensors.TensorRow):
    """
    @notice y[r, c] = x[r, c] / |x[r]| from row r of the input record.
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param x_ref The input record's link to the agreed chain value.
    @param x Row r of the input, with its chunk proof.
    """
    j: tensors.Judging = self._judging(order_id, desc, K_L2)
    assert tensors._same(x.dims, desc.dims), "referee: the input's shape is not the output's"
    n: uint256 = tensors._last(desc.dims)
    assert x.row == j.element // n, "referee: that is not the element's row"
    xrow: Bytes[tensors.ROW_BYTES] = tensors._record_row(j, x_ref, desc.inputs[0], x)
    self._judged(order_id, staticcall onestep.l2_normalize(xrow, tensors._itemsize(x.dtype), n, j.element % n))


@external
def judge_transpose(order_id: uint256, desc: tensors.OpDesc, x_ref: tensors.RecordRef, x: tensors.TensorRow):
    """
    @notice y[..., i, j] = x[..., j, i] (a layout record): one element of one row of the input.
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param x_ref The input record's link to the agreed chain value.
    @param x The element's row of the input, with its chunk proof.
    """
    j: tensors.Judging = self._judging(order_id, desc, K_TRANSPOSE)
    nd: uint256 = len(desc.dims)
    p: uint256 = desc.dims[nd - 2]
    q: uint256 = desc.dims[nd - 1]
    assert len(x.dims) == nd and x.dims[nd - 2] == q and x.dims[nd - 1] == p, "referee: not the transposed shape"
    lead: uint256 = j.element // (p * q)
    i: uint256 = (j.element // q) % p
    assert x.row == lead * q + j.element % q, "referee: that is not the element's row"
    self._judged(order_id, tensors._at(tensors._record_row(j, x_ref, desc.inputs[0], x), x, i))


@external
def judge_mean_pool(order_id: uint256, desc: tensors.OpDesc, ht_ref: tensors.RecordRef, ht: tensors.TensorRow,
                    mask_ref: tensors.RecordRef, mask: tensors.TensorRow):
    """
    @notice y[b, c]: row (b, c) of h transposed (feature c over the tokens) and the mask of row b.
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param ht_ref The h transposed record's link to the agreed chain value.
    @param ht Row (b, c) of h transposed, with its chunk proof.
    @param mask_ref The mask record's link to the agreed chain value.
    @param mask Row b of the mask, with its chunk proof.
    """
    jd: tensors.Judging = self._judging(order_id, desc, K_MEAN_POOL)
    h: uint256 = tensors._last(desc.dims)
    b: uint256 = jd.element // h
    assert ht.row == jd.element and mask.row == b, "referee: those are not the element's rows"
    hrow: Bytes[tensors.ROW_BYTES] = tensors._record_row(jd, ht_ref, desc.inputs[0], ht)
    mrow: Bytes[tensors.ROW_BYTES] = tensors._record_row(jd, mask_ref, desc.inputs[1], mask)
    self._judged(order_id, staticcall onestep.mean_pool(hrow, tensors._itemsize(ht.dtype), mrow,
                                                        tensors._itemsize(mask.dtype), tensors._last(ht.dims)))
