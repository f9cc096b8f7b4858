"""The DataPool on a real anvil node: signatures bound to (chain, contract, pool, CID,
contributor), device keys, scores computed on chain from a committed score job's output and
bound to what they score, near-copies scored zero, epoch rewards and a sale paid exact to the
wei, and every cheating call refused with its reason."""

import hashlib

import numpy as np
import pytest

from veracity.chain.client import PROVIDER
from veracity.chain.pools import sign_contribution
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


class PoolWorld:
    """The deployer's DataPool as each actor: the client owns and curates a pool, the provider
    runs its score orders (committing the embeddings the test chooses)."""

    def __init__(self, a, devices=False, threshold=9000, reward=90 * TOKEN, budget=30 * TOKEN):
        self.a = a
        self.owner = a.d.data_pool_client(a.client.key)
        self.rng = np.random.default_rng(7)
        self.topic_vec = unit(self.rng)
        self.topic = emb_bytes(self.topic_vec)
        self.pool = self.owner.create_pool(hashlib.sha256(b"schema").digest(), self.topic, threshold, devices, EPOCH,
                                           2, reward, budget)
        a.provider.registry.register(PROVIDER, 1000 * TOKEN, "cpu", 24, [MINILM], 1 * TOKEN, "http://127.0.0.1:9000")

    def as_(self, actor):
        return self.a.d.data_pool_client(actor.key)

    def contribute(self, actor, data: bytes, device_key=None, pool=None):
        pool = self.pool if pool is None else pool
        cid = hashlib.sha256(data).digest()
        sig = sign_contribution(actor.key, self.a.d.chain_id, self.a.d.data_pool, pool, cid, actor.address)
        dev = sign_contribution(device_key, self.a.d.chain_id, self.a.d.data_pool, pool, cid, actor.address) \
            if device_key else b""
        return self.as_(self.a.stranger).contribute(pool, actor.address, cid, sig, dev)  # relayed by anyone

    def score(self, index, vec, price=5 * TOKEN):
        """Order the score, accept the provider's bid, commit ``vec`` as its output."""
        oid = self.owner.order_score(self.pool, index, 10 * TOKEN, hashlib.sha256(b"program").digest(), 11)
        bid = sign_bid(Bid(order_id=oid, provider=self.a.provider.address, price=price, collateral=2 * TOKEN,
                           expiry=self.a.now() + 300, run_time=60), self.a.provider.key, self.a.d.chain_id,
                       self.a.d.market)
        self.owner.accept(bid)
        blob = P.output_blob(vec)
        self.a.provider.market.commit_result(oid, [tensor_digest(np.asarray(vec, np.int32).reshape(1, P.DIM))],
                                             hashlib.sha256(b"trace").digest(), 11)
        return oid, blob


def test_the_score_spec_built_on_chain_is_the_clients(actors):
    pool = actors.d.data_pool_client(actors.client.key)
    for seed in (b"a", b"b", b"c"):
        digest = hashlib.sha256(seed).digest()
        assert pool.score_spec(digest) == P.score_spec(cid_from_digest(digest))


def test_a_contribution_is_bound_to_its_pool_contract_and_contributor(actors):
    a = actors
    w = PoolWorld(a)
    data = P.contribution_line("a film worth seeing", 1)
    other = w.owner.create_pool(hashlib.sha256(b"schema2").digest(), w.topic, 9000, False, EPOCH, 1, 0, 0)
    cid = hashlib.sha256(data).digest()
    signed_for_pool0 = sign_contribution(a.client2.key, a.d.chain_id, a.d.data_pool, w.pool, cid, a.client2.address)
    relay = w.as_(a.stranger)
    with pytest.raises(ChainError, match="not the contributor's for this pool"):  # replayed to another pool
        relay.contribute(other, a.client2.address, cid, signed_for_pool0)
    wrong_chain = sign_contribution(a.client2.key, a.d.chain_id + 1, a.d.data_pool, w.pool, cid, a.client2.address)
    with pytest.raises(ChainError, match="not the contributor's"):
        relay.contribute(w.pool, a.client2.address, cid, wrong_chain)
    with pytest.raises(ChainError, match="not the contributor's"):  # claimed for someone else
        relay.contribute(w.pool, a.stranger.address, cid, signed_for_pool0)
    assert relay.contribute(w.pool, a.client2.address, cid, signed_for_pool0) == 0
    with pytest.raises(ChainError, match="contributed to this pool already"):
        relay.contribute(w.pool, a.client2.address, cid, signed_for_pool0)
    assert w.owner.item(w.pool, 0).contributor == a.client2.address


