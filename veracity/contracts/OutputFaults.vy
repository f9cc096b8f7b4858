# pragma version ~=0.4.3
# pragma optimize codesize
"""
@title OutputFaults
@notice A committed output bound to its committed trace: anyone proves, in one call, that an
        order's output root is not its trace's output records (`prove_output_fault`), and
        `Disputes` settles it as a lost game. Its own contract for the size limit.

        And the output's data is available: while a result can be challenged and no game runs
        over it, anyone but its provider may ask, with a bond, for one chunk of one committed
        output (`request_chunk`). The result cannot finalize until somebody posts that chunk,
        proven against the committed output root (`serve_chunk`: it is logged for the asker,
        and the provider takes the bond for its gas, whoever serves), or shows the request
        names no chunk. Unserved by the deadline, anyone may `claim_unserved`: the provider
        loses as in a lost game, the asker gets its bond back and the challenger's share. So a
        provider that withholds what it committed is slashed rather than paid. An order's
        requests queue: each is due one dispute move after the one before it (or after it is
        made), so a flood of requests cannot outrun an honest provider serving one at a time;
        each bonds a tenth of what a challenge of the order would (it grows with the price and
        the collateral).
"""

from ethereum.ercs import IERC20
from interfaces import IMarket
import tensors

interface Settles:
    def fault_proven(order_id: uint256, prover: address): nonpayable
    def move_time() -> uint256: view
    def bond_for(order_id: uint256) -> uint256: view
    def token() -> IERC20: view

struct ChunkRequest:
    asker: address
    deadline: uint256
    bond: uint256

ORDER_COMMITTED: constant(uint8) = 3  # the Market's order state
MAX_DEPTH: constant(uint256) = 64
REQUEST_BOND_DIV: constant(uint256) = 10  # a chunk request's bond: a tenth of a challenge's

market: public(immutable(IMarket))
deployer: immutable(address)
disputes: public(Settles)
requests: public(HashMap[bytes32, ChunkRequest])  # keccak(order, output, chunk) -> the open request
served: public(HashMap[bytes32, bool])  # chunks already posted (or shown to be none): asked once
pending: public(HashMap[uint256, uint256])  # an order's open requests
last_due: public(HashMap[uint256, uint256])  # an order's latest request deadline (they queue)


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


# the output's data: asked for with a bond, served on chain or the provider loses ----------------

event ChunkRequested:
    order_id: indexed(uint256)
    asker: indexed(address)
    output: uint256
    chunk: uint256
    deadline: uint256

event ChunkServed:
    order_id: indexed(uint256)
    server: indexed(address)
    output: uint256
    chunk: uint256
    dtype: uint8
    dims: DynArray[uint256, 4]
    data: Bytes[tensors.CHUNK_MAX]  # empty when the request named no chunk of a committed output

event ChunkUnserved:
    order_id: indexed(uint256)
    asker: indexed(address)
    output: uint256
    chunk: uint256


@internal
@pure
def _key(order_id: uint256, output: uint256, chunk: uint256) -> bytes32:
    return keccak256(abi_encode(order_id, output, chunk))


@internal
def _close(order_id: uint256, key: bytes32, committed: bool):
    """Close an open request: the order's hold is released with its last one."""
    self.requests[key] = empty(ChunkRequest)
    self.pending[order_id] -= 1
    if committed and self.pending[order_id] == 0:
        extcall market.set_data_requested(order_id, False)


@external
def request_chunk(order_id: uint256, output: uint256, chunk: uint256):
    """
    @notice Ask for chunk `chunk` of committed output `output` (from 0, in the program's output
            order) while the result can be challenged: the bond (`request_bond`) is taken, and
            the result cannot finalize until the chunk is served or the request is settled.
    @param order_id The order's id.
    @param output The output's place among the order's outputs.
    @param chunk The chunk's index in that output's tensor.
    """
    o: IMarket.Order = staticcall market.orders(order_id)
    assert o.state == ORDER_COMMITTED, "outputs: only a committed result's data can be asked for"
    assert block.timestamp < o.committed_at + o.challenge_window, "outputs: the challenge window has closed"
    assert msg.sender != o.provider, "outputs: a provider cannot ask for its own output"
    assert not staticcall market.challenged(order_id), \
        "outputs: a dispute game over the result is running: ask once it ends (its window restarts)"
    assert output < 1024, "outputs: an order has at most 1,024 outputs"
    key: bytes32 = self._key(order_id, output, chunk)
    assert self.requests[key].asker == empty(address), "outputs: that chunk is asked for already"
    assert not self.served[key], "outputs: that chunk was served already: read its ChunkServed event"
    bond: uint256 = self._request_bond(order_id)
    token: IERC20 = staticcall self.disputes.token()
    assert staticcall token.balanceOf(msg.sender) >= bond and staticcall token.allowance(msg.sender, self) >= bond, \
        "outputs: hold and approve the request's bond (request_bond) first"
    assert extcall token.transferFrom(msg.sender, self, bond), "outputs: the request's bond was not paid"
    deadline: uint256 = max(block.timestamp, self.last_due[order_id]) + staticcall self.disputes.move_time()
    self.last_due[order_id] = deadline
    self.requests[key] = ChunkRequest(asker=msg.sender, deadline=deadline, bond=bond)
    self.pending[order_id] += 1
    if self.pending[order_id] == 1:
        extcall market.set_data_requested(order_id, True)
    log ChunkRequested(order_id=order_id, asker=msg.sender, output=output, chunk=chunk, deadline=deadline)


