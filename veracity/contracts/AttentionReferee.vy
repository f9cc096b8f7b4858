# pragma version ~=0.4.3
"""
@title AttentionReferee
@notice Phase three of a dispute, for the attention and generation ops (`Referee` has the
        others): scores from a
        query row and a key row (slices of the fused projection record) and the key mask,
        probabilities from a row of scores and the exp2 table, their row sums, V transposed per
        head, the context from a row of probabilities, its sum, a row of V transposed and the
        mask; and for generation, the next
        token (the argmax of a row of logits), the ids grown by it, the last position's row.
"""

from interfaces import IDisputes
from interfaces import IOneStep
import tensors

K_SCORES: constant(uint8) = 10  # op kinds (`veracity/exact/program.py`)
K_PROBS: constant(uint8) = 11
K_PROBSUM: constant(uint8) = 12
K_CONTEXT: constant(uint8) = 13
K_VT: constant(uint8) = 17
K_ARGMAX: constant(uint8) = 18
K_APPEND: constant(uint8) = 19
K_SELECT_LAST: constant(uint8) = 20
MAX_ROW: constant(uint256) = 2080

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
@pure
def _head(qkv: tensors.TensorRow, heads: int256) -> (uint256, uint256):
    """(H, head width) of a fused [B, T, 3H] projection."""
    h: uint256 = tensors._last(qkv.dims) // 3
    return h, h // convert(heads, uint256)


