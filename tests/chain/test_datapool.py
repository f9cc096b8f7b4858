"""The DataPool on a real anvil node: signatures bound to (chain, contract, pool, CID,
contributor), device keys, scores computed on chain from a committed score job's output and
bound to what they score, near-copies scored zero, epoch rewards and a sale paid exact to the
wei, and every cheating call refused with its reason."""

import hashlib

import numpy as np
import pytest

from veracity.chain.client import PROVIDER
from veracity.chain.pools import commitment, sign_contribution
from veracity.cid import cid_from_digest
from veracity.data import pools as P
from veracity.errors import ChainError
from veracity.exact.trace import tensor_digest
from veracity.market.bids import Bid, sign_bid

TOKEN = 10**18
MINILM = hashlib.sha256(b"minilm").digest()
EPOCH = 600


def unit(rng, near=None, noise=0.05):
    v = rng.normal(size=P.DIM) if near is None else near / 32768 + noise * rng.normal(size=P.DIM)
    v = v / np.linalg.norm(v)
    return np.round(v * 32768).astype(np.int32)


def emb_bytes(v):
    return np.asarray(v, dtype=">i4").tobytes()


PROGRAM = (hashlib.sha256(b"program").digest(), 11)  # the score job's program, as contributors sign it
DEPOSIT = 2 * TOKEN


class PoolWorld:
    """The deployer's DataPool as each actor: the client owns and curates a pool, the provider
    runs its score orders (committing the embeddings the test chooses)."""

    def __init__(self, a, devices=False, threshold=9000, reward=90 * TOKEN, budget=30 * TOKEN, deposit=DEPOSIT):
        self.a = a
        self.owner = a.d.data_pool_client(a.client.key)
        self.rng = np.random.default_rng(7)
        self.topic_vec = unit(self.rng)
        self.topic = emb_bytes(self.topic_vec)
        self.pool = self.owner.create_pool(hashlib.sha256(b"schema").digest(), self.topic, threshold, devices, EPOCH,
                                           2, reward, budget, deposit)
        a.provider.registry.register(PROVIDER, 1000 * TOKEN, "cpu", 24, [MINILM], 1 * TOKEN, "http://127.0.0.1:9000")

    def as_(self, actor):
        return self.a.d.data_pool_client(actor.key)

    def contribute(self, actor, data: bytes, device_key=None, pool=None, program=PROGRAM, relay=None):
        """Commit, then reveal (relayed by the contributor itself unless ``relay``)."""
        pool = self.pool if pool is None else pool
        cid = hashlib.sha256(data).digest()
        salt = hashlib.sha256(data + b"salt").digest()
        sender = self.as_(relay or actor)
        sender.commit(pool, commitment(cid, actor.address, salt))
        sig = sign_contribution(actor.key, self.a.d.chain_id, self.a.d.data_pool, pool, cid, actor.address, program)
        dev = sign_contribution(device_key, self.a.d.chain_id, self.a.d.data_pool, pool, cid, actor.address,
                                program) if device_key else b""
        return sender.contribute(pool, actor.address, cid, salt, program, sig, dev)

    def score(self, index, vec, price=5 * TOKEN, deliver=True):
        """Order the score, accept the provider's bid, commit ``vec`` as its output (and deliver it
        once the window has passed)."""
        oid = self.owner.order_score(self.pool, index, 10 * TOKEN)
        bid = sign_bid(Bid(order_id=oid, provider=self.a.provider.address, price=price, collateral=2 * TOKEN,
                           expiry=self.a.now() + 300, run_time=60), self.a.provider.key, self.a.d.chain_id,
                       self.a.d.market)
        self.owner.accept(bid)
        self.a.provider.market.commit_result(oid, [tensor_digest(np.asarray(vec, np.int32).reshape(1, P.DIM))],
                                             hashlib.sha256(b"trace").digest(), PROGRAM[1])
        return oid, P.output_blob(vec)


def test_the_score_spec_built_on_chain_is_the_clients(actors):
    pool = actors.d.data_pool_client(actors.client.key)
    for seed in (b"a", b"b", b"c"):
        digest = hashlib.sha256(seed).digest()
        assert pool.score_spec(digest) == P.score_spec(cid_from_digest(digest))


