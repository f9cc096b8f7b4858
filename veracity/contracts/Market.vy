# pragma version ~=0.4.3
"""
@title Veracity Market
@notice Orders, EIP-712 bids, leases, escrow, result commitments, challenge window, settlement.
        A client opens an order and escrows its max price; a provider signs a bid off-chain; the
        client accepts it here (signature, expiry, price and stake checked, collateral locked in the
        Registry, the difference to the max price refunded); the provider commits its result
        before the deadline; after the challenge window anyone finalizes. A missed deadline lets
        the client reclaim the escrow and the provider's collateral. A result the Disputes contract
        marks as challenged cannot finalize until the dispute is decided, nor one whose output
        data somebody asked for (OutputFaults) until it is served.

        The rules that keep cheating from paying live here, not in the honest daemons: every
        order with a spec names a program (so any record can be judged); deadlines and challenge
        windows are bounded (no stake frozen for ever); a bid names the run time it needs and is
        accepted only if that still fits before the deadline; collateral is at least
        MIN_COLLATERAL_BPS of the price; a standing lease's window is co-signed by its provider;
        an order whose client is a gated client (the Oracle) is paid only through that client
        (on delivery); part of every dispute slash is burnt; the fee pool is paid to a treasury.
"""

from ethereum.ercs import IERC20
from snekmate.auth import ownable as ow
from snekmate.utils import ecdsa
from snekmate.utils import eip712_domain_separator as eip712

from interfaces import IMarket
from interfaces import IRegistry

interface HasOutputFaults:
    def output_faults() -> address: view

implements: IMarket

initializes: ow
initializes: eip712
exports: (ow.owner, ow.transfer_ownership, eip712.eip712Domain)


BID_TYPEHASH: constant(bytes32) = keccak256(
    "Bid(uint256 orderId,address provider,uint256 price,uint256 collateral,uint256 expiry,uint256 runTime)"
)
WINDOW_TYPEHASH: constant(bytes32) = keccak256(
    "Window(uint256 orderId,bytes32 specCid,bytes32 programRoot,uint256 programLength)"
)
OPEN: constant(uint8) = 1
ACCEPTED: constant(uint8) = 2
COMMITTED: constant(uint8) = 3
FINALIZED: constant(uint8) = 4
REFUNDED: constant(uint8) = 5
CANCELLED: constant(uint8) = 6
OVERTURNED: constant(uint8) = 7  # a dispute found the result wrong
PROVIDER_WON: constant(uint8) = 1  # dispute outcomes
PROVIDER_LOST: constant(uint8) = 2
UNDECIDED: constant(uint8) = 3
STAKE_SLASH_BPS: constant(uint256) = 2000  # share of its stake a provider loses for a wrong result
BURN_BPS: constant(uint256) = 5000  # share of a dispute's slash that is burnt (a self-challenge never pays)
MIN_COLLATERAL_BPS: constant(uint256) = 1000  # a bid's collateral is at least this share of its price
MAX_BPS: constant(uint256) = 10000
COMMIT_GRACE: constant(uint256) = 30  # seconds a posted window leaves its provider to commit, at least
MAX_CHALLENGE_WINDOW: constant(uint256) = 86400  # one day
MAX_DURATION: constant(uint256) = 7 * 86400  # an order's deadline is at most a week away
MAX_OUTPUTS: constant(uint256) = 1024  # output records a result commits (`exact/trace.py`, outputs_root)
REPUTATION_MIN_PRICE: constant(uint256) = 10**18  # a finalized order below 1 VRC earns no reputation
MAX_PROGRAM_LENGTH: constant(uint256) = 100_000  # records: bounds what a dispute move can demand of a provider
DELIVERY_TIME: constant(uint256) = 3600  # a gated client's result undelivered this long after its window is voided


event OrderOpened:
    order_id: indexed(uint256)
    client: indexed(address)
    spec_cid: bytes32
    kind: uint8
    model_id: bytes32
    max_price: uint256
    deadline: uint256
    challenge_window: uint256
    spot_check_bps: uint256

