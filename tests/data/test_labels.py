"""Labelling with consensus on a real anvil node (``contracts/LabelTasks.vy``): a round with five
simulated labellers, one of them answering at random, settled by the on-chain Dawid-Skene to the
bit of ``veracity.data.consensus``; a slow round settled over several ``finalize`` calls, each
under EIP-7825's gas cap even in the worst case; and what a cheating labeller or requester tries,
refused."""

import sys
from pathlib import Path

import numpy as np
import pytest

from veracity.chain.anvil import Anvil
from veracity.chain.client import Chain, TokenClient
from veracity.chain.devnet import dev_accounts
from veracity.chain.labels import LabelTasksClient, label_commitment, new_salt
from veracity.data.consensus import MAX_ITERATIONS, dawid_skene, majority_vote, payouts
from veracity.errors import ChainError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))  # the repo root: bench.* (never bench/ itself, whose ray.py would shadow ray)
from bench.data_consensus import worst_case_source  # noqa: E402

TOKEN = 10**18
GAS_CAP = 2**24  # EIP-7825's per-transaction gas limit
ITERATIONS_PER_CALL = 36  # LabelTasks' EM iterations per finalize
CID = bytes.fromhex("ab" * 32)
REWARD = 1000 * TOKEN + 7  # not a multiple of anything: the division leaves dust
STAKE = 50 * TOKEN
THRESHOLD_BPS, SLASH_BPS = 6000, 5000
ROLES = ["deployer", "requester", "l1", "l2", "l3", "l4", "spammer", "l6", "l7", "l8", "treasury"]
LABELLERS = ["l1", "l2", "l3", "l4", "spammer"]
ACCURACIES = [0.9, 0.85, 0.8, 0.75, None]  # None: uniformly at random


@pytest.fixture(scope="module")
def node():
    """One anvil with the Token and LabelTasks deployed, every role funded."""
    anvil = Anvil(accounts=len(ROLES))
    accounts = dev_accounts(len(ROLES))
    try:
        chain = Chain(anvil.rpc_url, accounts[0].key)
        token = chain.deploy("Token", 10**9 * TOKEN, True)
        labels = chain.deploy("LabelTasks", token, accounts[ROLES.index("treasury")].address)
        tok = TokenClient(chain, token)
        for acct in accounts[1:]:
            tok.transfer(acct.address, 10_000 * TOKEN)
        yield anvil.rpc_url, accounts, token, labels
    finally:
        anvil.stop()


class World:
    """Each role's address and LabelTasks client (fresh clients each test: the snapshot's revert
    rewinds the nonces)."""

    def __init__(self, node):
        rpc_url, accounts, self.token_address, self.address = node
        self.chain = Chain(rpc_url, accounts[0].key)
        self.who, self.lt = {}, {}
        for role, acct in zip(ROLES, accounts):
            chain = Chain(rpc_url, acct.key)
            self.who[role] = acct.address
            self.lt[role] = LabelTasksClient(chain, self.address, TokenClient(chain, self.token_address))
        self.token = self.lt["deployer"].token

    def rpc(self, method, params=()):
        return self.chain.w3.provider.make_request(method, list(params))["result"]

    def advance(self, seconds):
        self.rpc("evm_increaseTime", [seconds])
        self.rpc("evm_mine")

    def balances(self):
        return {r: self.token.balance_of(a) for r, a in self.who.items()} | {
            "contract": self.token.balance_of(self.address)}

    def post(self, n_items=40, classes=3, labels_per_item=5, reward=REWARD, **kw):
        now = self.chain.now()
        return self.lt["requester"].post_task(CID, n_items, classes, labels_per_item, reward, kw.get("stake", STAKE),
                                              now + 100, now + 200, kw.get("threshold", THRESHOLD_BPS),
                                              kw.get("slash", SLASH_BPS))

    def to_reveals(self):
        self.advance(101)

    def to_finalize(self):
        self.advance(100)


@pytest.fixture
def world(node):
    w = World(node)
    snap = w.rpc("evm_snapshot")
    try:
        yield w
    finally:
        w.rpc("evm_revert", [snap])


