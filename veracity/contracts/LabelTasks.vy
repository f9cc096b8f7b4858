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
        probabilities are integers over ONE = 2**24; from the majority vote's shares, ITERATIONS
        rounds of M-step (priors as the posteriors' mean, confusion counts from 1 normalised per
        true class by floor division, entries and priors at least 1) then E-step (per item and
        class the exact product of the prior and one confusion entry per labeller, normalised by
        one floor division: at most 9 factors of at most 2**24, so no rounding and no overflow).
        It is crowd-kit's DawidSkene with a fixed number of rounds and a floor of 2**-24. The consensus
        is each item's most probable class (ties: the lowest); a labeller's accuracy is the
        posterior mass on its own labels, averaged over the items, in basis points. Anyone can
        recompute both off chain, bit for bit, and `aggregate` runs the same code on any labels.

        A commitment is keccak256(abi_encode(task_id, labeller, labels, salt)): it names the
        labeller, so a copied commitment cannot be revealed by the copier, and reveals open only
        after the commit deadline, so nobody can commit to labels already revealed.
"""

from ethereum.ercs import IERC20

MAX_ITEMS: constant(uint256) = 64
MAX_LABELLERS: constant(uint256) = 8
MIN_LABELLERS: constant(uint256) = 3  # fewer revealed label sets cannot outvote one bad labeller
MAX_CLASSES: constant(uint256) = 4
MAX_CELLS: constant(uint256) = MAX_ITEMS * MAX_LABELLERS  # labels, item-major
MAX_SLOTS: constant(uint256) = MAX_LABELLERS * MAX_CLASSES  # (labeller, label) pairs
LANE: constant(uint256) = 64  # bits per class in a packed word
LANE_MASK: constant(uint256) = 2**64 - 1
ONE: constant(uint256) = 2**24
ITERATIONS: constant(uint256) = 20
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
def _byte(b: Bytes[MAX_ITEMS], i: uint256) -> uint256:
    return convert(convert(slice(b, i, 1), bytes1), uint256)


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
    for i: uint256 in range(t.n_items, bound=MAX_ITEMS):
        assert self._byte(labels, i) < t.classes, "labels: a label is not one of the task's classes"
    assert keccak256(abi_encode(task_id, msg.sender, labels, salt)) == committed, \
        "labels: the labels and salt do not match your commitment"
    self._revealed[task_id][msg.sender] = labels
    log Revealed(task_id=task_id, labeller=msg.sender, labels=labels)


@internal
@pure
def _dawid_skene(y: uint256[MAX_CELLS], n: uint256, m: uint256,
                 k: uint256) -> (Bytes[MAX_ITEMS], uint256[MAX_LABELLERS]):
    """Consensus labels and accuracies (bps) of `m` labellers' labels on `n` items (y[i * 8 + j]),
    exactly as `veracity.data.consensus.dawid_skene`.

    The per-class values of an item's posterior, of a confusion count or entry for one
    (labeller, label), and of the class counts are packed in one word, a 64-bit lane per class:
    the M-step adds all classes at once and the E-step reads a labeller's entries for all classes
    with one lookup. No lane overflows (a count is at most 64 * 2**24 = 2**30), so the integers are
    those of the unpacked Python, and the unchecked arithmetic below cannot wrap: sums stay inside
    their lanes, and a likelihood is a product of at most 9 factors of at most 2**24."""
    at: uint256[MAX_CELLS] = empty(uint256[MAX_CELLS])  # at[i * 8 + j] = j * 4 + label: a (labeller, label) slot
    post: uint256[MAX_ITEMS] = empty(uint256[MAX_ITEMS])  # packed posteriors
    for i: uint256 in range(n, bound=MAX_ITEMS):
        votes: uint256[MAX_CLASSES] = empty(uint256[MAX_CLASSES])
        for j: uint256 in range(m, bound=MAX_LABELLERS):
            label: uint256 = y[i * MAX_LABELLERS + j]
            votes[label] += 1
            at[i * MAX_LABELLERS + j] = j * MAX_CLASSES + label
        for c: uint256 in range(k, bound=MAX_CLASSES):
            post[i] |= (votes[c] * ONE // m) << (LANE * c)
    ones: uint256 = 0  # 1 in the lane of each class
    for c: uint256 in range(k, bound=MAX_CLASSES):
        ones |= 1 << (LANE * c)
    prior: uint256[MAX_CLASSES] = empty(uint256[MAX_CLASSES])
    conf: uint256[MAX_SLOTS] = empty(uint256[MAX_SLOTS])  # conf[j * 4 + l]: lane c is P(j says l | truth c)
    for it: uint256 in range(ITERATIONS):
        # M-step: priors, and confusion counts from 1 normalised per (labeller, true class)
        counts: uint256[MAX_SLOTS] = empty(uint256[MAX_SLOTS])
        for slot: uint256 in range(m * MAX_CLASSES, bound=MAX_SLOTS):
            counts[slot] = ones
        mass: uint256 = 0
        for i: uint256 in range(n, bound=MAX_ITEMS):
            p: uint256 = post[i]
            mass = unsafe_add(mass, p)
            row: uint256 = unsafe_mul(i, MAX_LABELLERS)
            for j: uint256 in range(m, bound=MAX_LABELLERS):
                slot: uint256 = at[unsafe_add(row, j)]
                counts[slot] = unsafe_add(counts[slot], p)
        for c: uint256 in range(k, bound=MAX_CLASSES):
            prior[c] = max(((mass >> (LANE * c)) & LANE_MASK) // n, 1)
        for j: uint256 in range(m, bound=MAX_LABELLERS):
            base: uint256 = j * MAX_CLASSES
            totals: uint256 = 0  # lane c: the row total for true class c (at least k)
            for l: uint256 in range(k, bound=MAX_CLASSES):
                totals = unsafe_add(totals, counts[base + l])
            for l: uint256 in range(k, bound=MAX_CLASSES):
                w: uint256 = counts[base + l]
                entries: uint256 = 0
                for c: uint256 in range(k, bound=MAX_CLASSES):
                    bits: uint256 = unsafe_mul(c, LANE)
                    entry: uint256 = unsafe_div(unsafe_mul((w >> bits) & LANE_MASK, ONE), (totals >> bits) & LANE_MASK)
                    entries |= max(entry, 1) << bits
                conf[base + l] = entries
        # E-step: per item and class the exact product of the prior and one entry per labeller
        for i: uint256 in range(n, bound=MAX_ITEMS):
            l0: uint256 = prior[0]
            l1: uint256 = prior[1]
            l2: uint256 = prior[2]  # 0 for a class beyond k, so its likelihood stays 0
            l3: uint256 = prior[3]
            row: uint256 = unsafe_mul(i, MAX_LABELLERS)
            for j: uint256 in range(m, bound=MAX_LABELLERS):
                w: uint256 = conf[at[unsafe_add(row, j)]]
                l0 = unsafe_mul(l0, w & LANE_MASK)
                l1 = unsafe_mul(l1, (w >> LANE) & LANE_MASK)
                l2 = unsafe_mul(l2, (w >> (2 * LANE)) & LANE_MASK)
                l3 = unsafe_mul(l3, w >> (3 * LANE))
            total: uint256 = unsafe_add(unsafe_add(l0, l1), unsafe_add(l2, l3))  # positive: every factor is
            post[i] = unsafe_div(unsafe_mul(l0, ONE), total) \
                | (unsafe_div(unsafe_mul(l1, ONE), total) << LANE) \
                | (unsafe_div(unsafe_mul(l2, ONE), total) << (2 * LANE)) \
                | (unsafe_div(unsafe_mul(l3, ONE), total) << (3 * LANE))
    words: uint256[2] = empty(uint256[2])  # the consensus bytes, 32 to a word, big endian
    for i: uint256 in range(n, bound=MAX_ITEMS):
        best: uint256 = 0
        top: uint256 = post[i] & LANE_MASK
        for c: uint256 in range(1, k, bound=MAX_CLASSES):
            p: uint256 = (post[i] >> (LANE * c)) & LANE_MASK
            if p > top:  # strictly: a tie keeps the lowest class
                best = c
                top = p
        words[i // 32] |= best << (8 * (31 - i % 32))
    labels: Bytes[MAX_ITEMS] = slice(concat(convert(words[0], bytes32), convert(words[1], bytes32)), 0, n)
    accuracy: uint256[MAX_LABELLERS] = empty(uint256[MAX_LABELLERS])
    for j: uint256 in range(m, bound=MAX_LABELLERS):
        on_own: uint256 = 0
        for i: uint256 in range(n, bound=MAX_ITEMS):
            on_own += ((post[i] >> (LANE * y[i * MAX_LABELLERS + j])) & LANE_MASK)
        accuracy[j] = on_own * BPS // (n * ONE)
    return labels, accuracy


@external
@pure
def aggregate(labels: DynArray[Bytes[MAX_ITEMS], MAX_LABELLERS],
              classes: uint256) -> (Bytes[MAX_ITEMS], DynArray[uint256, MAX_LABELLERS]):
    """
    @notice The aggregation `finalize` runs, on any labels: to preview a round or check it off chain.
    @param labels One label set per labeller (one byte per item, the same number of items each).
    @param classes The number of classes K (2 to 4).
    @return The consensus labels (one byte per item) and each labeller's accuracy in basis points.
    """
    m: uint256 = len(labels)
    assert m >= 1, "labels: pass at least one labeller's labels"
    assert classes >= 2 and classes <= MAX_CLASSES, "labels: a task has 2 to 4 classes"
    n: uint256 = len(labels[0])
    assert n >= 1, "labels: pass at least one item"
    y: uint256[MAX_CELLS] = empty(uint256[MAX_CELLS])
    for j: uint256 in range(m, bound=MAX_LABELLERS):
        assert len(labels[j]) == n, "labels: every labeller labels every item"
        for i: uint256 in range(n, bound=MAX_ITEMS):
            label: uint256 = self._byte(labels[j], i)
            assert label < classes, "labels: a label is not one of the classes"
            y[i * MAX_LABELLERS + j] = label
    consensus: Bytes[MAX_ITEMS] = b""
    acc: uint256[MAX_LABELLERS] = empty(uint256[MAX_LABELLERS])
    consensus, acc = self._dawid_skene(y, n, m, classes)
    out: DynArray[uint256, MAX_LABELLERS] = []
    for j: uint256 in range(m, bound=MAX_LABELLERS):
        out.append(acc[j])
    return consensus, out


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
            revealers get their stakes back.
    @param task_id The task.
    """
    t: Task = self._tasks[task_id]
    assert t.state == OPEN, "labels: no such open task (already finalized?)"
    assert block.timestamp > t.reveal_deadline, "labels: the reveal phase has not ended"
    joined: DynArray[address, MAX_LABELLERS] = self._labellers[task_id]
    revealers: DynArray[address, MAX_LABELLERS] = []
    y: uint256[MAX_CELLS] = empty(uint256[MAX_CELLS])
    slashed: uint256 = 0
    for who: address in joined:
        b: Bytes[MAX_ITEMS] = self._revealed[task_id][who]
        if len(b) == 0:
            slashed += t.min_stake
            log Slashed(task_id=task_id, labeller=who, amount=t.min_stake)
            continue
        j: uint256 = len(revealers)
        for i: uint256 in range(t.n_items, bound=MAX_ITEMS):
            y[i * MAX_LABELLERS + j] = self._byte(b, i)
        revealers.append(who)
    m: uint256 = len(revealers)
    refund: uint256 = t.reward
    consensus: Bytes[MAX_ITEMS] = b""
    if m < MIN_LABELLERS:
        self._tasks[task_id].state = CANCELLED
        for who: address in revealers:
            self._pay(who, t.min_stake)
            log Paid(task_id=task_id, labeller=who, amount=0, stake_returned=t.min_stake, accuracy_bps=0)
    else:
        self._tasks[task_id].state = FINALIZED
        acc: uint256[MAX_LABELLERS] = empty(uint256[MAX_LABELLERS])
        consensus, acc = self._dawid_skene(y, t.n_items, m, t.classes)
        self._consensus[task_id] = consensus
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
    log Finalized(task_id=task_id, consensus=consensus, revealed=m)


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