event OrderCancelled:
    order_id: indexed(uint256)
    refund: uint256

event BidAccepted:
    order_id: indexed(uint256)
    provider: indexed(address)
    price: uint256
    collateral: uint256
    refund: uint256

event ResultCommitted:
    order_id: indexed(uint256)
    provider: indexed(address)
    output_cid: bytes32  # the output root over `outputs`
    trace_root: bytes32
    trace_length: uint256
    outputs: DynArray[bytes32, MAX_OUTPUTS]  # the output records' digests: anyone proves a wrong one

event Finalized:
    order_id: indexed(uint256)
    provider: indexed(address)
    paid: uint256
    fee: uint256

event TimedOut:
    order_id: indexed(uint256)
    provider: indexed(address)
    refund: uint256
    slashed: uint256

event ChallengeSet:
    order_id: indexed(uint256)
    challenged: bool

event Overturned:
    order_id: indexed(uint256)
    provider: indexed(address)
    challenger: indexed(address)
    refund: uint256
    slashed: uint256

event Undecided:
    order_id: indexed(uint256)
    refund: uint256

event DisputesSet:
    disputes: address

event FeesPaid:
    treasury: indexed(address)
    amount: uint256

event TreasurySet:
    treasury: address

event GatedClientSet:
    client: indexed(address)

event Undelivered:
    order_id: indexed(uint256)
    provider: indexed(address)
    refund: uint256
    slashed: uint256

event WindowPosted:
    order_id: indexed(uint256)
    spec_cid: bytes32
    program_root: bytes32
    program_length: uint256


token: public(immutable(IERC20))
registry: public(immutable(IRegistry))
fee_bps: public(immutable(uint256))
orders: public(HashMap[uint256, IMarket.Order])
programs: public(HashMap[uint256, IMarket.Program])
order_count: public(uint256)
escrow_total: public(uint256)
fee_pool: public(uint256)
disputes: public(address)
output_faults: public(address)  # the Disputes contract's OutputFaults: holds a result while its data is asked for
data_requested: public(HashMap[uint256, bool])  # an output chunk asked of the provider is unanswered
challenged: public(HashMap[uint256, bool])
run_times: public(HashMap[uint256, uint256])  # a standing lease's accepted bid's run time
held: public(HashMap[uint256, uint256])  # the provider's stake share held while the order is disputed
treasury: public(address)  # where the fee pool is paid
gated: public(HashMap[address, bool])  # clients (the Oracle) whose orders only they may finalize


@deploy
def __init__(token_: IERC20, registry_: IRegistry, fee_bps_: uint256):
    assert fee_bps_ <= MAX_BPS, "market: fee above 100%"
    ow.__init__()
    eip712.__init__("Veracity Market", "1")
    token = token_
    registry = registry_
    fee_bps = fee_bps_
    self.treasury = msg.sender


@external
def set_disputes(disputes_: address):
    """
    @notice Name the Disputes contract, which alone may mark results as challenged. Once.
    @param disputes_ The Disputes contract.
    """
    ow._check_owner()
    assert self.disputes == empty(address), "market: the disputes contract is already set"
    self.disputes = disputes_
    self.output_faults = staticcall HasOutputFaults(disputes_).output_faults()
    log DisputesSet(disputes=disputes_)


@external
def set_treasury(treasury_: address):
    """
    @notice Name where the fee pool is paid (owner only).
    @param treasury_ The treasury's address.
    """
    ow._check_owner()
    assert treasury_ != empty(address), "market: the treasury cannot be the zero address"
    self.treasury = treasury_
    log TreasurySet(treasury=treasury_)


@external
def set_gated(client: address):
    """
    @notice Mark a client contract (the Oracle) whose orders only it may finalize, so its provider
            is paid only when the result is delivered (owner only).
    @param client The client contract.
    """
    ow._check_owner()
    self.gated[client] = True
    log GatedClientSet(client=client)


