# pragma version ~=0.4.3
"""
@title Veracity LabelTasks
@notice Labelling with consensus. A requester posts a task (`post_task`): the items' CID, the
        classes, how many labellers, a reward (escrowed here), the stake each labeller puts up,
        a commit and a reveal deadline, an accuracy threshold and a slash share. Labellers stake
        and commit to their labels (`join_and_commit`), then reveal them (`reveal`); after the
        reveal deadline anyone calls `finalize`, which aggregates the revealed labels by a
        fixed-point Dawid-Skene EM and settles: labellers at or above the accuracy threshold share
        the reward in proportion to their estimated accuracy and get their stake back; those below
        it lose `slash_bps` of their stake; a labeller who committed and never revealed loses all
        of it. Every token pulled in is paid back out, to the wei.

        The aggregation is the one of `veracity/data/consensus.py`, operation for operation:
        crowd-kit's DawidSkene with its default stopping rule, in integers. Probabilities are
        integers over ONE = 2**24 (a floor of 2**-24 where crowd-kit clips at 1e-10); from the
        majority vote's shares, each iteration is an M-step (priors as the posteriors' mean,
        confusion counts from 1 normalised per true class by floor division, entries and priors at
        least 1) then an E-step (per item and class the exact product of the prior and one
        confusion entry per labeller, normalised by one floor division: at most 9 factors of at
        most 2**24, so no rounding and no overflow). It stops when crowd-kit's loss, its evidence
        lower bound per label, gains less than TOL (1e-5 nats) from one iteration to the next, or
        after MAX_ITERATIONS (100); the loss is computed in fixed point (log2 by squaring, the
        M-step's gain by a series), the same integers in Python. The consensus is each item's most
        probable class (ties: the lowest); a labeller's accuracy is the posterior mass on its own
        labels, averaged over the items, in basis points. Anyone can recompute both off chain, bit
        for bit, and `aggregate` runs the same code on any labels.

        A slow round takes more than one `finalize`: each runs at most ITERATIONS_PER_CALL EM
        iterations (so that every call fits EIP-7825's 2**24 gas per transaction, whatever the
        labels), keeps the EM's state and logs `Aggregating`; the call that finishes the EM
        settles. Pausing changes nothing: the state kept is all the EM needs, to the bit.

        A commitment is keccak256(abi_encode(task_id, labeller, labels, salt)): it names the
        labeller, so a copied commitment cannot be revealed by the copier, and reveals open only
        after the commit deadline, so nobody can commit to labels already revealed.
"""

from ethereum.ercs import IERC20

MAX_ITEMS: constant(uint256) = 64
MAX_LABELLERS: constant(uint256) = 8
MIN_LABELLERS: constant(uint256) = 3  # fewer revealed label sets cannot outvote one bad labeller
MAX_CLASSES: constant(uint256) = 4
MAX_SLOTS: constant(uint256) = MAX_LABELLERS * MAX_CLASSES  # (labeller, label) pairs
MAX_PAIRS: constant(uint256) = MAX_LABELLERS // 2  # the E-step takes the labellers in pairs
MAX_PAIR_SLOTS: constant(uint256) = MAX_PAIRS * 16  # (pair, label, label)
NEUTRAL: constant(uint256) = MAX_PAIR_SLOTS  # the table slot of a missing pair: entries 1
LANE: constant(uint256) = 64  # bits per class in a packed word
LANE_MASK: constant(uint256) = 2**64 - 1
ONE: constant(uint256) = 2**24
MAX_ITERATIONS: constant(uint256) = 100  # crowd-kit's default n_iter
ITERATIONS_PER_CALL: constant(uint256) = 36  # EM iterations one finalize runs at most: under 2**24 gas
LOG_BITS: constant(uint256) = 24  # fraction bits of a fixed-point log2
TOL: constant(uint256) = 242  # crowd-kit's default tol, 1e-5 nats per label, in 2**-24 bits
LOG2_E: constant(uint256) = 6196328019  # log2(e) * 2**32
BPS: constant(uint256) = 10000
MAX_DURATION: constant(uint256) = 30 * 86400  # a task's reveal deadline is at most 30 days away
OPEN: constant(uint8) = 1
FINALIZED: constant(uint8) = 2
CANCELLED: constant(uint8) = 3  # finalized with fewer than MIN_LABELLERS revealed: no consensus, reward refunded


struct Task:
    requester: address
    items_cid: bytes32
    n_items: uint256
    classes: uint256
    labels_per_item: uint256
    reward: uint256
    min_stake: uint256
    commit_deadline: uint256
    reveal_deadline: uint256
    accuracy_threshold_bps: uint256
    slash_bps: uint256
    state: uint8


struct EM:
    post: uint256[MAX_ITEMS]  # the posteriors q_t, packed (a 64-bit lane per class)
    conf: uint256[MAX_SLOTS]  # theta_{t-1}'s confusion entries, packed per (labeller, label)
    priors: uint256  # theta_{t-1}'s priors, packed
    evidence: uint256  # log2 of the evidence at theta_{t-1}, in 2**-24 bits, up to a constant
    loss: int256  # crowd-kit's loss at iteration t - 1, in 2**-24 bits, up to a constant
    iterations: uint256  # t: the E-steps run
    done: bool


event TaskPosted:
    task_id: indexed(uint256)
    requester: indexed(address)
    items_cid: bytes32
    n_items: uint256
    classes: uint256
    labels_per_item: uint256
    reward: uint256
    min_stake: uint256
    commit_deadline: uint256
    reveal_deadline: uint256
    accuracy_threshold_bps: uint256
    slash_bps: uint256

event Committed:
    task_id: indexed(uint256)
    labeller: indexed(address)
    commitment: bytes32
    stake: uint256

event Revealed:
    task_id: indexed(uint256)
    labeller: indexed(address)
    labels: Bytes[MAX_ITEMS]