def test_a_contribution_is_bound_to_its_pool_contract_contributor_and_program(actors):
    a = actors
    w = PoolWorld(a)
    data = P.contribution_line("a film worth seeing", 1)
    other = w.owner.create_pool(hashlib.sha256(b"schema2").digest(), w.topic, 9000, False, EPOCH, 1, 0, 0)
    cid, salt = hashlib.sha256(data).digest(), hashlib.sha256(b"salt").digest()
    mine = w.as_(a.client2)
    mine.token.approve(a.d.data_pool, 10 * DEPOSIT)
    signed = sign_contribution(a.client2.key, a.d.chain_id, a.d.data_pool, w.pool, cid, a.client2.address, PROGRAM)
    with pytest.raises(ChainError, match="commit to the contribution first"):  # no commitment: nobody can claim it
        mine.contribute(w.pool, a.client2.address, cid, salt, PROGRAM, signed)
    for pool in (w.pool, other):
        mine.commit(pool, commitment(cid, a.client2.address, salt))
    with pytest.raises(ChainError, match="not the contributor's for this pool"):  # replayed to another pool
        mine.contribute(other, a.client2.address, cid, salt, PROGRAM, signed)
    wrong_chain = sign_contribution(a.client2.key, a.d.chain_id + 1, a.d.data_pool, w.pool, cid, a.client2.address,
                                    PROGRAM)
    with pytest.raises(ChainError, match="not the contributor's"):
        mine.contribute(w.pool, a.client2.address, cid, salt, PROGRAM, wrong_chain)
    with pytest.raises(ChainError, match="not the contributor's"):  # another program than the one it signed
        mine.contribute(w.pool, a.client2.address, cid, salt, (bytes(32), 11), signed)
    with pytest.raises(ChainError, match="commit to the contribution first"):  # claimed for someone else
        mine.contribute(w.pool, a.stranger.address, cid, salt, PROGRAM, signed)
    balance = a.client2.token.balance_of(a.client2.address)
    assert mine.contribute(w.pool, a.client2.address, cid, salt, PROGRAM, signed) == 0
    assert a.client2.token.balance_of(a.client2.address) == balance - DEPOSIT  # the deposit is down
    thief = w.as_(a.stranger)  # saw the CID in the reveal: too late, and it has no commitment of its own first
    thief.commit(w.pool, commitment(cid, a.stranger.address, salt))
    stolen = sign_contribution(a.stranger.key, a.d.chain_id, a.d.data_pool, w.pool, cid, a.stranger.address, PROGRAM)
    thief.token.approve(a.d.data_pool, DEPOSIT)
    with pytest.raises(ChainError, match="contributed to this pool already"):
        thief.contribute(w.pool, a.stranger.address, cid, salt, PROGRAM, stolen)
    item = w.owner.item(w.pool, 0)
    assert item.contributor == a.client2.address and (item.program_root, item.program_length) == PROGRAM
    oid = w.owner.order_score(w.pool, 0, TOKEN)  # the curator orders it with the program the contributor signed
    assert a.client.market.program(oid) == PROGRAM


def test_device_data_needs_a_device_registered_to_the_contributor(actors):
    a = actors
    w = PoolWorld(a, devices=True, deposit=0)
    from eth_account import Account

    device, rogue = Account.create(), Account.create()
    w.owner.register_device(w.pool, device.address, a.client2.address)
    with pytest.raises(ChainError, match="only the pool's owner or curator"):
        w.as_(a.stranger).register_device(w.pool, rogue.address, a.stranger.address)
    with pytest.raises(ChainError, match="a device signature is needed"):
        w.contribute(a.client2, b"reading 1\n")
    with pytest.raises(ChainError, match="not from a device registered to the contributor"):  # a forged device
        w.contribute(a.client2, b"reading 2\n", device_key="0x" + bytes(rogue.key).hex())
    with pytest.raises(ChainError, match="not from a device registered to the contributor"):  # someone else's device
        w.contribute(a.stranger, b"reading 3\n", device_key="0x" + bytes(device.key).hex())
    assert w.contribute(a.client2, b"reading 4\n", device_key="0x" + bytes(device.key).hex(), relay=a.stranger) == 0