@external
def pay_fees():
    """
    @notice Pay the fee pool to the treasury. Anyone may call.
    """
    amount: uint256 = self.fee_pool
    assert amount > 0, "market: the fee pool is empty"
    self.fee_pool = 0
    assert extcall token.transfer(self.treasury, amount), "market: fee transfer failed"
    log FeesPaid(treasury=self.treasury, amount=amount)


@external
def open_order(spec_cid: bytes32, kind: uint8, model_id: bytes32, max_price: uint256, deadline: uint256,
               challenge_window: uint256, spot_check_bps: uint256, program_root: bytes32,
               program_length: uint256) -> uint256:
    """
    @notice Open an order and escrow `max_price` (approve the Market first). The program (root and
            length) fixes what each record of the result's trace must be; providers check it
            before they bid. An order with no spec (`spec_cid` zero) is a standing lease: a
            session the provider serves (its requests unknown yet) until the client posts the
            window it served (`post_window`), which the provider then commits like any result.
    @param spec_cid The job spec's CID (zero: a standing lease).
    @param kind The job kind.
    @param model_id The model's id.
    @param max_price The most the client pays (escrowed).
    @param deadline When the result must be committed by (unix time, at most 7 days away).
    @param challenge_window Seconds a committed result can be challenged (at most a day).
    @param spot_check_bps The validators' spot-check rate, in basis points.
    @param program_root The program's Merkle root.
    @param program_length The program's record count (zero only for a standing lease).
    @return The new order's id.
    """
    assert max_price > 0, "market: max price must be positive"
    assert deadline > block.timestamp, "market: the deadline is already past"
    assert deadline <= block.timestamp + MAX_DURATION, "market: the deadline is more than 7 days away"
    assert challenge_window <= MAX_CHALLENGE_WINDOW, "market: the challenge window is longer than one day"
    assert spot_check_bps <= MAX_BPS, "market: spot-check rate above 10000 bps"
    assert spec_cid == empty(bytes32) or program_length > 0, \
        "market: an order needs its program (root and length) so that a dispute can judge every record"
    assert program_length <= MAX_PROGRAM_LENGTH, "market: the program has more than 100000 records: split the job"
    order_id: uint256 = self.order_count + 1
    self.order_count = order_id
    self.orders[order_id] = IMarket.Order(client=msg.sender, spec_cid=spec_cid, kind=kind, model_id=model_id,
                                          max_price=max_price, deadline=deadline, challenge_window=challenge_window,
                                          spot_check_bps=spot_check_bps, state=OPEN, provider=empty(address),
                                          price=0, collateral=0, output_cid=empty(bytes32),
                                          trace_root=empty(bytes32), trace_length=0, committed_at=0)
    self.programs[order_id] = IMarket.Program(root=program_root, length=program_length)
    self.escrow_total += max_price
    assert extcall token.transferFrom(msg.sender, self, max_price), "market: escrow transfer failed"
    log OrderOpened(order_id=order_id, client=msg.sender, spec_cid=spec_cid, kind=kind, model_id=model_id,
                    max_price=max_price, deadline=deadline, challenge_window=challenge_window,
                    spot_check_bps=spot_check_bps)
    return order_id


@external
@view
def bid_digest(order_id: uint256, provider: address, price: uint256, collateral: uint256,
               expiry: uint256, run_time: uint256) -> bytes32:
    """
    @notice The EIP-712 digest a provider signs to bid on an order.
    @param order_id The order's id.
    @param provider The bidding provider.
    @param price The bid's price.
    @param collateral The collateral the provider locks.
    @param expiry When the bid expires (unix time).
    @param run_time The seconds the provider needs to run and commit.
    @return The digest to sign.
    """
    return eip712._hash_typed_data_v4(
        keccak256(abi_encode(BID_TYPEHASH, order_id, provider, price, collateral, expiry, run_time)))


