# pragma version ~=0.4.3
"""
@title Disputes
@notice The dispute game over a committed result. During the challenge window anyone may
        challenge with a bond and their own trace root. Phase one bisects over the two traces'
        chain values (see `veracity/verify/bisection.py`): each round both parties reveal the
        chain value at the midpoint with a Merkle proof against their own root, until they agree
        before one record and disagree at it. Each move has a deadline; a party that misses it
        loses. Losing as the provider: the client is refunded, and the provider's collateral and
        a share of its stake go to the challenger, who gets its bond back. Losing as the
        challenger: its bond goes to the provider, and the result may finalize.
@dev Phases two and three (inside the located record, down to one element that `OneStep`
     recomputes) come next; until then a game that located its record ends undecided after
     LOCATED_EXPIRY move times (the client is refunded, nobody is slashed).
"""

from ethereum.ercs import IERC20

interface IMarket:
    def orders(order_id: uint256) -> Order: view
    def set_challenged(order_id: uint256, challenged_: bool): nonpayable
    def resolve_dispute(order_id: uint256, outcome: uint8, challenger: address): nonpayable

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

ORDER_COMMITTED: constant(uint8) = 3  # the Market's order state
BISECTING: constant(uint8) = 1  # game stages
LOCATED: constant(uint8) = 2
SETTLED: constant(uint8) = 3
PROVIDER_WON: constant(uint8) = 1  # outcomes, as the Market names them
PROVIDER_LOST: constant(uint8) = 2
UNDECIDED: constant(uint8) = 3
LOCATED_EXPIRY: constant(uint256) = 4  # move times a located game waits for the next phase
PROVIDER: constant(uint8) = 1
CHALLENGER: constant(uint8) = 2
MAX_DEPTH: constant(uint256) = 64

struct Game:
    challenger: address
    bond: uint256
    root: bytes32
    size: uint256
    agree: int256
    differ: uint256
    query: uint256
    provider_value: bytes32
    challenger_value: bytes32
    revealed: uint8
    deadline: uint256
    stage: uint8

event Challenged:
    order_id: indexed(uint256)
    challenger: indexed(address)
    bond: uint256
    root: bytes32

event Revealed:
    order_id: indexed(uint256)
    party: indexed(address)
    index: uint256
    chain_value: bytes32

event Query:
    order_id: indexed(uint256)
    index: uint256
    agree: int256
    differ: uint256
    deadline: uint256

event Located:
    order_id: indexed(uint256)
    record: uint256

event Settled:
    order_id: indexed(uint256)
    outcome: uint8  # 1 the provider won, 2 it lost, 3 undecided
    reason: String[80]

token: public(immutable(IERC20))
market: public(immutable(IMarket))
bond: public(immutable(uint256))
move_time: public(immutable(uint256))
games: public(HashMap[uint256, Game])


@deploy
def __init__(token_: IERC20, market_: IMarket, bond_: uint256, move_time_: uint256):
    token = token_
    market = market_
    bond = bond_
    move_time = move_time_


@internal
@pure
def _proves(root: bytes32, leaf: bytes32, index: uint256, size: uint256, proof: DynArray[bytes32, MAX_DEPTH]) -> bool:
    """Position-binding inclusion proof (`veracity/verify/merkle.py`)."""
    if index >= size:
        return False
    h: bytes32 = leaf
    idx: uint256 = index
    width: uint256 = size
    used: uint256 = 0
    for level: uint256 in range(MAX_DEPTH):
        if width <= 1:
            break
        if idx ^ 1 < width:
            if used >= len(proof):
                return False
            if idx & 1 == 1:
                h = sha256(concat(b"\x01", proof[used], h))
            else:
                h = sha256(concat(b"\x01", h, proof[used]))
            used += 1
        idx = idx >> 1
        width = (width + 1) >> 1
    return used == len(proof) and h == root


