# pragma version ~=0.4.3
# pragma optimize codesize
"""
@title OutputFaults
@notice A committed output bound to its committed trace: anyone proves, in one call, that an
        order's output root is not its trace's output records (`prove_output_fault`), and
        `Disputes` settles it as a lost game. Its own contract for the size limit.
"""

from interfaces import IMarket
import tensors

interface Settles:
    def fault_proven(order_id: uint256, prover: address): nonpayable

ORDER_COMMITTED: constant(uint8) = 3  # the Market's order state
MAX_DEPTH: constant(uint256) = 64

market: public(immutable(IMarket))
deployer: immutable(address)
disputes: public(Settles)


@deploy
def __init__(market_: IMarket):
    market = market_
    deployer = msg.sender


@external
def set_disputes(disputes_: Settles):
    """
    @notice Set once, by the deployer, to the Disputes contract that settles proven faults.
    @param disputes_ The Disputes contract.
    """
    assert msg.sender == deployer, "disputes: only the deployer sets the disputes contract"
    assert self.disputes.address == empty(address), "disputes: the disputes contract is already set"
    self.disputes = disputes_


event OutputFault:
    order_id: indexed(uint256)
    prover: indexed(address)
    record: uint256
    reason: String[80]


@internal
@view
def _trace_digest_is(o: IMarket.Order, index: uint256, step: uint256, op: String[64], digest: bytes32, prev: bytes32,
                     prev_proof: DynArray[bytes32, MAX_DEPTH], at: bytes32,
                     at_proof: DynArray[bytes32, MAX_DEPTH]) -> bool:
    """Whether the committed trace holds record `index` with `digest`: its chain value `at` and the
    one before it (`prev`, zero before the first record) are proven against the trace root, and
    `at` is `prev` linked with the record's leaf."""
    if index > 0:
        assert tensors._proves(o.trace_root, prev, index - 1, o.trace_length, prev_proof), \
            "disputes: the chain value before the record is not in the committed trace"
    else:
        assert prev == empty(bytes32), "disputes: the first record follows the zero chain value"
    assert tensors._proves(o.trace_root, at, index, o.trace_length, at_proof), \
        "disputes: the record's chain value is not in the committed trace"
    return sha256(concat(b"\x02", prev, tensors._leaf(step, op, digest))) == at


@external
def prove_output_fault(order_id: uint256, desc: tensors.OpDesc, index: uint256,
                       desc_proof: DynArray[bytes32, MAX_DEPTH], count: uint256, tree: bytes32, leaf: bytes32,
                       leaf_proof: DynArray[bytes32, MAX_DEPTH], digest: bytes32, prev: bytes32,
                       prev_proof: DynArray[bytes32, MAX_DEPTH], at: bytes32, at_proof: DynArray[bytes32, MAX_DEPTH]):
    """
    @notice Prove, in one call, that a committed output is not the committed trace's: the
            output root (`sha256("VXO1" || count || tree)`, `veracity/exact/trace.py`) holds a
            different number of outputs than the program names (`desc.outputs`, on output
            record `index`), or its leaf for that output is not the record's digest in the
            trace (`digest`, proven by chain values `prev` and `at`). The provider loses at
            once, as in a lost game, and the prover takes the challenger's share. No bond: a
            proof that does not hold reverts. Open while the result can be challenged, even
            while a game runs (that game ends, its challenger's bond returned), so nobody's idle
            game can hold a proof off.
    @param order_id The order's id.
    @param desc The output record's descriptor.
    @param index The record's index in the trace.
    @param desc_proof The descriptor's Merkle proof against the order's program root.
    @param count The number of outputs the output root holds.
    @param tree The Merkle root over the output digests.
    @param leaf The output root's leaf for the record's output.
    @param leaf_proof Its Merkle proof against `tree`.
    @param digest The record's digest in the committed trace.
    @param prev The chain value before the record (zero before the first).
    @param prev_proof `prev`'s Merkle proof against the committed trace root.
    @param at The record's chain value.
    @param at_proof `at`'s Merkle proof against the committed trace root.
    """
    o: IMarket.Order = staticcall market.orders(order_id)
    assert o.state == ORDER_COMMITTED, "disputes: only a committed result can be proven wrong"
    assert block.timestamp < o.committed_at + o.challenge_window, "disputes: the challenge window has closed"
    assert msg.sender != o.provider, "disputes: a provider cannot prove its own result wrong"
    p: IMarket.Program = staticcall market.programs(order_id)
    assert tensors._proves(p.root, keccak256(abi_encode(desc)), index, p.length, desc_proof), \
        "disputes: that descriptor is not the program's for this record"
    assert desc.output > 0, "disputes: the program does not name that record as an output"
    assert sha256(concat(b"VXO1", slice(convert(count, bytes32), 28, 4), tree)) == o.output_cid and count < 2**32, \
        "disputes: that is not the committed output root"
    reason: String[80] = "the output root holds another number of outputs than the program"
    if count == desc.outputs:
        assert desc.output <= count and tensors._proves(tree, leaf, desc.output - 1, count, leaf_proof), \
            "disputes: that leaf is not in the committed output root"
        assert index < o.trace_length and self._trace_digest_is(o, index, desc.step, desc.op, digest, prev,
                                                                prev_proof, at, at_proof), \
            "disputes: that is not the record's digest in the committed trace"
        assert leaf != digest, "disputes: the output is the trace's record: no fault"
        reason = "an output is not the committed trace's record"
    extcall self.disputes.fault_proven(order_id, msg.sender)
    log OutputFault(order_id=order_id, prover=msg.sender, record=index, reason=reason)
