# pragma version ~=0.4.3
# pragma optimize codesize
"""
@title Disputes
@notice The dispute game over a committed result. During the challenge window anyone may
        challenge with a bond and their own trace root. Phase one bisects over the two traces'
        chain values (see `veracity/verify/bisection.py`): each round both parties reveal the
        chain value at the midpoint with a Merkle proof against their own root, until they agree
        before one record and disagree at it. Each move has a deadline; a party that misses it
        loses. Losing as the provider: the client is refunded, and the provider's collateral and
        a share of its stake go to the challenger, who gets its bond back. Losing as the
        challenger: its bond goes to the provider, and the result may finalize. A committed
        output that is not the committed trace's is proven in one call on `OutputFaults`.
        Over a two-level program (`veracity/exact/levels.py`: the provider committed only its
        coarse trace, the records a later step reads) the located record is a step's: both
        open the step (`open_step`) with the root of its op-level trace, recomputed now, which
        must go on from the agreed chain value before the step and hold the party's committed
        record at its place; bisection then goes on over the two op-level traces, numbered on
        from the coarse records before the step, and the phases below run inside it. A party
        that cannot connect its op-level trace to its coarse commitment misses its move.
        Phase two goes inside the located record: both open it against the order's program
        (the record's descriptor, proven against the program root the client posted, fixes its
        name, dtype and dims; the party shows its chunk root), then descend their chunk trees to
        one differing chunk, reveal it (challenger first, then the provider with both), and the
        contract finds the first differing element. Phase three: anyone shows the element's
        inputs to a referee (`Referee`, `AttentionReferee`, `TrainReferee`, `LlamaReferee`, `LlamaAttentionReferee`): rows of earlier records, each proven
        by chain links forward to the agreed chain value, and rows of the descriptor's
        constants; `OneStep` recomputes it, and the provider loses if its value is not the
        recomputed one. An input record is judged at once, by the digest the client posted.
        The bond is priced by what a game holds up: a base plus BOND_BPS_PER_ROUND of the
        order's price and collateral for every move round the game can last. Half of a lost bond
        is burnt (the rest goes to the provider), so even a provider's own sybil pays to delay.
@dev Every op kind the inference models and the digits MLP's training use is judged. An element
     nobody judges by its deadline (the fine-tune's and tiny-GPT training's state records have no
     referee yet) ends in the provider's favour: a game never ends in the challenger's favour
     unless it proved a fault. A record of an order without a program (no longer possible: the
     Market requires one) ends undecided.
"""

from ethereum.ercs import IERC20

from interfaces import IDisputes
from interfaces import IMarket
from interfaces import IToken
import tensors

implements: IDisputes

