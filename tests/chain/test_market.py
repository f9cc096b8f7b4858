"""The order lifecycle on a real anvil node: open, bid, accept, commit, finalize; the timeout
path; and a readable revert for each bad call."""

import hashlib

import pytest

from veracity.chain.client import PROVIDER, VALIDATOR
from veracity.chain.events import EventStream
from veracity.errors import ChainError
from veracity.market.bids import Bid, bid_digest, bid_signer, sign_bid, sign_window

TOKEN = 10**18
SPEC = hashlib.sha256(b"job spec").digest()
MODEL = hashlib.sha256(b"minilm").digest()


def register_provider(actor, stake=1000 * TOKEN):
    actor.registry.register(PROVIDER, stake, "cpu", 24, [MODEL], 1 * TOKEN, "http://127.0.0.1:9000")


PROGRAM = hashlib.sha256(b"program").digest()  # the order's program: its trace has TRACE_LEN records
TRACE_LEN = 84


def open_order(a, max_price=50 * TOKEN, deadline_in=600, window=60, client=None, length=TRACE_LEN):
    c = client or a.client
    return c.market.open_order(SPEC, 1, MODEL, max_price, a.now() + deadline_in, window, 500, PROGRAM, length)


def bid_for(a, order_id, price=40 * TOKEN, collateral=200 * TOKEN, expiry=None, signer=None, provider=None,
            run_time=60):
    p = provider or a.provider
    bid = Bid(order_id=order_id, provider=p.address, price=price, collateral=collateral,
              expiry=expiry if expiry is not None else a.now() + 300, run_time=run_time)
    return sign_bid(bid, (signer or p).key, a.d.chain_id, a.d.market)


def window_sig(a, oid, spec, root, length, signer=None):
    """The lease provider's co-signature of a window (``Market.post_window`` checks it)."""
    return sign_window(oid, spec, root, length, (signer or a.provider).key, a.d.chain_id, a.d.market)


def test_python_bid_digest_matches_the_contract(actors):
    a = actors
    bid = bid_for(a, 7, price=123, collateral=456, expiry=789, run_time=42)
    assert bid_digest(bid, a.d.chain_id, a.d.market) == a.client.market.bid_digest(7, a.provider.address, 123, 456, 789,
                                                                                   42)
    assert bid_signer(bid, a.d.chain_id, a.d.market) == a.provider.address


def test_full_lifecycle_pays_the_provider_and_the_fee_pool(actors):
    a = actors
    register_provider(a.provider)
    stream = EventStream(a.stranger.chain, {"Market": a.d.market, "Registry": a.d.registry},
                         start=a.stranger.chain.w3.eth.block_number + 1)
    client0, provider0 = a.client.token.balance_of(a.client.address), a.provider.token.balance_of(a.provider.address)
    oid = open_order(a)
    assert a.client.token.balance_of(a.client.address) == client0 - 50 * TOKEN
    a.client.market.accept_bid(bid_for(a, oid))
    assert a.client.token.balance_of(a.client.address) == client0 - 40 * TOKEN  # 10 refunded
    assert a.provider.registry.node(a.provider.address).locked == 200 * TOKEN
    out, root = hashlib.sha256(b"out").digest(), hashlib.sha256(b"trace").digest()
    a.provider.market.commit_result(oid, out, root, 84)
    a.advance(61)
    a.stranger.market.finalize(oid)  # anyone may finalize
    fee = 40 * TOKEN * 500 // 10_000
    assert a.provider.token.balance_of(a.provider.address) == provider0 + 40 * TOKEN - fee
    assert a.client.market.fee_pool() == fee and a.client.market.escrow_total() == 0
    node = a.provider.registry.node(a.provider.address)
    assert node.locked == 0 and node.reputation == 1 and node.stake == 1000 * TOKEN
    order = a.client.market.order(oid)
    assert order.state_name == "finalized" and order.trace_root == root and order.trace_length == 84
    names = [e.name for e in stream.poll() if e.contract == "Market"]
    assert names == ["OrderOpened", "BidAccepted", "ResultCommitted", "Finalized"]