def test_device_data_needs_a_device_registered_to_the_contributor(actors):
    a = actors
    w = PoolWorld(a, devices=True)
    from eth_account import Account

    device, rogue = Account.create(), Account.create()
    w.owner.register_device(w.pool, device.address, a.client2.address)
    with pytest.raises(ChainError, match="only the pool's owner or curator"):
        w.as_(a.stranger).register_device(w.pool, rogue.address, a.stranger.address)
    with pytest.raises(ChainError, match="a device signature is needed"):
        w.contribute(a.client2, b"reading 1\n")
    with pytest.raises(ChainError, match="not from a device registered to the contributor"):  # a forged device
        w.contribute(a.client2, b"reading 1\n", device_key="0x" + bytes(rogue.key).hex())
    with pytest.raises(ChainError, match="not from a device registered to the contributor"):  # someone else's device
        w.contribute(a.stranger, b"reading 2\n", device_key="0x" + bytes(device.key).hex())
    assert w.contribute(a.client2, b"reading 1\n", device_key="0x" + bytes(device.key).hex()) == 0


def test_scores_near_copies_epoch_rewards_and_a_sale_to_the_wei(actors):
    a = actors
    supply = a.client.token.total_supply()
    w = PoolWorld(a)
    people = [a.client2, a.validator, a.stranger]
    rng = w.rng
    vec_a = unit(rng, near=w.topic_vec, noise=0.04)  # on topic
    vec_b = unit(rng, near=w.topic_vec, noise=0.06)
    vec_c = unit(rng, near=vec_a, noise=0.002)  # a near-copy of a's
    for who, text in zip(people, ("a", "b", "a, copied")):
        w.contribute(who, P.contribution_line(text, 0))
    before = {p.address: a.client.token.balance_of(p.address) for p in people}
    owner0 = a.client.token.balance_of(a.client.address)
    relay = w.as_(a.stranger)
    orders = [w.score(i, v) for i, v in enumerate((vec_a, vec_b, vec_c))]
    with pytest.raises(ChainError, match="challenge window is still open"):
        relay.settle(w.pool, 0, orders[0][1], w.topic, [])
    a.advance(31)
    with pytest.raises(ChainError, match="settled in order"):
        relay.settle(w.pool, 1, orders[1][1], w.topic, [])
    with pytest.raises(ChainError, match="not the committed output"):
        relay.settle(w.pool, 0, P.output_blob(vec_b), w.topic, [])
    with pytest.raises(ChainError, match="not the pool's topic"):
        relay.settle(w.pool, 0, orders[0][1], emb_bytes(vec_b), [])
    relay.settle(w.pool, 0, orders[0][1], w.topic, [])
    with pytest.raises(ChainError, match="give every accepted item"):  # leaving out what it copies
        relay.settle(w.pool, 1, orders[1][1], w.topic, [])
    relay.settle(w.pool, 1, orders[1][1], w.topic, relay.accepted(w.pool))
    forged = [relay.accepted(w.pool)[0][:-4] + b"\x00\x00\x00\x00", relay.accepted(w.pool)[1]]
    with pytest.raises(ChainError, match="not the pool's"):
        relay.settle(w.pool, 2, orders[2][1], w.topic, forged)
    relay.settle(w.pool, 2, orders[2][1], w.topic, relay.accepted(w.pool))
    embs = [emb_bytes(v) for v in (vec_a, vec_b, vec_c)]
    expected = [P.score(embs[0], w.topic, [], 9000), P.score(embs[1], w.topic, embs[:1], 9000),
                P.score(embs[2], w.topic, embs[:2], 9000)]
    scored = [e for e in relay.events(w.pool) if e.name == "Scored"]
    assert [(e.args["quality_bps"], e.args["similarity_bps"], e.args["score"]) for e in scored] == expected
    assert expected[0][2] > 0 and expected[1][2] > 0 and expected[2] == (expected[2][0], expected[2][1], 0)
    assert expected[2][1] >= 9000  # the copy is a near-copy
    program = hashlib.sha256(b"program").digest()
    for i in range(3):  # each score is bound to chain, contract, pool, CID and program
        item = relay.item(w.pool, i)
        from eth_abi import encode
        from eth_utils import keccak

        want = keccak(encode(["uint256", "address", "uint256", "bytes32", "bytes32", "uint256"],
                             [a.d.chain_id, a.d.data_pool, w.pool, item.cid, program, item.score]))
        assert relay.score_binding(w.pool, i) == want == bytes.fromhex(scored[i].args["binding"].removeprefix("0x"))
    with pytest.raises(ChainError, match="the epoch has not ended"):
        relay.pay_epoch(w.pool, 0)
    a.advance(EPOCH)
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
    # the owner got the remainder; the unspent score budget waits for the end of the epochs
    assert a.client.token.balance_of(a.client.address) - owner0 == remainder
    buyer = a.d.data_pool_client(a.provider2.key)
    b0 = {p.address: a.client.token.balance_of(p.address) for p in people}
    buyer.buy(w.pool, 1000 * TOKEN + 7, hashlib.sha256(b"dataset").digest())
    sale = P.shares(1000 * TOKEN + 7, scores)
    for p in people:
        assert a.client.token.balance_of(p.address) - b0[p.address] == sale.get(p.address, 0)
    assert [e.args["items"] for e in relay.events(w.pool) if e.name == "Bought"] == [2]  # the events still read
    a.advance(EPOCH)
    relay.pay_epoch(w.pool, 1)  # nothing contributed: the whole reward back to the owner
    w.owner.withdraw_budget(w.pool)
    assert a.client.token.balance_of(a.d.data_pool) == 0  # everything it took, paid out
    assert a.client.token.total_supply() == supply