ORDER_COMMITTED: constant(uint8) = 3  # the Market's order state
BISECTING: constant(uint8) = 1  # game stages
LOCATED: constant(uint8) = 2  # waiting for both to open the record
SETTLED: constant(uint8) = 3
DESCENDING: constant(uint8) = 4  # walking down the two chunk trees
CHUNK: constant(uint8) = 5  # waiting for the differing chunk (challenger, then provider)
JUDGING: constant(uint8) = 6  # one element located: waiting for its inputs
K_INPUT: constant(uint8) = 1  # op kinds (`veracity/exact/program.py`)
K_STEP: constant(uint8) = 42  # a coarse record: the game goes on inside its step (`veracity/exact/levels.py`)
MAX_STEP_LINKS: constant(uint256) = 256  # a step's coarse records before the located one, at most
PROVIDER_WON: constant(uint8) = 1  # outcomes, as the Market names them
PROVIDER_LOST: constant(uint8) = 2
UNDECIDED: constant(uint8) = 3
JUDGE_TIME: constant(uint256) = 4  # move times a located element waits for its judgement
PROVIDER: constant(uint8) = 1
CHALLENGER: constant(uint8) = 2
MAX_DEPTH: constant(uint256) = 64
BOND_BPS_PER_ROUND: constant(uint256) = 10  # of the order's price + collateral, per round a game can last
INSIDE_ROUNDS: constant(uint256) = 72  # rounds below the coarse trace at most: the step's open and bisection, then the record's open, chunk-tree descent, chunk, judgement
BURN_BPS: constant(uint256) = 5000  # share of a lost bond that is burnt
MAX_BPS: constant(uint256) = 10000

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
    agreed: bytes32  # the chain value both hold just before the differing record
    provider_at: bytes32  # each party's chain value at the differing record
    challenger_at: bytes32
    desc_hash: bytes32  # the located record's descriptor
    provider_node: bytes32  # each party's current node in its chunk tree (the chunk root when opened)
    challenger_node: bytes32
    provider_left: bytes32  # the children each revealed this round
    provider_right: bytes32
    challenger_left: bytes32
    challenger_right: bytes32
    chunks: uint256  # chunks in the record's tensor
    level: uint256  # the current node's level (0: a chunk)
    index: uint256  # its index in that level
    element: uint256  # the differing element (flat index in the record's tensor)
    provider_element: int256
    challenger_element: int256
    provider_root: bytes32  # the provider's root at this level (its committed trace root, then its step's)
    prog_root: bytes32  # the program the located record is opened against (the order's, then the step's)
    prog_len: uint256
    offset: uint256  # inside a step: its first record's index in the order's trace (the referees' record numbers)
    fine: bool  # the game is inside a step (its op-level trace)
    provider_sub: bytes32  # each party's op-level root for the located step
    challenger_sub: bytes32

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

event Opened:
    order_id: indexed(uint256)
    party: indexed(address)
    chunk_root: bytes32

event ChunkRevealed:
    order_id: indexed(uint256)
    party: indexed(address)
    index: uint256
    chunk: Bytes[tensors.CHUNK_MAX]

event ElementLocated:
    order_id: indexed(uint256)
    element: uint256
    provider_value: int256
    challenger_value: int256

event Settled:
    order_id: indexed(uint256)
    outcome: uint8  # 1 the provider won, 2 it lost, 3 undecided
    reason: String[80]

token: public(immutable(IERC20))
market: public(immutable(IMarket))
bond: public(immutable(uint256))
move_time: public(immutable(uint256))
referees: public(immutable(address[5]))  # Referee, AttentionReferee, TrainReferee, LlamaReferee, LlamaAttentionReferee
output_faults: public(immutable(address))  # OutputFaults: proves a committed output is not its trace's
games: public(HashMap[uint256, Game])


@deploy
def __init__(token_: IERC20, market_: IMarket, bond_: uint256, move_time_: uint256, referees_: address[5],
             output_faults_: address):
    token = token_
    market = market_
    bond = bond_
    move_time = move_time_
    referees = referees_
    output_faults = output_faults_


@internal
@view
def _bond(o: IMarket.Order) -> uint256:
    rounds: uint256 = tensors._bitlen(o.trace_length) + INSIDE_ROUNDS
    return bond + (o.price + o.collateral) * rounds * BOND_BPS_PER_ROUND // MAX_BPS


@external
@view
def bond_for(order_id: uint256) -> uint256:
    """
    @notice The bond a challenge of this order's result takes now (approve it first).
    @param order_id The order's id.
    @return The bond, in tokens.
    """
    return self._bond(staticcall market.orders(order_id))