def test_missed_deadline_refunds_the_client_and_slashes_collateral(actors):
    a = actors
    register_provider(a.provider)
    client0 = a.client.token.balance_of(a.client.address)
    oid = open_order(a, deadline_in=120)
    a.client.market.accept_bid(bid_for(a, oid, price=30 * TOKEN, collateral=200 * TOKEN))
    with pytest.raises(ChainError, match="deadline has not passed yet"):
        a.client.market.reclaim(oid)
    a.advance(121)
    with pytest.raises(ChainError, match="deadline has passed"):
        a.provider.market.commit_result(oid, b"\1" * 32, b"\2" * 32, TRACE_LEN)
    a.client.market.reclaim(oid)
    assert a.client.token.balance_of(a.client.address) == client0 + 200 * TOKEN  # escrow back + collateral
    node = a.provider.registry.node(a.provider.address)
    assert node.stake == 800 * TOKEN and node.locked == 0 and node.reputation == -1
    assert a.client.market.order(oid).state_name == "refunded"
    with pytest.raises(ChainError, match="nothing to reclaim"):
        a.client.market.reclaim(oid)


def test_an_open_order_can_be_cancelled(actors):
    a = actors
    client0 = a.client.token.balance_of(a.client.address)
    oid = open_order(a)
    a.client.market.reclaim(oid)
    assert a.client.token.balance_of(a.client.address) == client0
    assert a.client.market.order(oid).state_name == "cancelled"


@pytest.fixture
def open_with_provider(actors):
    register_provider(actors.provider)
    return actors, open_order(actors)


def test_bad_signature_is_refused(open_with_provider):
    a, oid = open_with_provider
    forged = bid_for(a, oid, signer=a.stranger)  # says provider, signed by someone else
    with pytest.raises(ChainError, match="signature is not the provider's"):
        a.client.market.accept_bid(forged)
    tampered = bid_for(a, oid).model_copy(update={"price": 1})
    with pytest.raises(ChainError, match="signature is not the provider's"):
        a.client.market.accept_bid(tampered)


@pytest.mark.parametrize("case,bid_args,reason", [
    ("expired", lambda a: {"expiry": a.now() - 1}, "bid has expired"),
    ("price above max", lambda a: {"price": 51 * TOKEN}, "above the order's max price"),
    ("collateral beyond free stake", lambda a: {"collateral": 1001 * TOKEN}, "free stake is below the bid's collateral"),
])
def test_bad_bid_is_refused(open_with_provider, case, bid_args, reason):
    a, oid = open_with_provider
    with pytest.raises(ChainError, match=reason):
        a.client.market.accept_bid(bid_for(a, oid, **bid_args(a)))
    assert a.client.market.order(oid).state_name == "open"  # nothing changed


def test_double_accept_is_refused(open_with_provider):
    a, oid = open_with_provider
    a.client.market.accept_bid(bid_for(a, oid))
    register_provider(a.provider2)
    with pytest.raises(ChainError, match="not open for bids"):
        a.client.market.accept_bid(bid_for(a, oid, provider=a.provider2))


def test_only_the_client_accepts_and_only_providers_bid(open_with_provider):
    a, oid = open_with_provider
    with pytest.raises(ChainError, match="only the order's client"):
        a.stranger.market.accept_bid(bid_for(a, oid))
    with pytest.raises(ChainError, match="not a registered provider"):
        a.client.market.accept_bid(bid_for(a, oid, provider=a.stranger))


def test_commit_by_a_stranger_is_refused(open_with_provider):
    a, oid = open_with_provider
    a.client.market.accept_bid(bid_for(a, oid))
    with pytest.raises(ChainError, match="only the order's provider"):
        a.stranger.market.commit_result(oid, b"\1" * 32, b"\2" * 32, TRACE_LEN)


def test_finalize_inside_the_window_is_refused(open_with_provider):
    a, oid = open_with_provider
    a.client.market.accept_bid(bid_for(a, oid))
    with pytest.raises(ChainError, match="no committed result"):
        a.stranger.market.finalize(oid)
    a.provider.market.commit_result(oid, b"\1" * 32, b"\2" * 32, TRACE_LEN)
    with pytest.raises(ChainError, match="challenge window is still open"):
        a.stranger.market.finalize(oid)