event Finalized:
    task_id: indexed(uint256)
    consensus: Bytes[MAX_ITEMS]  # empty when fewer than MIN_LABELLERS revealed
    revealed: uint256
    iterations: uint256  # EM iterations the aggregation ran (0 when there was none)

event Aggregating:
    task_id: indexed(uint256)
    iterations: uint256  # EM iterations run so far: call finalize again to go on

event Paid:
    task_id: indexed(uint256)
    labeller: indexed(address)
    amount: uint256  # the labeller's share of the reward
    stake_returned: uint256
    accuracy_bps: uint256

event Slashed:
    task_id: indexed(uint256)
    labeller: indexed(address)
    amount: uint256  # to the treasury

event Refunded:
    task_id: indexed(uint256)
    requester: indexed(address)
    amount: uint256  # the reward's dust, or all of it when nobody qualified or too few revealed


token: public(immutable(IERC20))
treasury: public(immutable(address))
task_count: public(uint256)
_tasks: HashMap[uint256, Task]
_labellers: HashMap[uint256, DynArray[address, MAX_LABELLERS]]  # in the order they joined
_commitments: HashMap[uint256, HashMap[address, bytes32]]
_revealed: HashMap[uint256, HashMap[address, Bytes[MAX_ITEMS]]]
_consensus: HashMap[uint256, Bytes[MAX_ITEMS]]
_accuracy: HashMap[uint256, HashMap[address, uint256]]
_iterations: HashMap[uint256, uint256]  # EM iterations a finalized task's aggregation ran
_em_state: HashMap[uint256, EM]  # where a paused aggregation goes on


@deploy
def __init__(token_: IERC20, treasury_: address):
    assert treasury_ != empty(address), "labels: name a treasury for slashed stakes"
    token = token_
    treasury = treasury_


@external
def post_task(items_cid: bytes32, n_items: uint256, classes: uint256, labels_per_item: uint256, reward: uint256,
              min_stake: uint256, commit_deadline: uint256, reveal_deadline: uint256,
              accuracy_threshold_bps: uint256, slash_bps: uint256) -> uint256:
    """
    @notice Post a labelling task and escrow its reward (approve this contract for `reward` first).
    @param items_cid The CID of the items to label (in the order the labels follow).
    @param n_items How many items: 1 to 64.
    @param classes The label set's size K: labels are 0..K-1, K from 2 to 4.
    @param labels_per_item How many labellers may join: 3 to 8.
    @param reward What the labellers share.
    @param min_stake What each labeller stakes (positive: it is what a spammer loses).
    @param commit_deadline The last second (unix time) to join and commit.
    @param reveal_deadline The last second to reveal: after the commit deadline, within 30 days.
    @param accuracy_threshold_bps The estimated accuracy (basis points) a labeller needs to be paid.
    @param slash_bps The share of its stake (basis points) a labeller below the threshold loses.
    @return The task's id (from 1).
    """
    assert n_items >= 1 and n_items <= MAX_ITEMS, "labels: a task has 1 to 64 items"
    assert classes >= 2 and classes <= MAX_CLASSES, "labels: a task has 2 to 4 classes"
    assert labels_per_item >= MIN_LABELLERS and labels_per_item <= MAX_LABELLERS, \
        "labels: a task takes 3 to 8 labellers"
    assert reward > 0, "labels: the reward must be positive"
    assert min_stake > 0, "labels: the stake must be positive (it is what a careless labeller loses)"
    assert commit_deadline > block.timestamp, "labels: the commit deadline has passed"
    assert reveal_deadline > commit_deadline, "labels: the reveal deadline must come after the commit deadline"
    assert reveal_deadline <= block.timestamp + MAX_DURATION, "labels: the reveal deadline is more than 30 days away"
    assert accuracy_threshold_bps <= BPS and slash_bps <= BPS, "labels: the threshold and slash are at most 10000 bps"
    task_id: uint256 = self.task_count + 1
    self.task_count = task_id
    self._tasks[task_id] = Task(requester=msg.sender, items_cid=items_cid, n_items=n_items, classes=classes,
                                labels_per_item=labels_per_item, reward=reward, min_stake=min_stake,
                                commit_deadline=commit_deadline, reveal_deadline=reveal_deadline,
                                accuracy_threshold_bps=accuracy_threshold_bps, slash_bps=slash_bps, state=OPEN)
    assert extcall token.transferFrom(msg.sender, self, reward, default_return_value=True), \
        "labels: the reward transfer failed (approve the reward first)"
    log TaskPosted(task_id=task_id, requester=msg.sender, items_cid=items_cid, n_items=n_items, classes=classes,
                   labels_per_item=labels_per_item, reward=reward, min_stake=min_stake,
                   commit_deadline=commit_deadline, reveal_deadline=reveal_deadline,
                   accuracy_threshold_bps=accuracy_threshold_bps, slash_bps=slash_bps)
    return task_id


@external
def join_and_commit(task_id: uint256, commitment: bytes32):
    """
    @notice Join a task as a labeller: stake its `min_stake` (approve it first) and commit to your
            labels, by the commit deadline. One commitment per address; at most `labels_per_item`
            labellers.
    @param task_id The task.
    @param commitment keccak256(abi_encode(task_id, your address, labels, salt)), labels one byte per item.
    """
    t: Task = self._tasks[task_id]
    assert t.state == OPEN, "labels: no such open task"
    assert block.timestamp <= t.commit_deadline, "labels: the commit deadline has passed"
    assert commitment != empty(bytes32), "labels: the commitment must not be empty"
    assert self._commitments[task_id][msg.sender] == empty(bytes32), "labels: you have already committed to this task"
    assert len(self._labellers[task_id]) < t.labels_per_item, "labels: the task has all the labellers it takes"
    self._commitments[task_id][msg.sender] = commitment
    self._labellers[task_id].append(msg.sender)
    assert extcall token.transferFrom(msg.sender, self, t.min_stake, default_return_value=True), \
        "labels: the stake transfer failed (approve the stake first)"
    log Committed(task_id=task_id, labeller=msg.sender, commitment=commitment, stake=t.min_stake)


