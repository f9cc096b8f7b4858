"""The dispute game on a real anvil node: a challenge with a bond, bisection to the first
differing record with Merkle-proven reveals, and a party that misses its move losing: a cheating
provider is overturned and slashed, a challenger that cannot back its claim loses its bond."""

import math

import pytest
from test_market import bid_for, open_order, register_provider

from veracity.errors import ChainError
from veracity.exact import merkle
from veracity.exact.trace import TraceRecord
from veracity.verify.bisection import TraceView, play
from veracity.verify.sampling import bond_to_provider, challenger_reward

N = 300  # records in the job's trace


def trace(changed=()):
    return TraceView([TraceRecord(i // 5, f"op{i % 5}", bytes([i % 251, 1 if i in changed else 0]) * 16)
                      for i in range(N)])


@pytest.fixture
def committed(actors):
    """An order whose provider committed a trace that differs from the honest one from record 123 on."""
    a = actors
    register_provider(a.provider)
    oid = open_order(a, window=600, length=N)
    bid = bid_for(a, oid)
    a.client.market.accept_bid(bid)
    cheat, honest = trace(changed={123, 124, 200}), trace()
    a.provider.market.commit_result(oid, b"\1" * 32, cheat.root, N)
    return a, oid, bid, cheat, honest


def step(disputes, who, view, oid):
    g = disputes.game(oid)
    value, proof = view.reveal(g.query)
    disputes.reveal(oid, value, proof)


def test_bisection_on_chain_finds_the_first_differing_record(committed):
    a, oid, _, cheat, honest = committed
    prov, chal = a.d.disputes_client(a.provider.key), a.d.disputes_client(a.validator.key)
    chal.challenge(oid, honest.root)
    rounds, gas = 0, []
    while chal.game(oid).stage_name == "bisecting":
        step(prov, "provider", cheat, oid)
        g = chal.game(oid)
        value, proof = honest.reveal(g.query)
        gas.append(chal.fn.reveal(oid, value, proof).estimate_gas({"from": a.validator.address}))
        chal.reveal(oid, value, proof)
        rounds += 1
    g = chal.game(oid)
    assert g.stage_name == "located" and g.differ == 123 == play(cheat, honest, N).record
    assert rounds <= math.ceil(math.log2(N)) + 1
    assert max(gas) < 250_000  # the first reveal also stores both chain values for phase two
    assert a.client.market.order(oid).state_name == "committed"  # held until the game ends
    with pytest.raises(ChainError, match="the dispute decides"):
        a.advance(700) or a.stranger.market.finalize(oid)


def test_a_provider_that_stops_answering_is_overturned_and_slashed(committed):
    a, oid, bid, cheat, honest = committed
    chal = a.d.disputes_client(a.validator.key)
    client0 = a.client.token.balance_of(a.client.address)
    chal0 = a.validator.token.balance_of(a.validator.address)
    node0 = a.provider.registry.node(a.provider.address)
    chal.challenge(oid, honest.root)
    step(chal, "challenger", honest, oid)  # the challenger reveals; the provider never does
    with pytest.raises(ChainError, match="deadline has not passed"):
        a.stranger.chain.send(a.d.disputes_client(a.stranger.key).fn.timeout(oid))
    a.advance(a.d.move_time + 1)
    a.d.disputes_client(a.stranger.key).timeout(oid)  # anyone may call it
    share = (node0.stake - node0.locked) * 2000 // 10_000
    assert a.client.market.order(oid).state_name == "overturned"
    assert a.client.token.balance_of(a.client.address) == client0 + bid.price  # the price comes back
    assert a.validator.token.balance_of(a.validator.address) == chal0 + challenger_reward(bid.collateral + share)
    node = a.provider.registry.node(a.provider.address)
    assert node.stake == node0.stake - bid.collateral - share and node.locked == 0 and node.reputation == -1
    assert a.client.market.escrow_total() == 0


def test_a_challenger_that_cannot_back_its_claim_loses_its_bond(committed):
    a, oid, bid, cheat, _ = committed
    liar = a.d.disputes_client(a.stranger.key)
    prov = a.d.disputes_client(a.provider.key)
    prov0 = a.provider.token.balance_of(a.provider.address)
    liar0 = a.stranger.token.balance_of(a.stranger.address)
    liar.challenge(oid, b"\7" * 32)  # a root of no trace at all
    step(prov, "provider", cheat, oid)
    value, proof = cheat.reveal(liar.game(oid).query)
    with pytest.raises(ChainError, match="does not match your root"):
        liar.reveal(oid, value, proof)
    a.advance(a.d.move_time + 1)
    liar.timeout(oid)
    bond = liar.game(oid).bond
    assert bond > a.d.dispute_bond  # priced by what the game holds up
    assert a.stranger.token.balance_of(a.stranger.address) == liar0 - bond
    assert a.provider.token.balance_of(a.provider.address) == prov0 + bond_to_provider(bond)
    a.advance(600)
    a.stranger.market.finalize(oid)  # the result stands and the provider is paid
    assert a.client.market.order(oid).state_name == "finalized"


def test_a_challenger_that_agrees_on_the_last_record_loses_at_once(committed):
    a, oid, _, cheat, _ = committed
    odd = TraceView(cheat.records)  # the same chain, except one value in the middle of its tree
    odd.chain[50] = b"\x09" * 32
    odd.tree = merkle.levels(odd.chain)
    odd.root = odd.tree[-1][0]
    chal, prov = a.d.disputes_client(a.validator.key), a.d.disputes_client(a.provider.key)
    chal0 = a.validator.token.balance_of(a.validator.address)
    chal.challenge(oid, odd.root)
    with pytest.raises(ChainError, match="already challenged"):
        a.d.disputes_client(a.stranger.key).challenge(oid, b"\6" * 32)
    with pytest.raises(ChainError, match="only the provider and the challenger"):
        a.d.disputes_client(a.stranger.key).reveal(oid, *cheat.reveal(N - 1))
    step(prov, "provider", cheat, oid)
    step(chal, "challenger", odd, oid)  # the same last chain value: the records all agree
    assert chal.game(oid).stage_name == "settled"
    assert a.validator.token.balance_of(a.validator.address) == chal0 - chal.game(oid).bond
    assert not a.client.market.fn.challenged(oid).call()


def test_bad_challenges_are_refused(committed):
    a, oid, _, cheat, honest = committed
    with pytest.raises(ChainError, match="cannot challenge its own result"):
        a.d.disputes_client(a.provider.key).challenge(oid, honest.root)
    with pytest.raises(ChainError, match="that is the committed trace root"):
        a.d.disputes_client(a.validator.key).challenge(oid, cheat.root)
    a.advance(601)
    with pytest.raises(ChainError, match="window has closed"):
        a.d.disputes_client(a.validator.key).challenge(oid, honest.root)


def test_a_won_game_restarts_the_window_so_a_real_challenger_still_gets_one(committed):
    a, oid, bid, cheat, honest = committed
    sybil = a.d.disputes_client(a.stranger.key)  # the cheater's own second address, shutting the door
    sybil.challenge(oid, b"\x07" * 32)
    a.d.disputes_client(a.provider.key).reveal(oid, *cheat.reveal(N - 1))
    a.advance(a.d.move_time + 1)
    sybil.timeout(oid)  # the provider "wins" against itself
    assert a.client.market.order(oid).committed_at == a.now()  # a fresh window
    a.advance(300)
    chal = a.d.disputes_client(a.validator.key)
    chal.challenge(oid, honest.root)  # still possible
    assert chal.game(oid).challenger == a.validator.address and chal.game(oid).stage_name == "bisecting"