def simulate(seed, n_items, classes, accuracies):
    """The true classes and one label list per labeller (see tests/data/test_consensus.py)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, n_items)
    out = []
    for a in accuracies:
        if a is None:
            out.append(rng.integers(0, classes, n_items).tolist())
            continue
        wrong = (truth + rng.integers(1, classes, n_items)) % classes
        out.append(np.where(rng.random(n_items) < a, truth, wrong).tolist())
    return truth.tolist(), out


def commit_all(w, task_id, labels_by_role):
    salts = {}
    for role, labels in labels_by_role.items():
        salts[role] = new_salt()
        w.lt[role].commit_labels(task_id, labels, salts[role])
    return salts


def test_a_labelling_round_pays_by_accuracy_and_slashes_the_spammer(world):
    """Five labellers of accuracies 0.9, 0.85, 0.8, 0.75 and one answering at random label 40
    items of 3 classes: the contract's consensus and accuracies are consensus.py's to the bit, the
    consensus is the truth on every item (a majority vote misses two), the spammer loses half its stake to the
    treasury, the others share the reward in proportion to accuracy to the wei, the dust goes back
    to the requester, and no token is created or lost."""
    w = world
    truth, sets = simulate(2024, 40, 3, ACCURACIES)
    by_role = dict(zip(LABELLERS, sets))
    before = w.balances()
    task_id = w.post()
    salts = commit_all(w, task_id, by_role)
    assert w.token.balance_of(w.address) == REWARD + 5 * STAKE
    w.to_reveals()
    for role in LABELLERS:
        w.lt[role].reveal(task_id, by_role[role], salts[role])
    w.to_finalize()
    settled = w.lt["l6"].finalize(task_id)  # anyone may
    print(f"\nfinalize, 5 labellers x 40 items, K=3: {settled.gas_used:,} gas, {settled.iterations} EM iterations")

    expected = dawid_skene([list(item) for item in zip(*sets)], 3)
    assert w.lt["l6"].consensus(task_id) == settled.consensus == bytes(expected.labels)
    assert settled.iterations == expected.iterations == w.lt["l6"].iterations(task_id)
    assert len(settled.gas_per_call) == 1 and settled.gas_used < GAS_CAP // 4  # one call, well under the cap
    accuracy = [w.lt["l6"].accuracy(task_id, w.who[r]) for r in LABELLERS]
    assert accuracy == list(expected.accuracy_bps)
    assert list(expected.labels) == truth  # all 40 (a majority vote gets 38)
    assert sum(c == t for c, t in zip(majority_vote([list(item) for item in zip(*sets)], 3), truth)) < 40
    assert accuracy[4] < THRESHOLD_BPS <= min(accuracy[:4])

    out, dust = payouts(accuracy, REWARD, STAKE, THRESHOLD_BPS, SLASH_BPS)
    after = w.balances()
    for role, pay in zip(LABELLERS, out):
        assert after[role] - before[role] == pay.reward + pay.returned - STAKE
    assert after["spammer"] == before["spammer"] - STAKE // 2
    assert after["treasury"] - before["treasury"] == STAKE // 2 == settled.slashed[w.who["spammer"]]
    gains = [after[r] - before[r] for r in LABELLERS[:4]]
    assert gains == [REWARD * a // sum(accuracy[:4]) for a in accuracy[:4]]
    assert after["requester"] - before["requester"] == -REWARD + dust and settled.refunded == dust
    assert after["contract"] == 0
    assert sum(after.values()) == sum(before.values())
    assert w.lt["l6"].task(task_id).state_name == "finalized"


def test_reveal_must_match_the_commitment(world):
    """Other labels, or another salt, than the ones committed to are refused."""
    w = world
    task_id = w.post(n_items=4, classes=2)
    salt = new_salt()
    w.lt["l1"].commit_labels(task_id, [0, 1, 1, 0], salt)
    w.to_reveals()
    with pytest.raises(ChainError, match="labels: the labels and salt do not match your commitment"):
        w.lt["l1"].reveal(task_id, [0, 1, 1, 1], salt)
    with pytest.raises(ChainError, match="labels: the labels and salt do not match your commitment"):
        w.lt["l1"].reveal(task_id, [0, 1, 1, 0], new_salt())
    with pytest.raises(ChainError, match="labels: a label is not one of the task's classes"):
        w.lt["l1"].reveal(task_id, [0, 1, 2, 0], salt)
    with pytest.raises(ChainError, match="labels: reveal exactly one label per item"):
        w.lt["l1"].reveal(task_id, [0, 1, 1], salt)
    w.lt["l1"].reveal(task_id, [0, 1, 1, 0], salt)
    assert w.lt["l1"].revealed(task_id, w.who["l1"]) == bytes([0, 1, 1, 0])


def test_reveals_only_between_the_deadlines(world):
    """Before the commit deadline a reveal would let others commit to a copy; after the reveal
    deadline it is too late."""
    w = world
    task_id = w.post(n_items=3, classes=2)
    salt = new_salt()
    w.lt["l1"].commit_labels(task_id, [1, 0, 1], salt)
    with pytest.raises(ChainError, match="labels: reveals open after the commit deadline"):
        w.lt["l1"].reveal(task_id, [1, 0, 1], salt)
    w.to_reveals()
    w.to_finalize()
    with pytest.raises(ChainError, match="labels: the reveal deadline has passed"):
        w.lt["l1"].reveal(task_id, [1, 0, 1], salt)
    with pytest.raises(ChainError, match="labels: the commit deadline has passed"):
        w.lt["l2"].commit_labels(task_id, [1, 0, 1], new_salt())


def test_one_commitment_per_labeller_and_at_most_labels_per_item(world):
    w = world
    task_id = w.post(n_items=3, classes=2, labels_per_item=3)
    w.lt["l1"].commit_labels(task_id, [1, 0, 1], new_salt())
    before = w.token.balance_of(w.who["l1"])
    with pytest.raises(ChainError, match="labels: you have already committed to this task"):
        w.lt["l1"].commit_labels(task_id, [1, 1, 1], new_salt())
    assert w.token.balance_of(w.who["l1"]) == before  # staked once
    w.lt["l2"].commit_labels(task_id, [1, 0, 1], new_salt())
    w.lt["l3"].commit_labels(task_id, [1, 0, 1], new_salt())
    with pytest.raises(ChainError, match="labels: the task has all the labellers it takes"):
        w.lt["l4"].commit_labels(task_id, [1, 0, 1], new_salt())
    assert w.lt["l1"].labellers(task_id) == [w.who["l1"], w.who["l2"], w.who["l3"]]


def test_a_copied_commitment_cannot_be_revealed_and_costs_the_copier_its_stake(world):
    """A lazy labeller copies an honest one's commitment; once the honest one reveals it knows the
    labels and salt, but the commitment names the honest labeller, so the copier cannot reveal
    it: it never reveals and loses its whole stake to the treasury."""
    w = world
    truth, sets = simulate(7, 12, 2, [0.9, 0.9, 0.9])
    task_id = w.post(n_items=12, classes=2)
    salts = commit_all(w, task_id, dict(zip(["l1", "l2", "l3"], sets)))
    copied = label_commitment(task_id, w.who["l1"], sets[0], salts["l1"])
    w.lt["l4"].join_and_commit(task_id, copied)
    w.to_reveals()
    for role, labels in zip(["l1", "l2", "l3"], sets):
        w.lt[role].reveal(task_id, labels, salts[role])
    seen = w.lt["l4"].revealed(task_id, w.who["l1"])
    with pytest.raises(ChainError, match="labels: the labels and salt do not match your commitment"):
        w.lt["l4"].reveal(task_id, seen, salts["l1"])
    before = w.balances()
    w.to_finalize()
    settled = w.lt["requester"].finalize(task_id)
    after = w.balances()
    assert settled.slashed == {w.who["l4"]: STAKE}
    assert after["treasury"] - before["treasury"] == STAKE and after["l4"] == before["l4"]
    assert w.lt["l4"].accuracy(task_id, w.who["l4"]) == 0 and w.who["l4"] not in settled.paid


def test_finalize_only_after_the_reveals_and_only_once(world):
    w = world
    truth, sets = simulate(8, 6, 2, [0.9, 0.8, 0.7])
    task_id = w.post(n_items=6, classes=2)
    salts = commit_all(w, task_id, dict(zip(["l1", "l2", "l3"], sets)))
    with pytest.raises(ChainError, match="labels: the reveal phase has not ended"):
        w.lt["requester"].finalize(task_id)
    w.to_reveals()
    for role, labels in zip(["l1", "l2", "l3"], sets):
        w.lt[role].reveal(task_id, labels, salts[role])
    with pytest.raises(ChainError, match="labels: the reveal phase has not ended"):
        w.lt["requester"].finalize(task_id)
    w.to_finalize()
    w.lt["requester"].finalize(task_id)
    before = w.balances()
    with pytest.raises(ChainError, match="labels: no such open task"):
        w.lt["l1"].finalize(task_id)
    assert w.balances() == before


def test_a_labeller_who_never_reveals_loses_its_stake(world):
    """Four reveal, one does not: the four are settled by their consensus as usual, the fifth's
    whole stake goes to the treasury (not to the requester, nor to the other labellers)."""
    w = world
    truth, sets = simulate(9, 20, 2, [0.9, 0.85, 0.8, 0.75, 0.9])
    by_role = dict(zip(["l1", "l2", "l3", "l4", "l6"], sets))
    task_id = w.post(n_items=20, classes=2)
    salts = commit_all(w, task_id, by_role)
    w.to_reveals()
    for role in ["l1", "l2", "l3", "l4"]:
        w.lt[role].reveal(task_id, by_role[role], salts[role])
    before = w.balances()
    w.to_finalize()
    settled = w.lt["requester"].finalize(task_id)
    after = w.balances()
    assert settled.revealed == 4 and settled.slashed == {w.who["l6"]: STAKE}
    assert after["l6"] == before["l6"] and after["treasury"] - before["treasury"] == STAKE
    expected = dawid_skene([list(item) for item in zip(*sets[:4])], 2)
    assert settled.consensus == bytes(expected.labels)
    assert sum(after[r] - before[r] for r in ["l1", "l2", "l3", "l4", "requester"]) == REWARD + 4 * STAKE
    assert after["contract"] == 0


def test_too_few_reveals_refund_the_requester(world):
    """With two label sets there is no consensus worth paying for: the reward goes back to the
    requester and the two revealers get their stakes back."""
    w = world
    truth, sets = simulate(10, 5, 2, [0.9, 0.9])
    task_id = w.post(n_items=5, classes=2)
    salts = commit_all(w, task_id, dict(zip(["l1", "l2"], sets)))
    w.to_reveals()
    for role, labels in zip(["l1", "l2"], sets):
        w.lt[role].reveal(task_id, labels, salts[role])
    before = w.balances()
    w.to_finalize()
    settled = w.lt["l3"].finalize(task_id)
    after = w.balances()
    assert settled.consensus == b"" and settled.refunded == REWARD
    assert after["requester"] - before["requester"] == REWARD
    assert [after[r] - before[r] for r in ["l1", "l2"]] == [STAKE, STAKE]
    assert w.lt["l3"].task(task_id).state_name == "cancelled" and after["contract"] == 0


@pytest.mark.parametrize("kw, message", [
    (dict(n_items=65), "1 to 64 items"),
    (dict(classes=5), "2 to 4 classes"),
    (dict(labels_per_item=2), "3 to 8 labellers"),
    (dict(stake=0), "the stake must be positive"),
    (dict(threshold=10001), "at most 10000 bps"),
])
def test_malformed_tasks_are_refused(world, kw, message):
    with pytest.raises(ChainError, match=message):
        world.post(**kw)


def test_aggregate_is_consensus_py_to_the_bit(world):
    """The contract's aggregation on random labels of every shape it takes (1 to 64 items, 3 to 8
    labellers, 2 to 4 classes, unanimous and random labels) equals consensus.py's, iterations
    included (from 2 to the cap of 100)."""
    rng = np.random.default_rng(3)
    shapes = [(1, 3, 2), (64, 8, 4), (64, 3, 2), (7, 5, 3), (33, 6, 4), (20, 4, 2), (50, 7, 3), (64, 5, 4),
              (21, 3, 4), (52, 5, 3), (40, 7, 2)]
    seen = set()
    for n, m, k in shapes:
        truth, sets = simulate(int(rng.integers(1 << 30)), n, k, [*rng.uniform(0.4, 1.0, m - 1), None])
        consensus, accuracy, iterations = world.lt["l1"].aggregate(sets, k)
        expected = dawid_skene([list(item) for item in zip(*sets)], k)
        assert (consensus, accuracy, iterations) == (bytes(expected.labels), list(expected.accuracy_bps),
                                                     expected.iterations), (n, m, k)
        seen.add(iterations)
    assert min(seen) <= 5 and MAX_ITERATIONS in seen
    unanimous = [[2] * 10] * 4
    assert world.lt["l1"].aggregate(unanimous, 3)[0] == bytes([2] * 10)


def run_round(w, lt, task_id, by_role):
    """Commit, reveal and reach the end of the reveal phase for these labellers' labels."""
    salts = {}
    for role, labels in by_role.items():
        salts[role] = new_salt()
        lt[role].commit_labels(task_id, labels, salts[role])
    w.to_reveals()
    for role, labels in by_role.items():
        lt[role].reveal(task_id, labels, salts[role])
    w.to_finalize()