def test_scores_near_copies_deposits_epoch_rewards_and_a_sale_to_the_wei(actors):
    a = actors
    supply = a.client.token.total_supply()
    treasury = a.client.market.treasury()
    w = PoolWorld(a)
    people = [a.client2, a.validator, a.stranger]
    rng = w.rng
    vec_a = unit(rng, near=w.topic_vec, noise=0.04)  # on topic
    vec_b = unit(rng, near=w.topic_vec, noise=0.06)
    vec_c = unit(rng, near=vec_a, noise=0.002)  # a near-copy of a's
    for who, text in zip(people, ("a", "b", "a, copied")):
        w.contribute(who, P.contribution_line(text, 0))
    before = {p.address: a.client.token.balance_of(p.address) for p in people}
    owner0, treasury0 = a.client.token.balance_of(a.client.address), a.client.token.balance_of(treasury)
    relay = w.as_(a.provider2)
    orders = [w.score(i, v) for i, v in enumerate((vec_a, vec_b, vec_c))]
    with pytest.raises(ChainError, match="challenge window is still open"):
        relay.deliver(orders[1][0], orders[1][1])
    a.advance(31)
    with pytest.raises(ChainError, match="not delivered yet"):
        relay.settle(w.pool, 0, emb_bytes(vec_a), w.topic, [])
    with pytest.raises(ChainError, match="not the committed output"):
        relay.deliver(orders[1][0], P.output_blob(vec_a))
    provider0 = a.client.token.balance_of(a.provider.address)
    for oid, blob in reversed(orders):  # delivered in any order: each provider is paid on delivery
        relay.deliver(oid, blob)
    assert a.client.token.balance_of(a.provider.address) > provider0
    with pytest.raises(ChainError, match="not waiting for a score order"):  # nobody can void a delivered result
        w.owner.order_score(w.pool, 2, TOKEN)
    with pytest.raises(ChainError, match="settled in order"):
        relay.settle(w.pool, 1, emb_bytes(vec_b), w.topic, [])
    with pytest.raises(ChainError, match="not the delivered embedding"):
        relay.settle(w.pool, 0, emb_bytes(vec_b), w.topic, [])
    with pytest.raises(ChainError, match="not the pool's topic"):
        relay.settle(w.pool, 0, emb_bytes(vec_a), emb_bytes(vec_b), [])
    relay.settle(w.pool, 0, emb_bytes(vec_a), w.topic, [])
    with pytest.raises(ChainError, match="give every accepted item"):  # leaving out what it copies
        relay.settle(w.pool, 1, emb_bytes(vec_b), w.topic, [])
    relay.settle(w.pool, 1, emb_bytes(vec_b), w.topic, relay.accepted(w.pool))
    forged = [relay.accepted(w.pool)[0][:-4] + b"\x00\x00\x00\x00", relay.accepted(w.pool)[1]]
    with pytest.raises(ChainError, match="not the pool's"):
        relay.settle(w.pool, 2, emb_bytes(vec_c), w.topic, forged)
    relay.settle(w.pool, 2, emb_bytes(vec_c), w.topic, relay.accepted(w.pool))
    embs = [emb_bytes(v) for v in (vec_a, vec_b, vec_c)]
    expected = [P.score(embs[0], w.topic, [], 9000), P.score(embs[1], w.topic, embs[:1], 9000),
                P.score(embs[2], w.topic, embs[:2], 9000)]
    scored = [e for e in relay.events(w.pool) if e.name == "Scored"]
    assert [(e.args["quality_bps"], e.args["similarity_bps"], e.args["score"]) for e in scored] == expected
    assert expected[0][2] > 0 and expected[1][2] > 0 and expected[2] == (expected[2][0], expected[2][1], 0)
    assert expected[2][1] >= 9000  # the copy is a near-copy
    from eth_abi import encode
    from eth_utils import keccak

    for i in range(3):  # each score is bound to chain, contract, pool, CID and program
        item = relay.item(w.pool, i)
        want = keccak(encode(["uint256", "address", "uint256", "bytes32", "bytes32", "uint256"],
                             [a.d.chain_id, a.d.data_pool, w.pool, item.cid, PROGRAM[0], item.score]))
        assert relay.score_binding(w.pool, i) == want == bytes.fromhex(scored[i].args["binding"].removeprefix("0x"))
    # deposits: back to the accepted, the near-copy's to the treasury
    for p, back in zip(people, (DEPOSIT, DEPOSIT, 0)):
        assert a.client.token.balance_of(p.address) - before[p.address] == back
    with pytest.raises(ChainError, match="the epoch has not ended"):
        relay.pay_epoch(w.pool, 0)
    a.advance(EPOCH)
    before = {p.address: a.client.token.balance_of(p.address) for p in people}
    relay.pay_epoch(w.pool, 0)
    with pytest.raises(ChainError, match="paid already"):
        relay.pay_epoch(w.pool, 0)
    reward = 90 * TOKEN  # each epoch's
    scores = {people[0].address: expected[0][2], people[1].address: expected[1][2], people[2].address: 0}
    paid = P.shares(reward, scores)
    for p in people:
        assert a.client.token.balance_of(p.address) - before[p.address] == paid.get(p.address, 0)
    assert paid[people[2].address] == 0  # the near-copy earns nothing
    remainder = reward - sum(paid.values())
    # the remainder of an epoch with contributions goes to the treasury, never to the owner's side
    assert a.client.token.balance_of(treasury) - treasury0 == remainder + DEPOSIT
    assert a.client.token.balance_of(a.client.address) == owner0
    buyer = relay  # one client per account: each keeps its own nonce
    b0 = {p.address: a.client.token.balance_of(p.address) for p in people}
    buyer.buy(w.pool, 1000 * TOKEN + 7, hashlib.sha256(b"dataset").digest())
    sale = P.shares(1000 * TOKEN + 7, scores)
    for p in people:
        assert a.client.token.balance_of(p.address) - b0[p.address] == sale.get(p.address, 0)
    assert [e.args["items"] for e in relay.events(w.pool) if e.name == "Bought"] == [2]  # the events still read
    a.advance(EPOCH)
    owner0 = a.client.token.balance_of(a.client.address)
    relay.pay_epoch(w.pool, 1)  # nothing contributed: the whole reward back to the owner
    assert a.client.token.balance_of(a.client.address) - owner0 == reward
    w.owner.withdraw_budget(w.pool)
    assert a.client.token.balance_of(a.d.data_pool) == 0  # everything it took, paid out
    assert a.client.token.total_supply() == supply