@external
@view
def window_digest(order_id: uint256, spec_cid: bytes32, program_root: bytes32, program_length: uint256) -> bytes32:
    """
    @notice The EIP-712 digest a standing lease's provider signs to agree to a window.
    @param order_id The order's id.
    @param spec_cid The window's job spec CID.
    @param program_root The window's program's Merkle root.
    @param program_length The program's record count.
    @return The digest to sign.
    """
    return eip712._hash_typed_data_v4(
        keccak256(abi_encode(WINDOW_TYPEHASH, order_id, spec_cid, program_root, program_length)))


@external
def accept_bid(order_id: uint256, provider: address, price: uint256, collateral: uint256, expiry: uint256,
               run_time: uint256, signature: Bytes[65]):
    """
    @notice Accept a provider's signed bid: locks its collateral and refunds max price - price.
            The bid's run time (what the provider needs to run and commit) must still fit before
            the deadline, and its collateral must be at least MIN_COLLATERAL_BPS of its price.
    @param order_id The order's id.
    @param provider The bidding provider.
    @param price The bid's price.
    @param collateral The collateral the provider locks.
    @param expiry When the bid expires (unix time).
    @param run_time The seconds the provider needs to run and commit.
    @param signature The provider's signature of `bid_digest`.
    """
    o: IMarket.Order = self.orders[order_id]
    assert o.state == OPEN, "market: the order is not open for bids"
    assert msg.sender == o.client, "market: only the order's client can accept a bid"
    assert block.timestamp <= expiry, "market: the bid has expired"
    assert price <= o.max_price, "market: the bid's price is above the order's max price"
    assert block.timestamp + run_time <= o.deadline, \
        "market: too late to accept: the bid's run time no longer fits before the deadline"
    assert collateral * MAX_BPS >= price * MIN_COLLATERAL_BPS, \
        "market: the bid's collateral is below the minimum share of its price (10%)"
    digest: bytes32 = eip712._hash_typed_data_v4(
        keccak256(abi_encode(BID_TYPEHASH, order_id, provider, price, collateral, expiry, run_time)))
    assert provider != empty(address) and ecdsa._recover_sig(digest, signature) == provider, \
        "market: the bid's signature is not the provider's"
    assert staticcall registry.is_provider(provider), "market: the bidder is not a registered provider"
    extcall registry.lock(provider, collateral)
    refund: uint256 = o.max_price - price
    self.orders[order_id].state = ACCEPTED
    self.orders[order_id].provider = provider
    self.orders[order_id].price = price
    self.orders[order_id].collateral = collateral
    if o.spec_cid == empty(bytes32):  # only a standing lease needs it later (to post its window in time)
        self.run_times[order_id] = run_time
    self.escrow_total -= refund
    if refund > 0:
        assert extcall token.transfer(o.client, refund), "market: refund transfer failed"
    log BidAccepted(order_id=order_id, provider=provider, price=price, collateral=collateral, refund=refund)


@external
def post_window(order_id: uint256, spec_cid: bytes32, program_root: bytes32, program_length: uint256,
                signature: Bytes[65]):
    """
    @notice Fix what a standing lease served (its client only, once, before the deadline): the
            window's job spec (its requests, in the order they were served) and its program,
            co-signed by the lease's provider (`window_digest`), which checks them before it
            signs. The provider then commits the window's result; challenges and disputes go as
            for any order. The bid's run time must still fit before the deadline.
    @param order_id The order's id.
    @param spec_cid The window's job spec CID.
    @param program_root The window's program's Merkle root.
    @param program_length The program's record count.
    @param signature The provider's signature of `window_digest`.
    """
    o: IMarket.Order = self.orders[order_id]
    assert msg.sender == o.client, "market: only the lease's client posts its window"
    assert o.spec_cid == empty(bytes32), "market: this order's spec is already fixed (not a standing lease, or posted)"
    assert o.state == ACCEPTED, "market: the lease has no accepted provider serving it"
    assert spec_cid != empty(bytes32), "market: the window's spec CID is empty"
    assert program_length > 0, "market: a window needs its program (root and length)"
    assert program_length <= MAX_PROGRAM_LENGTH, "market: the program has more than 100000 records: split the job"
    assert block.timestamp + max(self.run_times[order_id], COMMIT_GRACE) <= o.deadline, \
        "market: too close to the deadline to post a window (the bid's run time does not fit)"
    digest: bytes32 = eip712._hash_typed_data_v4(
        keccak256(abi_encode(WINDOW_TYPEHASH, order_id, spec_cid, program_root, program_length)))
    assert ecdsa._recover_sig(digest, signature) == o.provider, \
        "market: the window is not signed by the lease's provider"
    self.orders[order_id].spec_cid = spec_cid
    self.programs[order_id] = IMarket.Program(root=program_root, length=program_length)
    log WindowPosted(order_id=order_id, spec_cid=spec_cid, program_root=program_root, program_length=program_length)