def test_a_slow_round_settles_over_several_calls_to_the_bit(world):
    """Weak labellers whose EM runs 92 iterations: each finalize runs 36 of them and logs how far
    it got, the third settles; the result is consensus.py's uninterrupted run to the bit, and
    tokens are conserved. A finalize in between pays nobody."""
    w = world
    truth, sets = simulate(1, 40, 3, [0.7, 0.6, 0.55, 0.5, None])
    expected = dawid_skene([list(item) for item in zip(*sets)], 3)
    assert expected.iterations == 92
    before = w.balances()
    task_id = w.post()
    run_round(w, w.lt, task_id, dict(zip(LABELLERS, sets)))
    first = w.lt["l6"].chain.send(w.lt["l6"].fn.finalize(task_id))
    (paused,) = w.lt["l6"].contract.events.Aggregating().process_receipt(first)
    assert paused["args"]["iterations"] == ITERATIONS_PER_CALL == w.lt["l6"].iterations(task_id)
    assert w.lt["l6"].task(task_id).state_name == "open" and w.token.balance_of(w.address) == REWARD + 5 * STAKE
    settled = w.lt["requester"].finalize(task_id)  # the client goes on until it settles
    print(f"\nfinalize, slow round of 5 x 40, K=3: {expected.iterations} iterations, "
          f"gas per call {[first['gasUsed'], *settled.gas_per_call]}")
    assert len(settled.gas_per_call) == 2 and settled.iterations == 92 == w.lt["l6"].iterations(task_id)
    assert settled.consensus == bytes(expected.labels)
    assert [w.lt["l6"].accuracy(task_id, w.who[r]) for r in LABELLERS] == list(expected.accuracy_bps)
    assert max(first["gasUsed"], *settled.gas_per_call) < GAS_CAP
    after = w.balances()
    assert after["contract"] == 0 and sum(after.values()) == sum(before.values())
    with pytest.raises(ChainError, match="labels: no such open task"):
        w.lt["l1"].finalize(task_id)