@external
def challenge(order_id: uint256, root: bytes32):
    """
    @notice Challenge a committed result within its window, with the bond and your trace root.
    """
    o: Order = staticcall market.orders(order_id)
    assert o.state == ORDER_COMMITTED, "disputes: only a committed result can be challenged"
    assert block.timestamp < o.committed_at + o.challenge_window, "disputes: the challenge window has closed"
    stage: uint8 = self.games[order_id].stage
    # a result that won a game can be challenged again: the Market restarted its window
    assert stage == 0 or stage == SETTLED, "disputes: this result is already challenged"
    assert root != o.trace_root, "disputes: that is the committed trace root"
    assert msg.sender != o.provider, "disputes: a provider cannot challenge its own result"
    assert o.trace_length > 0 and o.trace_length <= 2**63, "disputes: the trace length is out of range"
    assert extcall token.transferFrom(msg.sender, self, bond), "disputes: bond transfer failed"
    extcall market.set_challenged(order_id, True)
    deadline: uint256 = block.timestamp + move_time
    # differ == size marks the opening query: do the traces differ at their last record at all?
    self.games[order_id] = Game(challenger=msg.sender, bond=bond, root=root, size=o.trace_length, agree=-1,
                                differ=o.trace_length, query=o.trace_length - 1, provider_value=empty(bytes32),
                                challenger_value=empty(bytes32), revealed=0, deadline=deadline, stage=BISECTING)
    log Challenged(order_id=order_id, challenger=msg.sender, bond=bond, root=root)
    log Query(order_id=order_id, index=o.trace_length - 1, agree=-1, differ=o.trace_length, deadline=deadline)


@external
def reveal(order_id: uint256, chain_value: bytes32, proof: DynArray[bytes32, MAX_DEPTH]):
    """
    @notice Reveal your chain value at the game's current query index, with its Merkle proof.
    """
    g: Game = self.games[order_id]
    assert g.stage == BISECTING, "disputes: no bisection is waiting for a reveal"
    assert block.timestamp <= g.deadline, "disputes: the move's deadline has passed"
    o: Order = staticcall market.orders(order_id)
    party: uint8 = 0
    root: bytes32 = empty(bytes32)
    if msg.sender == o.provider:
        party = PROVIDER
        root = o.trace_root
        g.provider_value = chain_value
    elif msg.sender == g.challenger:
        party = CHALLENGER
        root = g.root
        g.challenger_value = chain_value
    assert party != 0, "disputes: only the provider and the challenger play"
    assert g.revealed & party == 0, "disputes: you already revealed at this index"
    assert self._proves(root, chain_value, g.query, g.size, proof), "disputes: the proof does not match your root"
    g.revealed |= party
    log Revealed(order_id=order_id, party=msg.sender, index=g.query, chain_value=chain_value)
    if g.revealed != PROVIDER | CHALLENGER:
        self.games[order_id] = g
        return
    same: bool = g.provider_value == g.challenger_value
    if g.differ == g.size:  # the opening reveal, at the last record
        if same:
            self.games[order_id] = g
            self._settle(order_id, PROVIDER_WON, "the traces agree on every record")
            return
        g.differ = g.size - 1
    elif same:
        g.agree = convert(g.query, int256)
    else:
        g.differ = g.query
    if convert(g.differ, int256) == g.agree + 1:
        g.stage = LOCATED
        g.deadline = block.timestamp + LOCATED_EXPIRY * move_time
        self.games[order_id] = g
        log Located(order_id=order_id, record=g.differ)
        return
    g.query = convert((g.agree + convert(g.differ, int256)) // 2, uint256)
    g.revealed = 0
    g.deadline = block.timestamp + move_time
    self.games[order_id] = g
    log Query(order_id=order_id, index=g.query, agree=g.agree, differ=g.differ, deadline=g.deadline)


@external
def timeout(order_id: uint256):
    """
    @notice After a move's deadline, the party that did not move loses (the challenger, if
            neither did). A game that located its record and was not judged by its deadline
            ends undecided: the client is refunded, nobody is slashed, the bond comes back.
    """
    g: Game = self.games[order_id]
    assert g.stage == BISECTING or g.stage == LOCATED, "disputes: no move is pending"
    assert block.timestamp > g.deadline, "disputes: the move's deadline has not passed"
    if g.stage == LOCATED:
        self._settle(order_id, UNDECIDED, "the located record was not judged in time")
    elif g.revealed == CHALLENGER:
        self._settle(order_id, PROVIDER_LOST, "the provider missed its move's deadline")
    else:
        self._settle(order_id, PROVIDER_WON, "the challenger missed its move's deadline")


@internal
def _settle(order_id: uint256, outcome: uint8, reason: String[80]):
    g: Game = self.games[order_id]
    self.games[order_id].stage = SETTLED
    o: Order = staticcall market.orders(order_id)
    extcall market.resolve_dispute(order_id, outcome, g.challenger)
    if outcome == PROVIDER_WON:
        assert extcall token.transfer(o.provider, g.bond), "disputes: bond transfer failed"
    else:
        assert extcall token.transfer(g.challenger, g.bond), "disputes: bond refund failed"
    log Settled(order_id=order_id, outcome=outcome, reason=reason)
