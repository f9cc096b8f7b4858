# pragma version ~=0.4.3
"""
@title Veracity Oracle
@notice Contract-callable exact inference: a consumer contract calls `request(model, input,
        callback, payment, program)`; the Oracle opens a Market order for it (the Oracle is the
        order's client) whose spec it builds here, so the spec's CID is fixed by the input on
        chain. A provider takes the request by `accept` (its signed bid, as for any order), runs
        it exactly and commits the output and trace to the Market; validators check it and may
        dispute it as any order. After the challenge window (or a dispute the provider won)
        anyone calls `fulfil` with the output: the Oracle finalizes the order, checks the output
        against the committed output root and calls the consumer back with it. A request that
        fails (no taker, a missed deadline, a dispute lost or undecided) is `cancel`led and the
        consumer gets back what the Market refunded.

        The output is the job's *canonical output blob* (`veracity/exact/outputs.py`): for each of
        its output tensors in order, the tensor's header (b"VXT2", dtype code u8 (1 int8, 2 uint8,
        3 int16, 4 int32, 5 int64), ndim u8, dims u32 BE each) then its integers, big endian, C
        order. `fulfil` parses it and recomputes what the provider committed
        (`veracity/exact/trace.py`): each tensor's digest sha256(header || sha256(0x03 || data))
        (at most MAX_OUTPUT bytes, every tensor is one chunk of whole rows), and the output root
        sha256("VXO1" || k (u32 BE) || Merkle root over the k digests).

        The Oracle is a gated client of the Market: only `fulfil` finalizes its orders, so a
        provider is paid only when the consumer gets the output. A committed output that cannot
        be delivered (longer than MAX_OUTPUT, or not the committed bytes) is never paid: after
        the Market's delivery time `cancel` voids it, refunds the consumer and slashes the
        provider's collateral to it. A provider checks the output blob's size before it takes a
        request (the program fixes it: every tensor's dtype and dims).

        The spec (`veracity/workloads/spec.py`) is YAML with the input inline:
        "kind: infer / model: M / max_price: 1 / deadline: 3600 / inputs: inline: |- INPUT", so
        the input must be one JSON line. The program (root and length) is the requester's, as
        a Market client's is: providers refuse a program that is not the one the input gives.
"""

from ethereum.ercs import IERC20

from interfaces import IConsumer
from interfaces import IMarket
from interfaces import IOracle

implements: IOracle

MAX_INPUT: constant(uint256) = 1024
MAX_OUTPUT: constant(uint256) = 4096
MAX_SPEC: constant(uint256) = 1200
MAX_OUTPUTS: constant(uint256) = 372  # tensors in an output blob: MAX_OUTPUT // 11, each one has 11 bytes at least
MAX_LEVELS: constant(uint256) = 9  # 2**9 > MAX_OUTPUTS: the levels of the Merkle tree over their digests
INFER: constant(uint8) = 1
OPEN: constant(uint8) = 1  # request states
TAKEN: constant(uint8) = 2
DONE: constant(uint8) = 3
CANCELLED: constant(uint8) = 4
M_OPEN: constant(uint8) = 1  # the Market's order states
M_ACCEPTED: constant(uint8) = 2
M_COMMITTED: constant(uint8) = 3
M_FINALIZED: constant(uint8) = 4
M_REFUNDED: constant(uint8) = 5
M_OVERTURNED: constant(uint8) = 7


struct Request:
    consumer: address
    callback: address
    payment: uint256
    state: uint8


event Requested:
    request_id: indexed(uint256)  # the Market order's id
    consumer: indexed(address)
    model: String[32]
    input: Bytes[MAX_INPUT]
    callback: address
    payment: uint256

event Taken:
    request_id: indexed(uint256)
    provider: indexed(address)
    price: uint256

event Fulfilled:
    request_id: indexed(uint256)
    consumer: indexed(address)
    output_cid: bytes32

event Cancelled:
    request_id: indexed(uint256)
    consumer: indexed(address)
    refund: uint256


token: public(immutable(IERC20))
market: public(immutable(IMarket))
deadline_s: public(immutable(uint256))
challenge_window: public(immutable(uint256))
spot_check_bps: public(immutable(uint256))
min_collateral_bps: public(immutable(uint256))  # a taker locks at least this share of the payment
requests: public(HashMap[uint256, Request])
specs: public(HashMap[uint256, Bytes[MAX_SPEC]])


@deploy
def __init__(token_: IERC20, market_: IMarket, deadline_s_: uint256, challenge_window_: uint256,
             spot_check_bps_: uint256, min_collateral_bps_: uint256):
    token = token_
    market = market_
    deadline_s = deadline_s_
    challenge_window = challenge_window_
    spot_check_bps = spot_check_bps_
    min_collateral_bps = min_collateral_bps_