def test_every_finalize_fits_the_gas_cap_in_the_worst_case(world, tmp_path):
    """The most the contract takes, 8 labellers x 64 items x 4 classes, with the EM never
    stopping early (100 iterations) and every data-dependent branch on its costlier side (the
    contract of ``worst_case_source``, an upper bound for any labels): each of the three finalize
    calls stays under 2**24 gas, even with the client's 25% headroom on its estimate."""
    w = world
    source = tmp_path / "LabelTasks.vy"
    source.write_text(worst_case_source((Path(__file__).resolve().parents[2] / "veracity" / "contracts"
                                         / "LabelTasks.vy").read_text()))
    address = w.chain.deploy(str(source), w.token_address, w.who["treasury"])
    lt = {r: LabelTasksClient(c.chain, address, c.token) for r, c in w.lt.items()}
    rng = np.random.default_rng(0)
    roles = ["l1", "l2", "l3", "l4", "spammer", "l6", "l7", "l8"]
    now = w.chain.now()
    task_id = lt["requester"].post_task(CID, 64, 4, 8, REWARD, STAKE, now + 100, now + 200, THRESHOLD_BPS, SLASH_BPS)
    run_round(w, lt, task_id, {r: rng.integers(0, 4, 64).tolist() for r in roles})
    settled = lt["requester"].finalize(task_id)
    print(f"\nfinalize, worst case 8 x 64, K=4: gas per call {list(settled.gas_per_call)}")
    assert settled.iterations == MAX_ITERATIONS and len(settled.gas_per_call) == 3
    assert max(settled.gas_per_call) * 5 // 4 + 25_000 < GAS_CAP