@internal
@view
def _request_bond(order_id: uint256) -> uint256:
    return staticcall self.disputes.bond_for(order_id) // REQUEST_BOND_DIV


@external
@view
def request_bond(order_id: uint256) -> uint256:
    """
    @notice What asking for one chunk of this order's output bonds now, in tokens.
    @param order_id The order's id.
    @return The bond.
    """
    return self._request_bond(order_id)


@external
def serve_chunk(order_id: uint256, output: uint256, chunk: uint256, count: uint256, tree: bytes32,
                leaf_proof: DynArray[bytes32, MAX_DEPTH], dtype: uint8, dims: DynArray[uint256, 4],
                chunk_root: bytes32, data: Bytes[tensors.CHUNK_MAX], chunk_proof: DynArray[bytes32, MAX_DEPTH]):
    """
    @notice Serve an asked-for chunk, proven against the committed output root: the output's
            digest (`dtype`, `dims`, `chunk_root`) is leaf `output` of `tree`, and `data` is
            chunk `chunk` of that tensor. Or show the request names no chunk: `output` is not
            below `count`, or `chunk` not below the tensor's chunks (leave `data` empty). Anyone
            may serve (the data proves itself); the bond goes to the provider, whose gas it
            pays (so copying its transaction earns nothing).
    @param order_id The order's id.
    @param output The output's place among the order's outputs.
    @param chunk The chunk's index.
    @param count The number of outputs the output root holds.
    @param tree The Merkle root over the output digests.
    @param leaf_proof The output digest's Merkle proof against `tree` (empty when `output` >= `count`).
    @param dtype The output tensor's dtype code.
    @param dims Its dimensions.
    @param chunk_root Its chunk root.
    @param data The chunk's bytes.
    @param chunk_proof The chunk's Merkle proof against `chunk_root`.
    """
    key: bytes32 = self._key(order_id, output, chunk)
    r: ChunkRequest = self.requests[key]
    assert r.asker != empty(address), "outputs: that chunk is not asked for"
    assert block.timestamp <= r.deadline, "outputs: the request's deadline has passed"
    o: IMarket.Order = staticcall market.orders(order_id)
    assert o.state == ORDER_COMMITTED, "outputs: the result is settled: nothing to serve"
    assert sha256(concat(b"VXO1", slice(convert(count, bytes32), 28, 4), tree)) == o.output_cid and count < 2**32, \
        "outputs: that is not the committed output root"
    if output < count:
        assert tensors._proves(tree, tensors._digest(dtype, dims, chunk_root), output, count, leaf_proof), \
            "outputs: that tensor is not the committed output"
        row: uint256 = 0
        rows: uint256 = 0
        per: uint256 = 0
        chunks: uint256 = 0
        row, rows, per, chunks = tensors._layout(dtype, dims)
        if chunk < chunks:
            assert len(data) == min(per, rows - chunk * per) * row, "outputs: the chunk has the wrong length"
            assert tensors._proves(chunk_root, sha256(concat(b"\x03", data)), chunk, chunks, chunk_proof), \
                "outputs: that chunk is not in the output's tensor"
        else:
            assert len(data) == 0, "outputs: the output has no such chunk: serve no data"
    else:
        assert len(data) == 0, "outputs: the result has no such output: serve no data"
    self.served[key] = True
    self._close(order_id, key, True)
    assert extcall (staticcall self.disputes.token()).transfer(o.provider, r.bond), "outputs: bond transfer failed"
    log ChunkServed(order_id=order_id, server=msg.sender, output=output, chunk=chunk, dtype=dtype, dims=dims, data=data)


@external
def claim_unserved(order_id: uint256, output: uint256, chunk: uint256):
    """
    @notice Settle a request nobody served by its deadline: the provider loses as in a lost game
            (the asker takes the challenger's share) and the asker's bond comes back. Anyone
            may call. A request on a result settled otherwise meanwhile just returns the bond.
    @param order_id The order's id.
    @param output The output's place among the order's outputs.
    @param chunk The chunk's index.
    """
    key: bytes32 = self._key(order_id, output, chunk)
    r: ChunkRequest = self.requests[key]
    assert r.asker != empty(address), "outputs: that chunk is not asked for"
    o: IMarket.Order = staticcall market.orders(order_id)
    committed: bool = o.state == ORDER_COMMITTED
    assert not committed or block.timestamp > r.deadline, "outputs: the request's deadline has not passed"
    self._close(order_id, key, committed)
    assert extcall (staticcall self.disputes.token()).transfer(r.asker, r.bond), "outputs: bond refund failed"
    if committed:
        log ChunkUnserved(order_id=order_id, asker=r.asker, output=output, chunk=chunk)
        extcall self.disputes.fault_proven(order_id, r.asker)