@external
def challenge(order_id: uint256, root: bytes32):
    """
    @notice Challenge a committed result within its window, with the bond (`bond_for`) and your
            trace root.
    @param order_id The order's id.
    @param root The challenger's trace root.
    """
    o: IMarket.Order = staticcall market.orders(order_id)
    assert o.state == ORDER_COMMITTED, "disputes: only a committed result can be challenged"
    assert block.timestamp < o.committed_at + o.challenge_window, "disputes: the challenge window has closed"
    stage: uint8 = self.games[order_id].stage
    # a result that won a game can be challenged again: the Market restarted its window
    assert stage == 0 or stage == SETTLED, "disputes: this result is already challenged"
    assert root != o.trace_root, "disputes: that is the committed trace root"
    assert msg.sender != o.provider, "disputes: a provider cannot challenge its own result"
    assert o.trace_length > 0 and o.trace_length <= 2**63, "disputes: the trace length is out of range"
    b: uint256 = self._bond(o)
    assert extcall token.transferFrom(msg.sender, self, b), "disputes: bond transfer failed"
    extcall market.set_challenged(order_id, True)
    deadline: uint256 = block.timestamp + move_time
    # differ == size marks the opening query: do the traces differ at their last record at all?
    g: Game = empty(Game)
    g.challenger = msg.sender
    g.bond = b
    g.root = root
    g.size = o.trace_length
    g.agree = -1
    g.differ = o.trace_length
    g.query = o.trace_length - 1
    g.deadline = deadline
    g.stage = BISECTING
    g.provider_root = o.trace_root
    p: IMarket.Program = staticcall market.programs(order_id)
    g.prog_root = p.root
    g.prog_len = p.length
    self.games[order_id] = g
    log Challenged(order_id=order_id, challenger=msg.sender, bond=b, root=root)
    log Query(order_id=order_id, index=o.trace_length - 1, agree=-1, differ=o.trace_length, deadline=deadline)