@internal
@pure
def _spec(model: String[32], input: Bytes[MAX_INPUT]) -> Bytes[MAX_SPEC]:
    return concat(b"kind: infer\nmodel: ", convert(model, Bytes[32]),
                  b"\nmax_price: 1\ndeadline: 3600\ninputs:\n  inline: |-\n    ", input, b"\n")


@external
def request(model: String[32], input: Bytes[MAX_INPUT], callback: address, payment: uint256,
            program_root: bytes32, program_length: uint256) -> uint256:
    """
    @notice Ask for `model` on `input` and pay `payment` (approve the Oracle first). `callback`
            gets `on_result(request_id, output)`. Providers check the program before they take it.
    @param model The model's registry name (digits-mlp, minilm, tiny-gpt).
    @param input The job's input: one line of printable ASCII (JSON).
    @param callback The contract called back with the output.
    @param payment What the request pays.
    @param program_root The job's program's Merkle root (`veracity oracle program`).
    @param program_length The program's record count.
    @return The request's id (its Market order's id).
    """
    assert payment > 0, "oracle: the payment must be positive"
    assert len(input) > 0 and len(model) > 0, "oracle: the model and the input must not be empty"
    assert slice(input, 0, 1) != b" ", "oracle: the input must not start with a space"
    for i: uint256 in range(MAX_INPUT):  # printable ASCII only: no line break of any kind can reshape the spec
        if i >= len(input):
            break
        c: uint256 = convert(convert(slice(input, i, 1), bytes1), uint256)
        assert c >= 32 and c <= 126, "oracle: the input must be one line of printable ASCII (no newline)"
    spec: Bytes[MAX_SPEC] = self._spec(model, input)
    assert extcall token.transferFrom(msg.sender, self, payment), "oracle: payment transfer failed"
    assert extcall token.approve(market.address, payment), "oracle: approve failed"
    order_id: uint256 = extcall market.open_order(sha256(spec), INFER, sha256(model), payment,
                                                  block.timestamp + deadline_s, challenge_window, spot_check_bps,
                                                  program_root, program_length)
    self.requests[order_id] = Request(consumer=msg.sender, callback=callback, payment=payment, state=OPEN)
    self.specs[order_id] = spec
    log Requested(request_id=order_id, consumer=msg.sender, model=model, input=input, callback=callback,
                  payment=payment)
    return order_id


@external
def accept(request_id: uint256, price: uint256, collateral: uint256, expiry: uint256, run_time: uint256,
           signature: Bytes[65]):
    """
    @notice Take a request: the caller's signed bid for its order (the Market checks it and locks
            the collateral). First come, first served; the price's difference to the payment goes
            back to the consumer.
    @param request_id The request's id.
    @param price The bid's price.
    @param collateral The collateral the provider locks.
    @param expiry When the bid expires (unix time).
    @param run_time The seconds the provider needs to run and commit.
    @param signature The caller's signature of the Market's `bid_digest`.
    """
    r: Request = self.requests[request_id]
    assert r.state == OPEN, "oracle: the request is not open"
    assert collateral * 10000 >= r.payment * min_collateral_bps, "oracle: the collateral is below the minimum"
    before: uint256 = staticcall token.balanceOf(self)
    extcall market.accept_bid(request_id, msg.sender, price, collateral, expiry, run_time, signature)
    refund: uint256 = staticcall token.balanceOf(self) - before
    self.requests[request_id].state = TAKEN
    if refund > 0:
        assert extcall token.transfer(r.consumer, refund), "oracle: refund transfer failed"
    log Taken(request_id=request_id, provider=msg.sender, price=price)


@internal
@pure
def _byte(b: Bytes[MAX_OUTPUT], i: uint256) -> uint256:
    return convert(convert(slice(b, i, 1), bytes1), uint256)