@external
def commit_result(order_id: uint256, outputs: DynArray[bytes32, MAX_OUTPUTS], trace_root: bytes32,
                  trace_length: uint256):
    """
    @notice Commit the result of an accepted order (its provider only, before the deadline): the
            digests of its output records (the order's output CID is their output root, so anyone
            can prove an output that is not its trace record: `Disputes.prove_output_fault`),
            and its trace's root and length.
    @param order_id The order's id.
    @param outputs The output records' digests, in order.
    @param trace_root The trace's Merkle root.
    @param trace_length The trace's record count.
    """
    o: IMarket.Order = self.orders[order_id]
    assert o.state == ACCEPTED, "market: no accepted lease awaits a result for this order"
    assert msg.sender == o.provider, "market: only the order's provider can commit its result"
    assert o.spec_cid != empty(bytes32), "market: the standing lease's window is not posted yet"
    assert trace_length > 0, "market: a result must commit a non-empty trace"
    program_length: uint256 = self.programs[order_id].length
    assert program_length == 0 or trace_length == program_length, \
        "market: the trace's length is not the order's program length"
    assert block.timestamp <= o.deadline, "market: the deadline has passed"
    # the output root: sha256("VXO1" || count || Merkle root over the digests) (`veracity/exact/trace.py`)
    n: uint256 = len(outputs)
    level: DynArray[bytes32, MAX_OUTPUTS // 2] = []  # grown, not zeroed: memory only for what is used
    root: bytes32 = sha256(b"")
    if n == 1:
        root = outputs[0]
    elif n > 1:
        half: uint256 = 0
        for j: uint256 in range(MAX_OUTPUTS // 2):  # the first level, read from the call's data
            if 2 * j + 1 >= n:
                break
            level.append(sha256(concat(b"\x01", outputs[2 * j], outputs[2 * j + 1])))
            half += 1
        if n % 2 == 1:
            level.append(outputs[n - 1])
            half += 1
        n = half
        for _: uint256 in range(10):
            if n <= 1:
                break
            half = 0
            for j: uint256 in range(MAX_OUTPUTS // 4):
                if 2 * j + 1 >= n:
                    break
                level[half] = sha256(concat(b"\x01", level[2 * j], level[2 * j + 1]))
                half += 1
            if n % 2 == 1:
                level[half] = level[n - 1]
                half += 1
            n = half
        root = level[0]
    output_cid: bytes32 = sha256(concat(b"VXO1", slice(convert(len(outputs), bytes32), 28, 4), root))
    self.orders[order_id].state = COMMITTED
    self.orders[order_id].output_cid = output_cid
    self.orders[order_id].trace_root = trace_root
    self.orders[order_id].trace_length = trace_length
    self.orders[order_id].committed_at = block.timestamp
    log ResultCommitted(order_id=order_id, provider=msg.sender, output_cid=output_cid, trace_root=trace_root,
                        trace_length=trace_length, outputs=outputs)


@external
def finalize(order_id: uint256):
    """
    @notice After the challenge window, pay the provider (minus the protocol fee, which goes to
            the validator pool), release its collateral and raise its reputation. Anyone may call.
    @param order_id The order's id.
    """
    o: IMarket.Order = self.orders[order_id]
    assert o.state == COMMITTED, "market: the order has no committed result to finalize"
    assert not self.challenged[order_id], "market: the result is challenged; the dispute decides"
    assert not self.data_requested[order_id], \
        "market: an output chunk asked of the provider is not served yet: it is paid once served"
    assert block.timestamp >= o.committed_at + o.challenge_window, "market: the challenge window is still open"
    assert not self.gated[o.client] or msg.sender == o.client, \
        "market: this order's client pays on delivery: finalize it through the client (the Oracle's fulfil)"
    fee: uint256 = o.price * fee_bps // MAX_BPS
    self.orders[order_id].state = FINALIZED
    self.escrow_total -= o.price
    self.fee_pool += fee
    extcall registry.unlock(o.provider, o.collateral)
    if o.price >= REPUTATION_MIN_PRICE:  # dust orders earn no reputation
        extcall registry.adjust_reputation(o.provider, 1)
    assert extcall token.transfer(o.provider, o.price - fee), "market: payment transfer failed"
    log Finalized(order_id=order_id, provider=o.provider, paid=o.price - fee, fee=fee)


@external
def reclaim(order_id: uint256):
    """
    @notice The client takes its escrow back: at any time while no bid is accepted, or after a
            missed deadline, when the provider's collateral is slashed to the client too (not
            for a standing lease whose client never posted a window: nothing was asked of it).
    @param order_id The order's id.
    """
    o: IMarket.Order = self.orders[order_id]
    assert msg.sender == o.client, "market: only the order's client can reclaim its escrow"
    if o.state == OPEN:
        self.orders[order_id].state = CANCELLED
        self.escrow_total -= o.max_price
        assert extcall token.transfer(o.client, o.max_price), "market: refund transfer failed"
        log OrderCancelled(order_id=order_id, refund=o.max_price)
        return
    assert o.state == ACCEPTED, "market: nothing to reclaim: the result was committed or settled"
    assert block.timestamp > o.deadline, "market: the deadline has not passed yet"
    self.orders[order_id].state = REFUNDED
    self.escrow_total -= o.price
    slashed: uint256 = o.collateral
    if o.spec_cid == empty(bytes32):  # a standing lease whose client posted no window: nobody's fault
        slashed = 0
        extcall registry.unlock(o.provider, o.collateral)
    else:
        extcall registry.slash(o.provider, o.collateral, o.client, 0)
        extcall registry.adjust_reputation(o.provider, -1)
    assert extcall token.transfer(o.client, o.price), "market: refund transfer failed"
    log TimedOut(order_id=order_id, provider=o.provider, refund=o.price, slashed=slashed)


@external
def void_undelivered(order_id: uint256):
    """
    @notice A gated client (the Oracle) voids a committed result it could not deliver for
            DELIVERY_TIME after its challenge window: the client is refunded and the provider's
            collateral is slashed to it (the provider took a request whose output it could not
            deliver).
    @param order_id The order's id.
    """
    o: IMarket.Order = self.orders[order_id]
    assert self.gated[o.client] and msg.sender == o.client, "market: only a gated order's client voids it"
    assert o.state == COMMITTED and not self.challenged[order_id] and not self.data_requested[order_id], \
        "market: no undisputed committed result to void (a game or an asked-for output chunk is open)"
    assert block.timestamp > o.committed_at + o.challenge_window + DELIVERY_TIME, \
        "market: the result can still be delivered"
    self.orders[order_id].state = REFUNDED
    self.escrow_total -= o.price
    extcall registry.slash(o.provider, o.collateral, o.client, 0)
    extcall registry.adjust_reputation(o.provider, -1)
    assert extcall token.transfer(o.client, o.price), "market: refund transfer failed"
    log Undelivered(order_id=order_id, provider=o.provider, refund=o.price, slashed=o.collateral)


@external
def set_data_requested(order_id: uint256, requested: bool):
    """
    @notice The data-availability hook: while an output chunk asked of the provider is
            unanswered, the result cannot finalize (OutputFaults only).
    @param order_id The order's id.
    @param requested Whether a chunk is asked for and unanswered.
    """
    assert msg.sender == self.output_faults, "market: only OutputFaults holds a result for its data"
    assert self.orders[order_id].state == COMMITTED, "market: only a committed result's data can be asked for"
    self.data_requested[order_id] = requested


@external
def set_challenged(order_id: uint256, challenged_: bool):
    """
    @notice The dispute hook: a challenged result cannot finalize (Disputes contract only).
            While it is challenged, STAKE_SLASH_BPS of the provider's other stake is held, so
            it cannot be withdrawn before the dispute ends.
    @param order_id The order's id.
    @param challenged_ Whether the result is challenged.
    """
    assert msg.sender == self.disputes, "market: only the disputes contract may challenge a result"
    o: IMarket.Order = self.orders[order_id]
    assert o.state == COMMITTED, "market: only a committed result can be challenged"
    assert challenged_ != self.challenged[order_id], "market: the result is already in that state"
    self.challenged[order_id] = challenged_
    if challenged_:
        self.held[order_id] = extcall registry.hold(o.provider, STAKE_SLASH_BPS)
    else:
        extcall registry.unlock(o.provider, self.held[order_id])
        self.held[order_id] = 0
    log ChallengeSet(order_id=order_id, challenged=challenged_)


@external
def resolve_dispute(order_id: uint256, outcome: uint8, challenger: address):
    """
    @notice The end of a dispute (Disputes contract only).
            PROVIDER_WON: the result stands, and a fresh challenge window starts now, so another
            challenger always gets a full window (a cheater's own challenge cannot shut it).
            PROVIDER_LOST: the result is overturned: the client gets the price back, and the
            provider's collateral and the stake share held since the challenge are slashed:
            BURN_BPS of it is burnt, the rest goes to the challenger.
            UNDECIDED: the game could not be judged; the client gets the price back and the
            provider's collateral is released, nobody is slashed.
    @param order_id The order's id.
    @param outcome 1 PROVIDER_WON, 2 PROVIDER_LOST, 3 UNDECIDED.
    @param challenger Who is paid the slash, less what is burnt, when the provider lost.
    """
    assert msg.sender == self.disputes, "market: only the disputes contract resolves disputes"
    o: IMarket.Order = self.orders[order_id]
    assert o.state == COMMITTED and self.challenged[order_id], "market: no dispute is open on this order"
    self.challenged[order_id] = False
    held: uint256 = self.held[order_id]
    self.held[order_id] = 0
    if outcome != PROVIDER_LOST:
        extcall registry.unlock(o.provider, held)
    if outcome == PROVIDER_WON:
        self.orders[order_id].committed_at = block.timestamp  # the challenge window starts again
        log ChallengeSet(order_id=order_id, challenged=False)
        return
    self.escrow_total -= o.price
    if outcome == PROVIDER_LOST:
        self.orders[order_id].state = OVERTURNED
        extcall registry.slash(o.provider, o.collateral + held, challenger, BURN_BPS)
        extcall registry.adjust_reputation(o.provider, -1)
        assert extcall token.transfer(o.client, o.price), "market: refund transfer failed"
        log Overturned(order_id=order_id, provider=o.provider, challenger=challenger, refund=o.price,
                       slashed=o.collateral + held)
        return
    assert outcome == UNDECIDED, "market: unknown dispute outcome"
    self.orders[order_id].state = REFUNDED
    extcall registry.unlock(o.provider, o.collateral)
    assert extcall token.transfer(o.client, o.price), "market: refund transfer failed"
    log Undecided(order_id=order_id, refund=o.price)