@external
def judge_scores(order_id: uint256, desc: tensors.OpDesc, qkv_ref: tensors.RecordRef, q: tensors.TensorRow,
                 k: tensors.TensorRow, mask_ref: tensors.RecordRef, mask: tensors.TensorRow):
    """
    @notice z[b, head, i, j]: the head's query slice of row (b, i) and key slice of row (b, j) of
            the fused projection record, and mask[b, j].
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param qkv_ref The fused projection record's link to the agreed chain value.
    @param q Row (b, i) of the projection, with its chunk proof.
    @param k Row (b, j) of the projection, with its chunk proof.
    @param mask_ref The mask record's link to the agreed chain value.
    @param mask Row b of the mask, with its chunk proof.
    """
    jd: tensors.Judging = self._judging(order_id, desc, K_SCORES)
    t: uint256 = desc.dims[3]
    nh: uint256 = desc.dims[1]
    b: uint256 = jd.element // (nh * t * t)
    head: uint256 = (jd.element // (t * t)) % nh
    i: uint256 = (jd.element // t) % t
    j: uint256 = jd.element % t
    assert convert(desc.params[0], uint256) == nh and len(q.dims) == 3 and q.dims[1] == t, "referee: bad shapes"
    assert q.row == b * t + i and k.row == b * t + j and mask.row == b, "referee: those are not the element's rows"
    hsz: uint256 = 0
    dh: uint256 = 0
    hsz, dh = self._head(q, desc.params[0])
    qrow: Bytes[tensors.ROW_BYTES] = tensors._record_row(jd, qkv_ref, desc.inputs[0], q)
    krow: Bytes[tensors.ROW_BYTES] = tensors._record_row(jd, qkv_ref, desc.inputs[0], k)
    valid: int256 = tensors._at(tensors._record_row(jd, mask_ref, desc.inputs[1], mask), mask, j)
    w: uint256 = tensors._itemsize(q.dtype)
    self._judged(order_id, staticcall onestep.score(tensors._part(qrow, q, head * dh, dh),
                                                    tensors._part(krow, k, hsz + head * dh, dh), w, dh, i, j,
                                                    valid != 0, desc.params[1] != 0))


@external
def judge_probs(order_id: uint256, desc: tensors.OpDesc, z_ref: tensors.RecordRef, z: tensors.TensorRow,
                table: tensors.TensorRow, index: uint256):
    """
    @notice p[.., i, j]: row i of the scores and the exp2 table's entry `index` (OneStep checks
            that it is the entry the scores name).
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param z_ref The scores record's link to the agreed chain value.
    @param z Row i of the scores, with its chunk proof.
    @param table Row 0 of the exp2 table, with its chunk proof.
    @param index The table entry's index.
    """
    jd: tensors.Judging = self._judging(order_id, desc, K_PROBS)
    assert tensors._same(z.dims, desc.dims), "referee: the scores' shape is not the output's"
    n: uint256 = tensors._last(desc.dims)
    assert z.row == jd.element // n and table.row == 0, "referee: those are not the element's rows"
    zrow: Bytes[tensors.ROW_BYTES] = tensors._record_row(jd, z_ref, desc.inputs[0], z)
    entry: int256 = tensors._at(tensors._row(table, desc.consts[0]), table, index)
    self._judged(order_id, staticcall onestep.prob(zrow, tensors._itemsize(z.dtype), n, jd.element % n,
                                                   convert(index, int256), entry))


@external
def judge_probsum(order_id: uint256, desc: tensors.OpDesc, p_ref: tensors.RecordRef, p: tensors.TensorRow):
    """
    @notice s[.., i]: the sum of row i of the probabilities.
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param p_ref The probabilities record's link to the agreed chain value.
    @param p Row i of the probabilities, with its chunk proof.
    """
    jd: tensors.Judging = self._judging(order_id, desc, K_PROBSUM)
    assert p.row == jd.element and len(p.dims) == len(desc.dims) + 1, "referee: that is not the element's row"
    prow: Bytes[tensors.ROW_BYTES] = tensors._record_row(jd, p_ref, desc.inputs[0], p)
    self._judged(order_id, staticcall onestep.prob_sum(prow, tensors._itemsize(p.dtype), tensors._last(p.dims)))


@external
def judge_vt(order_id: uint256, desc: tensors.OpDesc, qkv_ref: tensors.RecordRef, v: tensors.TensorRow):
    """
    @notice vt[b, head, d, t] = v of token t, feature (head, d): an element of row (b, t) of the
            fused projection record.
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param qkv_ref The fused projection record's link to the agreed chain value.
    @param v Row (b, t) of the projection, with its chunk proof.
    """
    jd: tensors.Judging = self._judging(order_id, desc, K_VT)
    t: uint256 = desc.dims[3]
    dh: uint256 = desc.dims[2]
    nh: uint256 = desc.dims[1]
    b: uint256 = jd.element // (nh * dh * t)
    head: uint256 = (jd.element // (dh * t)) % nh
    d: uint256 = (jd.element // t) % dh
    assert convert(desc.params[0], uint256) == nh and v.row == b * t + jd.element % t, "referee: not the element's row"
    hsz: uint256 = 0
    w: uint256 = 0
    hsz, w = self._head(v, desc.params[0])
    assert w == dh, "referee: the heads' width is not the record's"
    row: Bytes[tensors.ROW_BYTES] = tensors._record_row(jd, qkv_ref, desc.inputs[0], v)
    self._judged(order_id, tensors._at(row, v, 2 * hsz + head * dh + d))


@external
def judge_context(order_id: uint256, desc: tensors.OpDesc, p_ref: tensors.RecordRef, p: tensors.TensorRow,
                  s_ref: tensors.RecordRef, s: tensors.TensorRow, vt_ref: tensors.RecordRef, vt: tensors.TensorRow,
                  mask_ref: tensors.RecordRef, mask: tensors.TensorRow):
    """
    @notice ctx[b, t, (head, d)]: row (b, head, t) of the probabilities, its sum, row (b, head, d)
            of V transposed, and the mask of batch row b (the heads merged back, [B, T, H]).
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param p_ref The probabilities record's link to the agreed chain value.
    @param p Row (b, head, t) of the probabilities, with its chunk proof.
    @param s_ref The row sums record's link to the agreed chain value.
    @param s Row (b, head) of their sums, with its chunk proof.
    @param vt_ref The V transposed record's link to the agreed chain value.
    @param vt Row (b, head, d) of V transposed, with its chunk proof.
    @param mask_ref The mask record's link to the agreed chain value.
    @param mask Row b of the mask, with its chunk proof.
    """
    jd: tensors.Judging = self._judging(order_id, desc, K_CONTEXT)
    t: uint256 = desc.dims[1]
    h: uint256 = desc.dims[2]
    nh: uint256 = convert(desc.params[0], uint256)
    dh: uint256 = h // nh
    b: uint256 = jd.element // (t * h)
    tok: uint256 = (jd.element // h) % t
    head: uint256 = (jd.element % h) // dh
    d: uint256 = jd.element % dh
    bh: uint256 = b * nh + head
    assert p.row == bh * t + tok and s.row == bh and vt.row == bh * dh + d and mask.row == b, \
        "referee: those are not the element's rows"
    prow: Bytes[tensors.ROW_BYTES] = tensors._record_row(jd, p_ref, desc.inputs[0], p)
    psum: int256 = tensors._at(tensors._record_row(jd, s_ref, desc.inputs[1], s), s, tok)
    vrow: Bytes[tensors.ROW_BYTES] = tensors._record_row(jd, vt_ref, desc.inputs[2], vt)
    mrow: Bytes[tensors.ROW_BYTES] = tensors._record_row(jd, mask_ref, desc.inputs[3], mask)
    self._judged(order_id, staticcall onestep.context(prow, tensors._itemsize(p.dtype), psum, vrow,
                                                      tensors._itemsize(vt.dtype), mrow, tensors._itemsize(mask.dtype),
                                                      t))


@external
def judge_argmax(order_id: uint256, desc: tensors.OpDesc, x_ref: tensors.RecordRef, x: tensors.TensorRow):
    """
    @notice y[r] = the index of row r's largest value, the lowest index on ties.
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param x_ref The logits record's link to the agreed chain value.
    @param x Row r of the logits, with its chunk proof.
    """
    jd: tensors.Judging = self._judging(order_id, desc, K_ARGMAX)
    assert x.row == jd.element and len(x.dims) == len(desc.dims) + 1, "referee: that is not the element's row"
    row: Bytes[tensors.ROW_BYTES] = tensors._record_row(jd, x_ref, desc.inputs[0], x)
    n: uint256 = tensors._last(x.dims)
    assert n <= MAX_ROW, "referee: a row longer than MAX_ROW"
    best: uint256 = 0
    top: int256 = tensors._at(row, x, 0)
    for i: uint256 in range(1, MAX_ROW):
        if i >= n:
            break
        v: int256 = tensors._at(row, x, i)
        if v > top:
            top = v
            best = i
    self._judged(order_id, convert(best, int256))


@external
def judge_append(order_id: uint256, desc: tensors.OpDesc, ids_ref: tensors.RecordRef, ids: tensors.TensorRow,
                 token_ref: tensors.RecordRef, token: tensors.TensorRow):
    """
    @notice y[b, t] = ids[b, t] for the earlier positions, the new token for the last.
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param ids_ref The ids record's link to the agreed chain value.
    @param ids Row b of the ids (for an earlier position), with its chunk proof.
    @param token_ref The new token record's link to the agreed chain value.
    @param token Row b of the new token (for the last position), with its chunk proof.
    """
    jd: tensors.Judging = self._judging(order_id, desc, K_APPEND)
    n: uint256 = tensors._last(desc.dims)
    b: uint256 = jd.element // n
    t: uint256 = jd.element % n
    assert tensors._last(ids.dims) + 1 == n, "referee: the ids are not one shorter"
    if t + 1 < n:
        assert ids.row == b, "referee: that is not the element's row"
        self._judged(order_id, tensors._at(tensors._record_row(jd, ids_ref, desc.inputs[0], ids), ids, t))
    else:
        assert token.row == b, "referee: that is not the element's row"
        self._judged(order_id, tensors._at(tensors._record_row(jd, token_ref, desc.inputs[1], token), token, 0))


@external
def judge_select_last(order_id: uint256, desc: tensors.OpDesc, x_ref: tensors.RecordRef, x: tensors.TensorRow):
    """
    @notice y[b, 0, c] = x[b, T - 1, c]: the last position's row.
    @param order_id The disputed order's id.
    @param desc The located record's descriptor.
    @param x_ref The input record's link to the agreed chain value.
    @param x Row (b, T - 1) of the input, with its chunk proof.
    """
    jd: tensors.Judging = self._judging(order_id, desc, K_SELECT_LAST)
    c: uint256 = tensors._last(desc.dims)
    t: uint256 = x.dims[1]
    b: uint256 = jd.element // c
    assert len(x.dims) == 3 and x.row == b * t + t - 1, "referee: that is not the element's row"
    self._judged(order_id, tensors._at(tensors._record_row(jd, x_ref, desc.inputs[0], x), x, jd.element % c))