@internal
@pure
def _output_root(output: Bytes[MAX_OUTPUT]) -> bytes32:
    """The output root of a canonical output blob (`veracity/exact/outputs.py`); reverts with
    the reason on a blob that is not one."""
    n: uint256 = len(output)
    assert n > 0, "oracle: the output holds no tensor"
    digests: DynArray[bytes32, MAX_OUTPUTS] = []
    at: uint256 = 0
    for t: uint256 in range(MAX_OUTPUTS):
        if at == n:
            break
        assert at + 6 <= n, "oracle: the output ends inside a tensor header (truncated, or trailing bytes)"
        assert slice(output, at, 4) == b"VXT2", "oracle: a tensor header must start with VXT2"
        dtype: uint256 = self._byte(output, at + 4)
        ndim: uint256 = self._byte(output, at + 5)
        assert dtype >= 1 and dtype <= 5, "oracle: unknown dtype code (1 int8 .. 5 int64)"
        assert ndim >= 1 and ndim <= 4, "oracle: a tensor has 1 to 4 dimensions"
        head: uint256 = 6 + 4 * ndim
        assert at + head <= n, "oracle: the output ends inside a tensor's dimensions (truncated)"
        itemsize: uint256 = 8
        if dtype <= 2:
            itemsize = 1
        elif dtype == 3:
            itemsize = 2
        elif dtype == 4:
            itemsize = 4
        rows: uint256 = 1  # rows run along the last axis
        row: uint256 = itemsize  # a row's bytes
        for i: uint256 in range(4):
            if i == ndim:
                break
            d: uint256 = convert(convert(slice(output, at + 6 + 4 * i, 4), bytes4), uint256)
            assert d >= 1, "oracle: a tensor has a dimension of 0"
            if i + 1 < ndim:
                rows *= d
            else:
                row *= d
        size: uint256 = rows * row  # the data's bytes
        assert at + head + size <= n, "oracle: the output ends inside a tensor's data (truncated)"
        # at most MAX_OUTPUT bytes of whole rows, the tensor is one chunk (`trace.chunking`: up to 8 KiB)
        digests.append(sha256(concat(slice(output, at, head),
                                     sha256(concat(b"\x03", slice(output, at + head, size))))))
        at += head + size
    assert at == n, "oracle: the output holds more tensors than MAX_OUTPUTS"
    k: uint256 = len(digests)
    width: uint256 = k  # the Merkle tree over the digests, one level at a time, in place
    for level: uint256 in range(MAX_LEVELS):
        if width <= 1:
            break
        for j: uint256 in range(MAX_OUTPUTS):
            if 2 * j >= width:
                break
            if 2 * j + 1 < width:
                digests[j] = sha256(concat(b"\x01", digests[2 * j], digests[2 * j + 1]))
            else:
                digests[j] = digests[2 * j]  # an odd last node is carried up
        width = (width + 1) // 2
    return sha256(concat(b"VXO1", slice(convert(k, bytes32), 28, 4), digests[0]))


@external
@pure
def output_root(output: Bytes[MAX_OUTPUT]) -> bytes32:
    """
    @notice The output root of a canonical output blob: what `fulfil` checks it against (the
            order's committed output). Reverts, with the reason, on a malformed blob.
    @param output A canonical output blob.
    @return Its output root.
    """
    return self._output_root(output)


@external
def fulfil(request_id: uint256, output: Bytes[MAX_OUTPUT]):
    """
    @notice Deliver a committed result (anyone, once its challenge window has passed): the order
            is finalized (if it is not yet), `output` must be the committed output (a canonical
            output blob whose output root is the order's output CID), and the consumer is called
            back with it.
    @param request_id The request's id.
    @param output The committed output (its canonical output blob).
    """
    r: Request = self.requests[request_id]
    assert r.state == TAKEN, "oracle: the request is not awaiting a result"
    o: IMarket.Order = staticcall market.orders(request_id)
    if o.state == M_COMMITTED:
        extcall market.finalize(request_id)  # reverts while the window is open or a dispute runs
        o = staticcall market.orders(request_id)
    assert o.state == M_FINALIZED, "oracle: the result is not final"
    assert self._output_root(output) == o.output_cid, "oracle: that is not the committed output"
    self.requests[request_id].state = DONE
    log Fulfilled(request_id=request_id, consumer=r.consumer, output_cid=o.output_cid)
    extcall IConsumer(r.callback).on_result(request_id, output)


@external
def cancel(request_id: uint256):
    """
    @notice End a request that failed (anyone): nobody took it before its deadline, its provider
            missed the deadline, a dispute overturned or could not judge its result, or its
            committed output was not delivered within the Market's delivery time. The consumer
            gets what the Market refunded (with a late or undelivering provider's collateral).
    @param request_id The request's id.
    """
    r: Request = self.requests[request_id]
    assert r.state == OPEN or r.state == TAKEN, "oracle: the request already ended"
    o: IMarket.Order = staticcall market.orders(request_id)
    refund: uint256 = 0
    if o.state == M_OPEN or o.state == M_ACCEPTED:
        assert block.timestamp > o.deadline, "oracle: the request's deadline has not passed"
        before: uint256 = staticcall token.balanceOf(self)
        extcall market.reclaim(request_id)
        refund = staticcall token.balanceOf(self) - before
    elif o.state == M_COMMITTED:  # reverts while the output can still be delivered
        before: uint256 = staticcall token.balanceOf(self)
        extcall market.void_undelivered(request_id)
        refund = staticcall token.balanceOf(self) - before
    else:
        assert o.state == M_REFUNDED or o.state == M_OVERTURNED, "oracle: the request has a result"
        refund = o.price  # the Market returned the price when the dispute ended
    self.requests[request_id].state = CANCELLED
    if refund > 0:
        assert extcall token.transfer(r.consumer, refund), "oracle: refund transfer failed"
    log Cancelled(request_id=request_id, consumer=r.consumer, refund=refund)