def test_a_challenged_result_does_not_finalize(open_with_provider):
    a, oid = open_with_provider
    a.client.market.accept_bid(bid_for(a, oid))
    with pytest.raises(ChainError, match="non-empty trace"):  # an empty trace could never be challenged
        a.provider.market.commit_result(oid, b"\1" * 32, b"\2" * 32, 0)
    a.provider.market.commit_result(oid, b"\1" * 32, b"\2" * 32, TRACE_LEN)
    with pytest.raises(ChainError, match="only the disputes contract"):
        a.stranger.chain.send(a.stranger.market.fn.set_challenged(oid, True))
    with pytest.raises(ChainError, match="only the disputes contract"):
        a.stranger.chain.send(a.stranger.market.fn.resolve_dispute(oid, 2, a.stranger.address))
    a.d.disputes_client(a.validator.key).challenge(oid, b"\3" * 32)
    assert a.client.market.fn.challenged(oid).call()
    a.advance(3600)
    with pytest.raises(ChainError, match="the dispute decides"):
        a.stranger.market.finalize(oid)


def test_only_collateral_is_held_by_an_open_lease(open_with_provider):
    a, oid = open_with_provider
    a.client.market.accept_bid(bid_for(a, oid, collateral=800 * TOKEN))
    with pytest.raises(ChainError, match="bonded to open leases"):
        a.provider.registry.request_unbond(201 * TOKEN)
    with pytest.raises(ChainError, match="nothing is unbonding"):
        a.provider.registry.withdraw()
    a.provider.registry.request_unbond(100 * TOKEN)
    with pytest.raises(ChainError, match="still in its unbonding delay"):
        a.provider.registry.withdraw()
    before = a.provider.token.balance_of(a.provider.address)
    a.provider.market.commit_result(oid, b"\1" * 32, b"\2" * 32, TRACE_LEN)
    a.advance(3600)  # past the unbonding delay: the open lease holds its collateral, not the whole stake
    a.provider.registry.withdraw()
    assert a.provider.token.balance_of(a.provider.address) == before + 100 * TOKEN
    node = a.provider.registry.node(a.provider.address)
    assert node.stake == 900 * TOKEN and node.locked == 800 * TOKEN
    a.stranger.market.finalize(oid)
    assert a.provider.registry.free_stake(a.provider.address) == 900 * TOKEN  # the collateral, free again


def test_registration_rules(actors):
    a = actors
    with pytest.raises(ChainError, match="below the minimum stake"):
        a.provider.registry.register(PROVIDER, 99 * TOKEN)
    with pytest.raises(ChainError, match="role must be"):
        a.provider.registry.register(3, 100 * TOKEN)
    a.validator.registry.register(VALIDATOR, 100 * TOKEN, endpoint="http://127.0.0.1:9100")
    with pytest.raises(ChainError, match="already registered"):
        a.validator.registry.register(VALIDATOR, 100 * TOKEN)
    info = a.validator.registry.node(a.validator.address)
    assert info.role == VALIDATOR and info.endpoint == "http://127.0.0.1:9100"


def test_bad_orders_are_refused(actors):
    a = actors
    with pytest.raises(ChainError, match="deadline is already past"):
        a.client.market.open_order(SPEC, 1, MODEL, TOKEN, a.now() - 1, 60)
    with pytest.raises(ChainError, match="max price must be positive"):
        a.client.market.open_order(SPEC, 1, MODEL, 0, a.now() + 60, 60)
    poor = a.stranger
    poor.token.transfer(a.client.address, poor.token.balance_of(poor.address))
    with pytest.raises(ChainError, match="exceeds balance"):
        poor.market.open_order(SPEC, 1, MODEL, TOKEN, a.now() + 60, 60, 0, PROGRAM, TRACE_LEN)


def test_faucet_only_on_devnet_and_capped(actors):
    a = actors
    before = a.stranger.token.balance_of(a.stranger.address)
    a.stranger.token.faucet(5 * TOKEN)
    assert a.stranger.token.balance_of(a.stranger.address) == before + 5 * TOKEN
    with pytest.raises(ChainError, match="at most 1,000,000"):
        a.stranger.token.faucet(10**7 * TOKEN)