def test_rejections_and_a_curator_that_stops(actors):
    a = actors
    w = PoolWorld(a)
    w.contribute(a.client2, b"not json\n")
    w.contribute(a.validator, P.contribution_line("fine", 1))
    stranger = w.as_(a.stranger)
    with pytest.raises(ChainError, match="only the curator rejects"):
        stranger.reject(w.pool, 0, "spam")
    with pytest.raises(ChainError, match="only the pool's curator orders"):
        stranger.order_score(w.pool, 0, TOKEN, bytes(32), 1)
    budget = w.owner.pool(w.pool).score_budget
    w.owner.reject(w.pool, 0, "not a JSON line")
    oid = w.owner.order_score(w.pool, 1, 10 * TOKEN, bytes(32), 1)  # no provider takes it
    assert w.owner.pool(w.pool).score_budget == budget - 10 * TOKEN
    a.advance(2 * EPOCH)
    stranger.reject(w.pool, 1, "never scored")  # past its grace, anyone: the escrow comes back
    assert w.owner.pool(w.pool).score_budget == budget
    assert a.client.market.order(oid).state_name in ("refunded", "cancelled")
    stranger.pay_epoch(w.pool, 0)
    assert [w.owner.item(w.pool, i).state_name for i in range(2)] == ["rejected", "rejected"]