@internal
@pure
def _words(b: Bytes[MAX_ITEMS]) -> uint256[2]:
    """The labels' bytes as two big-endian words, zero past the end (label i: byte i % 32 of word i // 32)."""
    padded: Bytes[MAX_ITEMS + 64] = concat(b, empty(bytes32), empty(bytes32))
    return [extract32(padded, 0, output_type=uint256), extract32(padded, 32, output_type=uint256)]


@internal
@pure
def _label(words: uint256[2], i: uint256) -> uint256:
    return (words[i // 32] >> (8 * (31 - i % 32))) & 255


@external
def reveal(task_id: uint256, labels: Bytes[MAX_ITEMS], salt: bytes32):
    """
    @notice Reveal your committed labels, after the commit deadline and by the reveal deadline.
    @param task_id The task.
    @param labels One byte per item, each a class below the task's K.
    @param salt The salt of your commitment.
    """
    t: Task = self._tasks[task_id]
    assert t.state == OPEN, "labels: no such open task"
    assert block.timestamp > t.commit_deadline, "labels: reveals open after the commit deadline"
    assert block.timestamp <= t.reveal_deadline, "labels: the reveal deadline has passed"
    committed: bytes32 = self._commitments[task_id][msg.sender]
    assert committed != empty(bytes32), "labels: you did not commit to this task"
    assert len(self._revealed[task_id][msg.sender]) == 0, "labels: you have already revealed"
    assert len(labels) == t.n_items, "labels: reveal exactly one label per item"
    words: uint256[2] = self._words(labels)
    for i: uint256 in range(t.n_items, bound=MAX_ITEMS):
        assert self._label(words, i) < t.classes, "labels: a label is not one of the task's classes"
    assert keccak256(abi_encode(task_id, msg.sender, labels, salt)) == committed, \
        "labels: the labels and salt do not match your commitment"
    self._revealed[task_id][msg.sender] = labels
    log Revealed(task_id=task_id, labeller=msg.sender, labels=labels)


@internal
@pure
def _top_bit(x: uint256) -> uint256:
    """The position of x's highest set bit (x >= 1), by binary search."""
    b: uint256 = 0
    z: uint256 = x
    if z >= 2**128:
        z = z >> 128
        b = 128
    if z >= 2**64:
        z = z >> 64
        b = unsafe_add(b, 64)
    if z >= 2**32:
        z = z >> 32
        b = unsafe_add(b, 32)
    if z >= 2**16:
        z = z >> 16
        b = unsafe_add(b, 16)
    if z >= 2**8:
        z = z >> 8
        b = unsafe_add(b, 8)
    if z >= 2**4:
        z = z >> 4
        b = unsafe_add(b, 4)
    if z >= 2**2:
        z = z >> 2
        b = unsafe_add(b, 2)
    if z >= 2:
        b = unsafe_add(b, 1)
    return b


@internal
@pure
def _log2(x: uint256) -> uint256:
    """log2(x) * 2**24 for x >= 1, as `consensus._log2`: the integer part from the top bit, then
    24 fraction bits by squaring the mantissa (normalised to [2**127, 2**128)) once per bit."""
    b: uint256 = self._top_bit(x)
    y: uint256 = 0
    if b >= 127:
        y = x >> (b - 127)
    else:
        y = x << (127 - b)
    r: uint256 = b
    for i: uint256 in range(LOG_BITS // 4):
        y = unsafe_mul(y, y) >> 127
        f: uint256 = y >> 128
        y = y >> f
        r = (r << 1) | f
        y = unsafe_mul(y, y) >> 127
        f = y >> 128
        y = y >> f
        r = (r << 1) | f
        y = unsafe_mul(y, y) >> 127
        f = y >> 128
        y = y >> f
        r = (r << 1) | f
        y = unsafe_mul(y, y) >> 127
        f = y >> 128
        y = y >> f
        r = (r << 1) | f
    return r


@internal
@pure
def _gain(w: uint256, a: uint256, b: uint256) -> (uint256, uint256):
    """w ln(a / b) * 2**8, as (up, down): by 2 (u + u**3 / 3), u = (a - b) / (a + b), over one floor
    division (0 when a + b is 0), as `consensus._ln_ratio`; a, b under 2**25, w under 2**31."""
    s: uint256 = unsafe_add(a, b)
    ss: uint256 = unsafe_mul(3, unsafe_mul(s, s))
    d: uint256 = unsafe_sub(max(a, b), min(a, b))
    g: uint256 = unsafe_div(unsafe_mul(unsafe_mul(w, d), unsafe_add(ss, unsafe_mul(d, d))) << 9, unsafe_mul(ss, s))
    if a > b:
        return g, 0
    return 0, g


@internal
@pure
def _entries(w0: uint256, w1: uint256, w2: uint256, w3: uint256, o0: uint256, o1: uint256, o2: uint256, o3: uint256,
             k: uint256, gain: bool) -> (uint256, uint256, uint256, uint256, uint256, uint256):
    """One labeller's confusion entries (one word per label l, lane c: P(says l | truth c)) from its
    counts w0..w3 (one word per label, lane c: the posteriors' mass on c over the items it
    labelled l): counts from 1, normalised per true class by floor division, at least 1; with,
    when `gain`, the M-step's gain over its entries, sum of count * ln(new / old) against the old
    entries o0..o3, as (up, down), each term 2 (u + u**3 / 3) * count, u = (new - old) / (new + old),
    over one floor division, as `consensus._ln_ratio`. A label at or beyond k has counts 0 and
    gains nothing."""
    totals: uint256 = unsafe_add(unsafe_add(w0, w1), unsafe_add(w2, w3))
    e0: uint256 = 0
    e1: uint256 = 0
    e2: uint256 = 0
    e3: uint256 = 0
    up: uint256 = 0
    down: uint256 = 0
    w: uint256 = 0
    a: uint256 = 0
    b: uint256 = 0
    d: uint256 = 0
    s: uint256 = 0
    ss: uint256 = 0
    g: uint256 = 0
    for c: uint256 in range(k, bound=MAX_CLASSES):
        bits: uint256 = unsafe_mul(c, LANE)
        total: uint256 = unsafe_add((totals >> bits) & LANE_MASK, k)  # the row total for true class c, counts from 1
        w = (w0 >> bits) & LANE_MASK
        a = max(unsafe_div(unsafe_mul(unsafe_add(w, 1), ONE), total), 1)
        e0 |= a << bits
        b = (o0 >> bits) & LANE_MASK
        if gain and a != b:
            d = unsafe_sub(max(a, b), min(a, b))
            s = unsafe_add(a, b)
            ss = unsafe_mul(3, unsafe_mul(s, s))
            g = unsafe_div(unsafe_mul(unsafe_mul(w, d), unsafe_add(ss, unsafe_mul(d, d))) << 9, unsafe_mul(ss, s))
            if a > b:
                up = unsafe_add(up, g)
            else:
                down = unsafe_add(down, g)
        w = (w1 >> bits) & LANE_MASK
        a = max(unsafe_div(unsafe_mul(unsafe_add(w, 1), ONE), total), 1)
        e1 |= a << bits
        b = (o1 >> bits) & LANE_MASK
        if gain and a != b:
            d = unsafe_sub(max(a, b), min(a, b))
            s = unsafe_add(a, b)
            ss = unsafe_mul(3, unsafe_mul(s, s))
            g = unsafe_div(unsafe_mul(unsafe_mul(w, d), unsafe_add(ss, unsafe_mul(d, d))) << 9, unsafe_mul(ss, s))
            if a > b:
                up = unsafe_add(up, g)
            else:
                down = unsafe_add(down, g)
        w = (w2 >> bits) & LANE_MASK
        a = max(unsafe_div(unsafe_mul(unsafe_add(w, 1), ONE), total), 1)
        e2 |= a << bits
        b = (o2 >> bits) & LANE_MASK
        if gain and a != b:
            d = unsafe_sub(max(a, b), min(a, b))
            s = unsafe_add(a, b)
            ss = unsafe_mul(3, unsafe_mul(s, s))
            g = unsafe_div(unsafe_mul(unsafe_mul(w, d), unsafe_add(ss, unsafe_mul(d, d))) << 9, unsafe_mul(ss, s))
            if a > b:
                up = unsafe_add(up, g)
            else:
                down = unsafe_add(down, g)
        w = (w3 >> bits) & LANE_MASK
        a = max(unsafe_div(unsafe_mul(unsafe_add(w, 1), ONE), total), 1)
        e3 |= a << bits
        b = (o3 >> bits) & LANE_MASK
        if gain and a != b:
            d = unsafe_sub(max(a, b), min(a, b))
            s = unsafe_add(a, b)
            ss = unsafe_mul(3, unsafe_mul(s, s))
            g = unsafe_div(unsafe_mul(unsafe_mul(w, d), unsafe_add(ss, unsafe_mul(d, d))) << 9, unsafe_mul(ss, s))
            if a > b:
                up = unsafe_add(up, g)
            else:
                down = unsafe_add(down, g)
    return e0, e1, e2, e3, up, down


@internal
@pure
def _em(y: uint256[MAX_ITEMS], n: uint256, m: uint256, k: uint256, state: EM, budget: uint256) -> EM:
    """Run (or resume) the EM of `veracity.data.consensus.dawid_skene` on `m` labellers' labels of
    `n` items (bits 2j and 2j + 1 of y[i]: labeller j's label of item i), for at most `budget`
    E-steps: it stops where the Python does, crowd-kit's rule, or pauses with all it needs to go
    on in the state it returns; resuming gives the very integers of an uninterrupted run.

    The per-class values of an item's posterior, of a confusion count or entry, and of the class
    counts are packed in one word, a 64-bit lane per class, so sums add all classes at once. The
    labellers go in pairs (the last one alone, with entries 1, when m is odd; missing pairs use a
    neutral slot of entries 1): per iteration a table holds, for each pair and each pair of
    labels, the products of the two labellers' confusion entries (under 2**48: they fit a lane),
    so the E-step multiplies one table entry per pair into an item's likelihoods, and the M-step
    adds an item's posterior once per pair, to counts then summed into each labeller's. The
    integers are those of the Python: a likelihood is the same exact product of at most 9 factors
    of at most 2**24, a count the same exact sum, and the loss the same sum of the same terms. No
    lane overflows (a count is at most 64 * 2**24 = 2**30), so the unchecked arithmetic below
    cannot wrap; the evidence's running product multiplies two mantissas under 2**128."""
    rows: uint256[MAX_ITEMS] = empty(uint256[MAX_ITEMS])  # byte p: the item's slot in pair p's table
    post: uint256[MAX_ITEMS] = state.post  # packed posteriors q_t
    npairs: uint256 = (m + 1) // 2
    t: uint256 = state.iterations
    for i: uint256 in range(n, bound=MAX_ITEMS):
        x: uint256 = y[i]
        r: uint256 = 0
        for p: uint256 in range(MAX_PAIRS):
            if p < npairs:
                r |= ((p << 4) | (x & 15)) << (8 * p)
            else:
                r |= NEUTRAL << (8 * p)
            x = x >> 4
        rows[i] = r
        if t > 0:
            continue
        x = y[i]  # start from the majority vote's shares
        votes: uint256 = 0
        for j: uint256 in range(m, bound=MAX_LABELLERS):
            votes = unsafe_add(votes, 1 << ((x & 3) * LANE))
            x = x >> 2
        for c: uint256 in range(k, bound=MAX_CLASSES):
            post[i] |= (((votes >> (LANE * c)) & LANE_MASK) * ONE // m) << (LANE * c)
    ones: uint256 = 0  # 1 in the lane of each class
    for c: uint256 in range(k, bound=MAX_CLASSES):
        ones |= 1 << (LANE * c)
    conf: uint256[MAX_SLOTS] = state.conf  # conf[j * 4 + l]: lane c is P(j says l | truth c), theta_{t-1}
    # table[p * 16 + la + 4 * lb], lane c: the product of pair p's entries for labels la and lb given class c
    table: uint256[MAX_PAIR_SLOTS + 1] = empty(uint256[MAX_PAIR_SLOTS + 1])
    table[NEUTRAL] = ones
    p0: uint256 = state.priors & LANE_MASK  # theta_{t-1}'s priors; 0 for a class beyond k, so its likelihood stays 0
    p1: uint256 = (state.priors >> LANE) & LANE_MASK
    p2: uint256 = (state.priors >> (2 * LANE)) & LANE_MASK
    p3: uint256 = state.priors >> (3 * LANE)
    tol: int256 = convert(TOL * n * m, int256)
    evidence: uint256 = state.evidence  # log2 of the product of the items' totals at theta_{t-1}, up to a constant
    last: int256 = state.loss
    done: bool = False
    for step: uint256 in range(MAX_ITERATIONS + 1):
        if step == budget:
            break
        # M-step from post = q_t: the posteriors' mass per pair slot, then per (labeller, label)
        pair_counts: uint256[MAX_PAIR_SLOTS + 1] = empty(uint256[MAX_PAIR_SLOTS + 1])
        mass: uint256 = 0
        for i: uint256 in range(n, bound=MAX_ITEMS):
            q: uint256 = post[i]
            mass = unsafe_add(mass, q)
            r: uint256 = rows[i]
            s: uint256 = r & 127
            pair_counts[s] = unsafe_add(pair_counts[s], q)
            s = (r >> 8) & 127
            pair_counts[s] = unsafe_add(pair_counts[s], q)
            s = (r >> 16) & 127
            pair_counts[s] = unsafe_add(pair_counts[s], q)
            s = r >> 24
            pair_counts[s] = unsafe_add(pair_counts[s], q)
        # per pair: each labeller's counts (the pair's counts summed over the other's label), its
        # entries and their gain, and the pair's table of products for the E-step
        up: uint256 = 0
        down: uint256 = 0
        for p: uint256 in range(npairs, bound=MAX_PAIRS):
            s: uint256 = p << 4
            v0: uint256 = pair_counts[s]
            v1: uint256 = pair_counts[s | 1]
            v2: uint256 = pair_counts[s | 2]
            v3: uint256 = pair_counts[s | 3]
            v4: uint256 = pair_counts[s | 4]
            v5: uint256 = pair_counts[s | 5]
            v6: uint256 = pair_counts[s | 6]
            v7: uint256 = pair_counts[s | 7]
            v8: uint256 = pair_counts[s | 8]
            v9: uint256 = pair_counts[s | 9]
            v10: uint256 = pair_counts[s | 10]
            v11: uint256 = pair_counts[s | 11]
            v12: uint256 = pair_counts[s | 12]
            v13: uint256 = pair_counts[s | 13]
            v14: uint256 = pair_counts[s | 14]
            v15: uint256 = pair_counts[s | 15]
            j: uint256 = p << 3  # labeller 2p's conf slots; 2p + 1's follow
            a0: uint256 = 0
            a1: uint256 = 0
            a2: uint256 = 0
            a3: uint256 = 0
            u: uint256 = 0
            v: uint256 = 0
            a0, a1, a2, a3, u, v = self._entries(unsafe_add(unsafe_add(v0, v4), unsafe_add(v8, v12)),
                                                 unsafe_add(unsafe_add(v1, v5), unsafe_add(v9, v13)),
                                                 unsafe_add(unsafe_add(v2, v6), unsafe_add(v10, v14)),
                                                 unsafe_add(unsafe_add(v3, v7), unsafe_add(v11, v15)),
                                                 conf[j], conf[j | 1], conf[j | 2], conf[j | 3], k, t > 0)
            up = unsafe_add(up, u)
            down = unsafe_add(down, v)
            conf[j] = a0
            conf[j | 1] = a1
            conf[j | 2] = a2
            conf[j | 3] = a3
            b0: uint256 = ones  # entries 1: the spare labeller of an odd m
            b1: uint256 = ones
            b2: uint256 = ones
            b3: uint256 = ones
            if 2 * p + 1 < m:
                b0, b1, b2, b3, u, v = self._entries(unsafe_add(unsafe_add(v0, v1), unsafe_add(v2, v3)),
                                                     unsafe_add(unsafe_add(v4, v5), unsafe_add(v6, v7)),
                                                     unsafe_add(unsafe_add(v8, v9), unsafe_add(v10, v11)),
                                                     unsafe_add(unsafe_add(v12, v13), unsafe_add(v14, v15)),
                                                     conf[j | 4], conf[j | 5], conf[j | 6], conf[j | 7], k, t > 0)
                up = unsafe_add(up, u)
                down = unsafe_add(down, v)
                conf[j | 4] = b0
                conf[j | 5] = b1
                conf[j | 6] = b2
                conf[j | 7] = b3
            for la: uint256 in range(k, bound=MAX_CLASSES):
                wa: uint256 = a0
                if la == 1:
                    wa = a1
                elif la == 2:
                    wa = a2
                elif la == 3:
                    wa = a3
                x0: uint256 = wa & LANE_MASK
                x1: uint256 = (wa >> LANE) & LANE_MASK
                x2: uint256 = (wa >> (2 * LANE)) & LANE_MASK
                x3: uint256 = wa >> (3 * LANE)
                q: uint256 = s | la
                table[q] = unsafe_mul(x0, b0 & LANE_MASK) | (unsafe_mul(x1, (b0 >> LANE) & LANE_MASK) << LANE) \
                    | (unsafe_mul(x2, (b0 >> (2 * LANE)) & LANE_MASK) << (2 * LANE)) \
                    | (unsafe_mul(x3, b0 >> (3 * LANE)) << (3 * LANE))
                table[q | 4] = unsafe_mul(x0, b1 & LANE_MASK) | (unsafe_mul(x1, (b1 >> LANE) & LANE_MASK) << LANE) \
                    | (unsafe_mul(x2, (b1 >> (2 * LANE)) & LANE_MASK) << (2 * LANE)) \
                    | (unsafe_mul(x3, b1 >> (3 * LANE)) << (3 * LANE))
                table[q | 8] = unsafe_mul(x0, b2 & LANE_MASK) | (unsafe_mul(x1, (b2 >> LANE) & LANE_MASK) << LANE) \
                    | (unsafe_mul(x2, (b2 >> (2 * LANE)) & LANE_MASK) << (2 * LANE)) \
                    | (unsafe_mul(x3, b2 >> (3 * LANE)) << (3 * LANE))
                table[q | 12] = unsafe_mul(x0, b3 & LANE_MASK) | (unsafe_mul(x1, (b3 >> LANE) & LANE_MASK) << LANE) \
                    | (unsafe_mul(x2, (b3 >> (2 * LANE)) & LANE_MASK) << (2 * LANE)) \
                    | (unsafe_mul(x3, b3 >> (3 * LANE)) << (3 * LANE))
        m0: uint256 = mass & LANE_MASK
        m1: uint256 = (mass >> LANE) & LANE_MASK
        m2: uint256 = (mass >> (2 * LANE)) & LANE_MASK
        m3: uint256 = mass >> (3 * LANE)
        n0: uint256 = max(m0 // n, 1)
        n1: uint256 = max(m1 // n, 1)
        n2: uint256 = 0
        n3: uint256 = 0
        if k > 2:
            n2 = max(m2 // n, 1)
        if k > 3:
            n3 = max(m3 // n, 1)
        if t > 0:
            # crowd-kit's loss ELBO(q_t, theta_t), in 2**-24 bits: the log evidence at theta_{t-1}, the
            # M-step's gain, and the log prior counted once per label (m - 1 times more than the model does)
            u: uint256 = 0
            v: uint256 = 0
            u, v = self._gain(m0, n0, p0)
            up = unsafe_add(up, u)
            down = unsafe_add(down, v)
            u, v = self._gain(m1, n1, p1)
            up = unsafe_add(up, u)
            down = unsafe_add(down, v)
            u, v = self._gain(m2, n2, p2)
            up = unsafe_add(up, u)
            down = unsafe_add(down, v)
            u, v = self._gain(m3, n3, p3)
            up = unsafe_add(up, u)
            down = unsafe_add(down, v)
            npr: uint256 = m0 * ((24 << LOG_BITS) - self._log2(n0)) + m1 * ((24 << LOG_BITS) - self._log2(n1))
            if k > 2:
                npr += m2 * ((24 << LOG_BITS) - self._log2(n2))
            if k > 3:
                npr += m3 * ((24 << LOG_BITS) - self._log2(n3))
            loss: int256 = convert(evidence + (up * LOG2_E >> 40), int256) \
                - convert((down * LOG2_E >> 40) + (m - 1) * npr // ONE, int256)
            if t > 1 and loss - last < tol:
                done = True
                break
            last = loss
            if t == MAX_ITERATIONS:
                done = True
                break
        p0 = n0
        p1 = n1
        p2 = n2
        p3 = n3
        # E-step: q_{t+1}, per item and class the exact product of the prior and the pairs' entries,
        # and the evidence: a running product of the items' totals, as mantissa and exponent
        acc: uint256 = 2**127
        exponent: uint256 = 0
        for i: uint256 in range(n, bound=MAX_ITEMS):
            r: uint256 = rows[i]
            w: uint256 = table[r & 127]
            l0: uint256 = unsafe_mul(p0, w & LANE_MASK)
            l1: uint256 = unsafe_mul(p1, (w >> LANE) & LANE_MASK)
            l2: uint256 = unsafe_mul(p2, (w >> (2 * LANE)) & LANE_MASK)
            l3: uint256 = unsafe_mul(p3, w >> (3 * LANE))
            w = table[(r >> 8) & 127]
            l0 = unsafe_mul(l0, w & LANE_MASK)
            l1 = unsafe_mul(l1, (w >> LANE) & LANE_MASK)
            l2 = unsafe_mul(l2, (w >> (2 * LANE)) & LANE_MASK)
            l3 = unsafe_mul(l3, w >> (3 * LANE))
            w = table[(r >> 16) & 127]
            l0 = unsafe_mul(l0, w & LANE_MASK)
            l1 = unsafe_mul(l1, (w >> LANE) & LANE_MASK)
            l2 = unsafe_mul(l2, (w >> (2 * LANE)) & LANE_MASK)
            l3 = unsafe_mul(l3, w >> (3 * LANE))
            w = table[r >> 24]
            l0 = unsafe_mul(l0, w & LANE_MASK)
            l1 = unsafe_mul(l1, (w >> LANE) & LANE_MASK)
            l2 = unsafe_mul(l2, (w >> (2 * LANE)) & LANE_MASK)
            l3 = unsafe_mul(l3, w >> (3 * LANE))
            total: uint256 = unsafe_add(unsafe_add(l0, l1), unsafe_add(l2, l3))  # positive: every factor is
            post[i] = unsafe_div(unsafe_mul(l0, ONE), total) \
                | (unsafe_div(unsafe_mul(l1, ONE), total) << LANE) \
                | (unsafe_div(unsafe_mul(l2, ONE), total) << (2 * LANE)) \
                | (unsafe_div(unsafe_mul(l3, ONE), total) << (3 * LANE))
            z: uint256 = total
            b: uint256 = 0
            if z >= 2**128:
                z = z >> 128
                b = 128
            if z >= 2**64:
                z = z >> 64
                b = unsafe_add(b, 64)
            if z >= 2**32:
                z = z >> 32
                b = unsafe_add(b, 32)
            if z >= 2**16:
                z = z >> 16
                b = unsafe_add(b, 16)
            if z >= 2**8:
                z = z >> 8
                b = unsafe_add(b, 8)
            if z >= 2**4:
                z = z >> 4
                b = unsafe_add(b, 4)
            if z >= 2**2:
                z = z >> 2
                b = unsafe_add(b, 2)
            if z >= 2:
                b = unsafe_add(b, 1)
            exponent = unsafe_add(exponent, b)
            if b >= 127:
                acc = unsafe_mul(acc, total >> unsafe_sub(b, 127)) >> 127
            else:
                acc = unsafe_mul(acc, total << unsafe_sub(127, b)) >> 127
            if acc >= 2**128:
                acc = acc >> 1
                exponent = unsafe_add(exponent, 1)
        evidence = (exponent << LOG_BITS) + self._log2(acc)
        t += 1
    return EM(post=post, conf=conf, priors=p0 | (p1 << LANE) | (p2 << (2 * LANE)) | (p3 << (3 * LANE)),
              evidence=evidence, loss=last, iterations=t, done=done)


@internal
@pure
def _outcome(post: uint256[MAX_ITEMS], y: uint256[MAX_ITEMS], n: uint256, m: uint256,
             k: uint256) -> (Bytes[MAX_ITEMS], uint256[MAX_LABELLERS]):
    """The consensus (each item's most probable class, ties to the lowest) and each labeller's
    accuracy (the posterior mass on its own labels, averaged over the items, in bps)."""
    words: uint256[2] = empty(uint256[2])  # the consensus bytes, 32 to a word, big endian
    accuracy: uint256[MAX_LABELLERS] = empty(uint256[MAX_LABELLERS])
    for i: uint256 in range(n, bound=MAX_ITEMS):
        q: uint256 = post[i]
        best: uint256 = 0
        top: uint256 = q & LANE_MASK
        for c: uint256 in range(1, k, bound=MAX_CLASSES):
            v: uint256 = (q >> (LANE * c)) & LANE_MASK
            if v > top:  # strictly: a tie keeps the lowest class
                best = c
                top = v
        words[i // 32] |= best << (8 * (31 - i % 32))
        x: uint256 = y[i]
        for j: uint256 in range(m, bound=MAX_LABELLERS):
            accuracy[j] += (q >> (LANE * (x & 3))) & LANE_MASK
            x = x >> 2
    labels: Bytes[MAX_ITEMS] = slice(concat(convert(words[0], bytes32), convert(words[1], bytes32)), 0, n)
    for j: uint256 in range(m, bound=MAX_LABELLERS):
        accuracy[j] = accuracy[j] * BPS // (n * ONE)
    return labels, accuracy


@external
@pure
def aggregate(labels: DynArray[Bytes[MAX_ITEMS], MAX_LABELLERS],
              classes: uint256) -> (Bytes[MAX_ITEMS], DynArray[uint256, MAX_LABELLERS], uint256):
    """
    @notice The aggregation `finalize` runs, on any labels and in one call: to preview a round or
            check it off chain (a slow round of many items can take more gas than one transaction
            may; a call is not bound by that).
    @param labels One label set per labeller (one byte per item, the same number of items each).
    @param classes The number of classes K (2 to 4).
    @return The consensus labels (one byte per item), each labeller's accuracy in basis points,
            and the EM iterations run.
    """
    m: uint256 = len(labels)
    assert m >= 1, "labels: pass at least one labeller's labels"
    assert classes >= 2 and classes <= MAX_CLASSES, "labels: a task has 2 to 4 classes"
    n: uint256 = len(labels[0])
    assert n >= 1, "labels: pass at least one item"
    y: uint256[MAX_ITEMS] = empty(uint256[MAX_ITEMS])
    for j: uint256 in range(m, bound=MAX_LABELLERS):
        assert len(labels[j]) == n, "labels: every labeller labels every item"
        words: uint256[2] = self._words(labels[j])
        for i: uint256 in range(n, bound=MAX_ITEMS):
            label: uint256 = self._label(words, i)
            assert label < classes, "labels: a label is not one of the classes"
            y[i] |= label << (2 * j)
    state: EM = self._em(y, n, m, classes, empty(EM), MAX_ITERATIONS + 1)
    consensus: Bytes[MAX_ITEMS] = b""
    acc: uint256[MAX_LABELLERS] = empty(uint256[MAX_LABELLERS])
    consensus, acc = self._outcome(state.post, y, n, m, classes)
    out: DynArray[uint256, MAX_LABELLERS] = []
    for j: uint256 in range(m, bound=MAX_LABELLERS):
        out.append(acc[j])
    return consensus, out, state.iterations


@internal
def _pay(to: address, amount: uint256):
    if amount > 0:
        assert extcall token.transfer(to, amount, default_return_value=True), "labels: transfer failed"


@external
def finalize(task_id: uint256):
    """
    @notice Aggregate the revealed labels and settle the task (anyone, after the reveal deadline).
            Labellers at or above the accuracy threshold share the reward in proportion to their
            accuracy (floor division; the dust goes back to the requester) and get their stake
            back; those below it lose `slash_bps` of their stake; a labeller who never revealed
            loses all of it. Slashed stake goes to the treasury, never to the requester or the
            other labellers: either could otherwise profit from pushing a labeller under the
            threshold (a requester posting ambiguous items, labellers colluding to outvote an
            honest one), so nobody has a reason to make anyone fail. With fewer than 3 revealed
            label sets there is no consensus: the reward goes back to the requester and the
            revealers get their stakes back. A round whose EM runs more than ITERATIONS_PER_CALL
            iterations takes more than one call (at most 3): each one before the last runs that
            many, keeps the EM's state and logs `Aggregating`; call again until `Finalized`.
    @param task_id The task.
    """
    t: Task = self._tasks[task_id]
    assert t.state == OPEN, "labels: no such open task (already finalized?)"
    assert block.timestamp > t.reveal_deadline, "labels: the reveal phase has not ended"
    joined: DynArray[address, MAX_LABELLERS] = self._labellers[task_id]
    revealers: DynArray[address, MAX_LABELLERS] = []
    y: uint256[MAX_ITEMS] = empty(uint256[MAX_ITEMS])
    for who: address in joined:
        b: Bytes[MAX_ITEMS] = self._revealed[task_id][who]
        if len(b) == 0:
            continue
        j: uint256 = len(revealers)
        words: uint256[2] = self._words(b)
        for i: uint256 in range(t.n_items, bound=MAX_ITEMS):
            y[i] |= self._label(words, i) << (2 * j)
        revealers.append(who)
    m: uint256 = len(revealers)
    refund: uint256 = t.reward
    consensus: Bytes[MAX_ITEMS] = b""
    iterations: uint256 = 0
    acc: uint256[MAX_LABELLERS] = empty(uint256[MAX_LABELLERS])
    if m >= MIN_LABELLERS:
        state: EM = empty(EM)
        if self._em_state[task_id].iterations > 0:
            state = self._em_state[task_id]
        state = self._em(y, t.n_items, m, t.classes, state, ITERATIONS_PER_CALL)
        if not state.done:
            self._em_state[task_id] = state
            log Aggregating(task_id=task_id, iterations=state.iterations)
            return
        iterations = state.iterations
        consensus, acc = self._outcome(state.post, y, t.n_items, m, t.classes)
    slashed: uint256 = 0
    for who: address in joined:
        if len(self._revealed[task_id][who]) == 0:
            slashed += t.min_stake
            log Slashed(task_id=task_id, labeller=who, amount=t.min_stake)
    if m < MIN_LABELLERS:
        self._tasks[task_id].state = CANCELLED
        for who: address in revealers:
            self._pay(who, t.min_stake)
            log Paid(task_id=task_id, labeller=who, amount=0, stake_returned=t.min_stake, accuracy_bps=0)
    else:
        self._tasks[task_id].state = FINALIZED
        self._consensus[task_id] = consensus
        self._iterations[task_id] = iterations
        pool: uint256 = 0
        for j: uint256 in range(m, bound=MAX_LABELLERS):
            self._accuracy[task_id][revealers[j]] = acc[j]
            if acc[j] >= t.accuracy_threshold_bps:
                pool += acc[j]
        for j: uint256 in range(m, bound=MAX_LABELLERS):
            who: address = revealers[j]
            if acc[j] >= t.accuracy_threshold_bps:
                share: uint256 = 0
                if pool > 0:
                    share = t.reward * acc[j] // pool
                refund -= share
                self._pay(who, share + t.min_stake)
                log Paid(task_id=task_id, labeller=who, amount=share, stake_returned=t.min_stake, accuracy_bps=acc[j])
            else:
                cut: uint256 = t.min_stake * t.slash_bps // BPS
                slashed += cut
                self._pay(who, t.min_stake - cut)
                log Slashed(task_id=task_id, labeller=who, amount=cut)
                log Paid(task_id=task_id, labeller=who, amount=0, stake_returned=t.min_stake - cut, accuracy_bps=acc[j])
    self._pay(treasury, slashed)
    self._pay(t.requester, refund)
    if refund > 0:
        log Refunded(task_id=task_id, requester=t.requester, amount=refund)
    log Finalized(task_id=task_id, consensus=consensus, revealed=m, iterations=iterations)


@external
@view
def task(task_id: uint256) -> Task:
    """
    @notice A task in full (empty for an unknown id); state 1 open, 2 finalized, 3 cancelled (too few revealed).
    @param task_id The task.
    @return The task.
    """
    return self._tasks[task_id]


@external
@view
def labellers(task_id: uint256) -> DynArray[address, MAX_LABELLERS]:
    """
    @notice The labellers who joined a task, in the order they joined (the aggregation's column order).
    @param task_id The task.
    @return Their addresses.
    """
    return self._labellers[task_id]


@external
@view
def revealed(task_id: uint256, labeller: address) -> Bytes[MAX_ITEMS]:
    """
    @notice A labeller's revealed labels (empty until it reveals).
    @param task_id The task.
    @param labeller The labeller.
    @return One byte per item.
    """
    return self._revealed[task_id][labeller]


@external
@view
def consensus(task_id: uint256) -> Bytes[MAX_ITEMS]:
    """
    @notice A finalized task's consensus labels, one byte per item (empty before finalize, or
            when too few labellers revealed).
    @param task_id The task.
    @return The consensus labels.
    """
    return self._consensus[task_id]


@external
@view
def accuracy(task_id: uint256, labeller: address) -> uint256:
    """
    @notice A revealed labeller's estimated accuracy on a finalized task, in basis points.
    @param task_id The task.
    @param labeller The labeller.
    @return The posterior mass on its labels, averaged over the items (0 before finalize).
    """
    return self._accuracy[task_id][labeller]


@external
@view
def iterations(task_id: uint256) -> uint256:
    """
    @notice The EM iterations of a task's aggregation: all of them once finalized, those run so far
            while `finalize` is still aggregating (0 before).
    @param task_id The task.
    @return crowd-kit's len(loss_history_) for the same labels, once finalized.
    """
    if self._iterations[task_id] > 0:
        return self._iterations[task_id]
    return self._em_state[task_id].iterations