def test_rejections_and_a_curator_that_stops(actors):
    a = actors
    w = PoolWorld(a, deposit=0)
    w.contribute(a.client2, b"not json\n")
    w.contribute(a.validator, P.contribution_line("fine", 1))
    stranger = w.as_(a.stranger)
    with pytest.raises(ChainError, match="only the curator rejects"):
        stranger.reject(w.pool, 0, "spam")
    with pytest.raises(ChainError, match="only the pool's curator orders"):
        stranger.order_score(w.pool, 0, TOKEN)
    budget = w.owner.pool(w.pool).score_budget
    w.owner.reject(w.pool, 0, "not a JSON line")
    oid = w.owner.order_score(w.pool, 1, 10 * TOKEN)  # no provider takes it
    assert w.owner.pool(w.pool).score_budget == budget - 10 * TOKEN
    a.advance(2 * EPOCH)
    with pytest.raises(ChainError, match="grace has ended"):  # the curator cannot hold the item by re-ordering it
        w.owner.order_score(w.pool, 1, TOKEN)
    stranger.reject(w.pool, 1, "never scored")  # past its grace, anyone: the escrow comes back
    assert w.owner.pool(w.pool).score_budget == budget
    assert a.client.market.order(oid).state_name in ("refunded", "cancelled")
    stranger.pay_epoch(w.pool, 0)
    assert [w.owner.item(w.pool, i).state_name for i in range(2)] == ["rejected", "rejected"]


def test_a_committed_score_its_curator_holds_back_is_still_delivered_and_paid(actors):
    """The curator leaves item 0 unscored so item 1 cannot be settled, then tries to void item 1's
    committed result: its provider delivers it out of turn, is paid, and keeps its collateral."""
    a = actors
    w = PoolWorld(a, deposit=0)
    w.contribute(a.client2, P.contribution_line("first", 1))
    w.contribute(a.validator, P.contribution_line("second", 0))
    vec = unit(w.rng, near=w.topic_vec, noise=0.05)
    oid, blob = w.score(1, vec)
    a.advance(31)
    stake = a.provider.registry.node(a.provider.address).stake
    w.as_(a.provider).deliver(oid, blob)
    a.advance(3700)  # past the Market's delivery time
    with pytest.raises(ChainError, match="not waiting for a score order"):
        w.owner.order_score(w.pool, 1, TOKEN)
    a.advance(2 * EPOCH)
    w.as_(a.stranger).reject(w.pool, 0, "never scored")
    with pytest.raises(ChainError, match="delivered or settled"):
        w.as_(a.stranger).reject(w.pool, 1, "never scored")
    w.as_(a.stranger).settle(w.pool, 1, emb_bytes(vec), w.topic, [])
    assert w.owner.item(w.pool, 1).state_name == "scored" and w.owner.item(w.pool, 1).score > 0
    node = a.provider.registry.node(a.provider.address)
    assert node.stake == stake and node.locked == 0 and a.client.market.order(oid).state_name == "finalized"