@external
def reveal(order_id: uint256, chain_value: bytes32, proof: DynArray[bytes32, MAX_DEPTH]):
    """
    @notice Reveal your chain value at the game's current query index, with its Merkle proof.
    @param order_id The order's id.
    @param chain_value Your chain value at the query index.
    @param proof Its Merkle proof against your trace root.
    """
    g: Game = self.games[order_id]
    assert g.stage == BISECTING, "disputes: no bisection is waiting for a reveal"
    assert block.timestamp <= g.deadline, "disputes: the move's deadline has passed"
    o: IMarket.Order = staticcall market.orders(order_id)
    party: uint8 = 0
    root: bytes32 = empty(bytes32)
    if msg.sender == o.provider:
        party = PROVIDER
        root = g.provider_root
        g.provider_value = chain_value
    elif msg.sender == g.challenger:
        party = CHALLENGER
        root = g.root
        g.challenger_value = chain_value
    assert party != 0, "disputes: only the provider and the challenger play"
    assert g.revealed & party == 0, "disputes: you already revealed at this index"
    assert tensors._proves(root, chain_value, g.query, g.size, proof), "disputes: the proof does not match your root"
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
        g.provider_at = g.provider_value
        g.challenger_at = g.challenger_value
    elif same:
        g.agree = convert(g.query, int256)
        g.agreed = g.provider_value
    else:
        g.differ = g.query
        g.provider_at = g.provider_value
        g.challenger_at = g.challenger_value
    if convert(g.differ, int256) == g.agree + 1:
        g.stage = LOCATED
        g.revealed = 0
        g.deadline = block.timestamp + move_time
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
            neither did). A game that located its element and was not judged by its deadline
            ends in the provider's favour: a challenger wins only by proving a fault (an element
            no referee judges, such as a training state record, is never the provider's loss).
    @param order_id The order's id.
    """
    g: Game = self.games[order_id]
    assert g.stage != 0 and g.stage != SETTLED, "disputes: no move is pending"
    assert block.timestamp > g.deadline, "disputes: the move's deadline has not passed"
    if g.stage == JUDGING:
        self._settle(order_id, PROVIDER_WON, "the challenger did not prove the located element wrong")
    elif g.stage == LOCATED and (staticcall market.programs(order_id)).length == 0:
        self._settle(order_id, UNDECIDED, "the order has no program to judge the record by")
    elif g.revealed == CHALLENGER:
        self._settle(order_id, PROVIDER_LOST, "the provider missed its move's deadline")
    else:
        self._settle(order_id, PROVIDER_WON, "the challenger missed its move's deadline")


# the output: bound to the trace (`OutputFaults` proves a fault; the provider loses here) -----------

@external
def fault_proven(order_id: uint256, prover: address):
    """
    @notice `OutputFaults` proved that the committed output is not the committed trace's: the
            provider loses at once, as in a lost game, and the prover takes the challenger's
            share. A game that runs (perhaps a sybil's, to hold proofs off) ends here, its bond
            returned.
    @param order_id The order's id.
    @param prover Who proved it.
    """
    assert msg.sender == output_faults, "disputes: only OutputFaults reports an output fault"
    g: Game = self.games[order_id]
    if g.stage == 0 or g.stage == SETTLED:
        extcall market.set_challenged(order_id, True)
    else:
        self.games[order_id].stage = SETTLED
        assert extcall token.transfer(g.challenger, g.bond), "disputes: bond refund failed"
        log Settled(order_id=order_id, outcome=PROVIDER_LOST, reason="the output was proven wrong")
    extcall market.resolve_dispute(order_id, PROVIDER_LOST, prover)


# phase two: inside the located record ------------------------------------------------------------

@internal
@pure
def _width(chunks: uint256, level: uint256) -> uint256:
    return (chunks + (1 << level) - 1) >> level


@internal
def _party(order_id: uint256, g: Game) -> uint8:
    o: IMarket.Order = staticcall market.orders(order_id)
    if msg.sender == o.provider:
        return PROVIDER
    assert msg.sender == g.challenger, "disputes: only the provider and the challenger play"
    return CHALLENGER


@internal
def _next_move(order_id: uint256, g: Game):
    g.revealed = 0
    g.deadline = block.timestamp + move_time
    self.games[order_id] = g


@internal
def _after_descent(order_id: uint256, g: Game):
    """Skip levels where the node was carried up unchanged; stop at a chunk."""
    for _: uint256 in range(MAX_DEPTH):
        if g.level == 0 or 2 * g.index + 1 < self._width(g.chunks, g.level - 1):
            break
        g.level -= 1
        g.index = 2 * g.index
    if g.level == 0:
        g.stage = CHUNK
    self._next_move(order_id, g)


@external
def open_step(order_id: uint256, desc: tensors.OpDesc, desc_proof: DynArray[bytes32, MAX_DEPTH], digest: bytes32,
              seed: bytes32, links: DynArray[bytes32, MAX_STEP_LINKS], sub_root: bytes32, prev: bytes32,
              prev_proof: DynArray[bytes32, MAX_DEPTH], at: bytes32, at_proof: DynArray[bytes32, MAX_DEPTH]):
    """
    @notice Open your differing coarse record's step: commit to the step's op-level trace, which
            must start from the agreed chain value before the step and hold your committed record.
            Once both have, the game bisects the two op-level traces (the record's place in the
            step is their first known difference), then goes inside one op's record as always.
    @param order_id The order's id.
    @param desc The coarse record's descriptor (kind STEP: `inputs[0]` the step's first coarse
           record, `consts[0]` the step's op-level program root, `params` the record's place in
           the step and the step's length).
    @param desc_proof Its Merkle proof against the order's program root.
    @param digest Your record's tensor digest.
    @param seed The chain value before the step (zero before the first record).
    @param links The leaves of the step's coarse records before this one (from `seed` they hash
           forward to the agreed chain value).
    @param sub_root Your op-level trace's root (chain values going on from `seed`).
    @param prev Your op-level chain value before the record (`seed` if it is the step's first).
    @param prev_proof `prev`'s Merkle proof against `sub_root`.
    @param at Your op-level chain value at the record.
    @param at_proof `at`'s Merkle proof against `sub_root`.
    """
    g: Game = self.games[order_id]
    assert g.stage == LOCATED and not g.fine, "disputes: no record is waiting to be opened"
    assert block.timestamp <= g.deadline, "disputes: the move's deadline has passed"
    party: uint8 = self._party(order_id, g)
    assert g.revealed & party == 0, "disputes: you already opened this record"
    assert desc.kind == K_STEP and tensors._proves(g.prog_root, keccak256(abi_encode(desc)), g.differ, g.prog_len,
                                                   desc_proof), "disputes: that descriptor is not the program's for this record"
    leaf: bytes32 = tensors._leaf(desc.step, desc.op, digest)
    mine: bytes32 = g.provider_at if party == PROVIDER else g.challenger_at
    assert sha256(concat(b"\x02", g.agreed, leaf)) == mine, "disputes: that record does not give your committed chain value"
    first: uint256 = desc.inputs[0]
    assert first <= g.differ and len(links) == g.differ - first, "disputes: give the step's earlier leaves"
    c: bytes32 = seed
    for l: bytes32 in links:
        c = sha256(concat(b"\x02", c, l))
    assert c == g.agreed, "disputes: the seed does not give the agreed value"
    f: uint256 = convert(desc.params[0], uint256)
    size: uint256 = convert(desc.params[1], uint256)
    if f > 0:
        assert tensors._proves(sub_root, prev, f - 1, size, prev_proof), "disputes: your step's trace does not hold your committed record"
    else:
        assert prev == seed, "disputes: your step's trace does not hold your committed record"
    assert tensors._proves(sub_root, at, f, size, at_proof) and sha256(concat(b"\x02", prev, leaf)) == at, \
        "disputes: your step's trace does not hold your committed record"
    if party == PROVIDER:
        g.provider_sub = sub_root
        g.provider_left = at
    else:
        g.challenger_sub = sub_root
        g.challenger_left = at
    g.revealed |= party
    if g.revealed != PROVIDER | CHALLENGER:
        self.games[order_id] = g
        return
    g.fine = True
    g.provider_root = g.provider_sub
    g.root = g.challenger_sub
    g.size = size
    g.prog_root = desc.consts[0]
    g.prog_len = size
    g.offset = first
    g.agree = -1
    g.agreed = seed
    g.differ = f
    g.provider_at = g.provider_left
    g.challenger_at = g.challenger_left
    g.revealed = 0
    g.deadline = block.timestamp + move_time
    if f == 0:
        self.games[order_id] = g
        log Located(order_id=order_id, record=first)
        return
    g.stage = BISECTING
    g.query = (f - 1) // 2
    self.games[order_id] = g
    log Query(order_id=order_id, index=g.query, agree=-1, differ=f, deadline=g.deadline)


@external
def open_record(order_id: uint256, desc: tensors.OpDesc, desc_proof: DynArray[bytes32, MAX_DEPTH], chunk_root: bytes32):
    """
    @notice Open your differing record: its descriptor (proven against the order's program) and
            your tensor's chunk root; they must give back your committed chain value.
    @param order_id The order's id.
    @param desc The record's descriptor.
    @param desc_proof Its Merkle proof against the order's program root.
    @param chunk_root Your tensor's chunk root.
    """
    g: Game = self.games[order_id]
    assert g.stage == LOCATED, "disputes: no record is waiting to be opened"
    assert block.timestamp <= g.deadline, "disputes: the move's deadline has passed"
    party: uint8 = self._party(order_id, g)
    assert g.revealed & party == 0, "disputes: you already opened this record"
    h: bytes32 = keccak256(abi_encode(desc))
    assert g.prog_len == g.size and tensors._proves(g.prog_root, h, g.differ, g.prog_len, desc_proof), \
        "disputes: that descriptor is not the program's for this record"
    assert desc.kind != K_STEP, "disputes: a step's record is opened with open_step"
    digest: bytes32 = tensors._digest(desc.dtype, desc.dims, chunk_root)
    mine: bytes32 = g.provider_at if party == PROVIDER else g.challenger_at
    assert sha256(concat(b"\x02", g.agreed, tensors._leaf(desc.step, desc.op, digest))) == mine, \
        "disputes: that record does not give your committed chain value"
    g.desc_hash = h
    log Opened(order_id=order_id, party=msg.sender, chunk_root=chunk_root)
    if desc.kind == K_INPUT:  # the client posted the input's digest: judged at once
        self.games[order_id] = g
        right: bool = digest == desc.consts[0]
        if (party == PROVIDER) == right:
            self._settle(order_id, PROVIDER_WON, "the input record is the one the client posted")
        else:
            self._settle(order_id, PROVIDER_LOST, "the provider's input record is not the client's")
        return
    if party == PROVIDER:
        g.provider_node = chunk_root
    else:
        g.challenger_node = chunk_root
    g.revealed |= party
    if g.revealed != PROVIDER | CHALLENGER:
        self.games[order_id] = g
        return
    row: uint256 = 0
    rows: uint256 = 0
    per: uint256 = 0
    row, rows, per, g.chunks = tensors._layout(desc.dtype, desc.dims)
    g.level = 0
    for _: uint256 in range(MAX_DEPTH):
        if self._width(g.chunks, g.level) <= 1:
            break
        g.level += 1
    g.index = 0
    g.stage = DESCENDING
    self._after_descent(order_id, g)


@external
def descend(order_id: uint256, left: bytes32, right: bytes32):
    """
    @notice Reveal the two children of your current chunk-tree node.
    @param order_id The order's id.
    @param left The left child.
    @param right The right child.
    """
    g: Game = self.games[order_id]
    assert g.stage == DESCENDING, "disputes: no descent is waiting for a move"
    assert block.timestamp <= g.deadline, "disputes: the move's deadline has passed"
    party: uint8 = self._party(order_id, g)
    assert g.revealed & party == 0, "disputes: you already moved this round"
    node: bytes32 = sha256(concat(b"\x01", left, right))
    if party == PROVIDER:
        assert node == g.provider_node, "disputes: those children do not hash to your node"
        g.provider_left = left
        g.provider_right = right
    else:
        assert node == g.challenger_node, "disputes: those children do not hash to your node"
        g.challenger_left = left
        g.challenger_right = right
    g.revealed |= party
    if g.revealed != PROVIDER | CHALLENGER:
        self.games[order_id] = g
        return
    g.level -= 1
    if g.provider_left != g.challenger_left:
        g.index = 2 * g.index
        g.provider_node = g.provider_left
        g.challenger_node = g.challenger_left
    else:
        g.index = 2 * g.index + 1
        g.provider_node = g.provider_right
        g.challenger_node = g.challenger_right
    self._after_descent(order_id, g)


@external
def reveal_chunk(order_id: uint256, desc: tensors.OpDesc, chunk: Bytes[tensors.CHUNK_MAX], other: Bytes[tensors.CHUNK_MAX]):
    """
    @notice Reveal the differing chunk: the challenger first (`other` empty); then the provider,
            with its chunk and the challenger's, and the contract finds the first differing element.
    @param order_id The order's id.
    @param desc The record's descriptor.
    @param chunk Your chunk.
    @param other The challenger's chunk (empty for the challenger).
    """
    g: Game = self.games[order_id]
    assert g.stage == CHUNK, "disputes: no chunk is waiting to be revealed"
    assert block.timestamp <= g.deadline, "disputes: the move's deadline has passed"
    assert keccak256(abi_encode(desc)) == g.desc_hash, "disputes: that is not the record's descriptor"
    party: uint8 = self._party(order_id, g)
    row: uint256 = 0
    rows: uint256 = 0
    per: uint256 = 0
    chunks: uint256 = 0
    row, rows, per, chunks = tensors._layout(desc.dtype, desc.dims)
    size: uint256 = min(per, rows - g.index * per) * row
    assert len(chunk) == size, "disputes: the chunk has the wrong length for this record"
    if party == CHALLENGER:
        assert g.revealed == 0, "disputes: you already revealed"
        assert sha256(concat(b"\x03", chunk)) == g.challenger_node, "disputes: that chunk is not your committed one"
        g.revealed = CHALLENGER
        g.deadline = block.timestamp + move_time
        self.games[order_id] = g
        log ChunkRevealed(order_id=order_id, party=msg.sender, index=g.index, chunk=chunk)
        return
    assert g.revealed == CHALLENGER, "disputes: the challenger reveals its chunk first"
    assert sha256(concat(b"\x03", chunk)) == g.provider_node, "disputes: that chunk is not your committed one"
    assert sha256(concat(b"\x03", other)) == g.challenger_node, "disputes: that is not the challenger's chunk"
    mine: Bytes[tensors.ROW_BYTES] = concat(chunk, empty(bytes32))
    theirs: Bytes[tensors.ROW_BYTES] = concat(other, empty(bytes32))
    w: uint256 = tensors._itemsize(desc.dtype)
    at: uint256 = size
    for i: uint256 in range(tensors.CHUNK_MAX // 32 + 1):
        off: uint256 = i * 32
        if off >= size:
            break
        a: uint256 = convert(extract32(mine, off), uint256)
        b: uint256 = convert(extract32(theirs, off), uint256)
        if a != b:
            byte: uint256 = off + (256 - tensors._bitlen(a ^ b)) // 8
            at = byte - byte % w
            break
    assert at < size, "disputes: the chunks do not differ"
    signed: bool = desc.dtype != 2
    g.element = g.index * per * (row // w) + at // w
    g.provider_element = tensors._element(mine, at, w, signed)
    g.challenger_element = tensors._element(theirs, at, w, signed)
    g.stage = JUDGING
    g.revealed = 0
    g.deadline = block.timestamp + JUDGE_TIME * move_time
    self.games[order_id] = g
    log ElementLocated(order_id=order_id, element=g.element, provider_value=g.provider_element,
                       challenger_value=g.challenger_element)


# phase three: the Referee recomputes the element ---------------------------------------------------

@external
@view
def judging(order_id: uint256) -> (bytes32, uint256, uint256, bytes32):
    """
    @notice What the referees need of a game waiting for its judgement: the record's descriptor
            hash, the record's index, the element's flat index, and the chain value both parties
            revealed just before the record (which commits to every record before it).
    @param order_id The order's id.
    @return The record's descriptor hash.
    @return The record's index in the trace.
    @return The element's flat index in the record's tensor.
    @return The chain value both parties revealed just before the record.
    """
    g: Game = self.games[order_id]
    assert g.stage == JUDGING, "disputes: no element is waiting for its judgement"
    return g.desc_hash, g.offset + g.differ, g.element, g.agreed


@external
def judged(order_id: uint256, recomputed: int256):
    """
    @notice The Referee's verdict: the provider loses unless its element is the recomputed one.
    @param order_id The order's id.
    @param recomputed The element's recomputed value.
    """
    assert msg.sender in referees, "disputes: only the referees judge"
    g: Game = self.games[order_id]
    assert g.stage == JUDGING, "disputes: no element is waiting for its judgement"
    if recomputed == g.provider_element:
        self._settle(order_id, PROVIDER_WON, "one-step: the provider's element is the recomputed one")
    else:
        self._settle(order_id, PROVIDER_LOST, "one-step: the provider's element is not the recomputed one")


@internal
def _settle(order_id: uint256, outcome: uint8, reason: String[80]):
    g: Game = self.games[order_id]
    self.games[order_id].stage = SETTLED
    o: IMarket.Order = staticcall market.orders(order_id)
    extcall market.resolve_dispute(order_id, outcome, g.challenger)
    if outcome != PROVIDER_LOST:  # won, or undecided: the challenger started a game nobody judged
        burnt: uint256 = g.bond * BURN_BPS // MAX_BPS
        extcall IToken(token.address).burn(burnt)
        assert extcall token.transfer(o.provider, g.bond - burnt), "disputes: bond transfer failed"
    else:
        assert extcall token.transfer(g.challenger, g.bond), "disputes: bond refund failed"
    log Settled(order_id=order_id, outcome=outcome, reason=reason)