def test_event_stream_resumes_from_its_cursor(actors):
    a = actors
    start = a.stranger.chain.w3.eth.block_number + 1
    stream = EventStream(a.stranger.chain, {"Market": a.d.market}, start=start)
    first = open_order(a)
    got = stream.poll()
    assert [(e.name, e.args["order_id"]) for e in got] == [("OrderOpened", first)]
    cursor = stream.next_block
    second = open_order(a)
    resumed = EventStream(a.stranger.chain, {"Market": a.d.market}, start=cursor)  # after a restart
    assert [(e.name, e.args["order_id"]) for e in resumed.poll()] == [("OrderOpened", second)]
    assert resumed.poll() == []


def open_lease(a, deadline_in=600):
    """A standing lease: an order with no spec, served before its requests are known."""
    return a.client.market.open_order(bytes(32), 1, MODEL, 50 * TOKEN, a.now() + deadline_in, 60, 500)


def test_a_standing_lease_commits_only_the_window_its_client_posts(actors):
    a = actors
    register_provider(a.provider)
    oid = open_lease(a)
    sig = window_sig(a, oid, SPEC, b"\3" * 32, 7)
    with pytest.raises(ChainError, match="no accepted provider serving it"):
        a.client.market.post_window(oid, SPEC, b"\3" * 32, 7, sig)
    a.client.market.accept_bid(bid_for(a, oid))
    with pytest.raises(ChainError, match="window is not posted yet"):
        a.provider.market.commit_result(oid, b"\1" * 32, b"\2" * 32, 7)
    with pytest.raises(ChainError, match="only the lease's client posts"):
        a.provider.market.post_window(oid, SPEC, b"\3" * 32, 7, sig)
    with pytest.raises(ChainError, match="spec CID is empty"):
        a.client.market.post_window(oid, bytes(32), b"\3" * 32, 7, window_sig(a, oid, bytes(32), b"\3" * 32, 7))
    a.client.market.post_window(oid, SPEC, b"\3" * 32, 7, sig)
    assert a.client.market.order(oid).spec_cid == SPEC and a.client.market.program(oid) == (b"\3" * 32, 7)
    with pytest.raises(ChainError, match="spec is already fixed"):
        a.client.market.post_window(oid, SPEC, b"\4" * 32, 7, window_sig(a, oid, SPEC, b"\4" * 32, 7))
    with pytest.raises(ChainError, match="program length"):
        a.provider.market.commit_result(oid, b"\1" * 32, b"\2" * 32, 6)
    a.provider.market.commit_result(oid, b"\1" * 32, b"\2" * 32, 7)
    assert a.client.market.order(oid).state_name == "committed"
    with pytest.raises(ChainError, match="spec is already fixed"):  # an ordinary order has no window to post
        a.client.market.post_window(open_order(a), SPEC, b"\3" * 32, 7, sig)


def test_a_lease_that_served_nothing_is_reclaimed_without_slashing_and_a_posted_one_with(actors):
    a = actors
    register_provider(a.provider)
    client0 = a.client.token.balance_of(a.client.address)
    idle, posted = open_lease(a, 120), open_lease(a, 120)
    for oid in (idle, posted):
        a.client.market.accept_bid(bid_for(a, oid, price=30 * TOKEN, collateral=100 * TOKEN))
    a.client.market.post_window(posted, SPEC, b"\3" * 32, 7, window_sig(a, posted, SPEC, b"\3" * 32, 7))
    a.advance(121)
    a.client.market.reclaim(idle)  # nothing was asked of the provider: its collateral is unlocked
    node = a.provider.registry.node(a.provider.address)
    assert node.locked == 100 * TOKEN and node.stake == 1000 * TOKEN and node.reputation == 0
    a.client.market.reclaim(posted)  # a posted window it never committed: slashed to the client
    node = a.provider.registry.node(a.provider.address)
    assert node.locked == 0 and node.stake == 900 * TOKEN and node.reputation == -1
    assert a.client.token.balance_of(a.client.address) == client0 + 100 * TOKEN
    assert a.client.market.escrow_total() == 0
