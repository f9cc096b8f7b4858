"""Output data availability on chain (``OutputFaults.request_chunk`` / ``serve_chunk`` /
``claim_unserved``): a provider that withholds what it committed is slashed, not paid; one that
serves keeps its pay and takes the asker's bond; nobody can make an honest provider lose by asking
for what does not exist, and a provider's sybil gains nothing by asking and claiming."""

import hashlib

import numpy as np
import pytest
from test_market import MODEL, SPEC, bid_for, register_provider

from veracity.errors import ChainError
from veracity.exact.trace import outputs_root, tensor_chunks, tensor_digest
from veracity.verify.available import asked_chunks, chunk_counts, serve_args

TOKEN = 10**18
# a committed result of two outputs: 50 rows of 400 int32 (10 chunks of 5 rows), and 10 int8
OUTPUTS = [np.arange(20_000, dtype=np.int32).reshape(50, 400) - 7_000, (np.arange(10) * 13 % 256 - 128).astype(np.int8)]


def committed(a, outputs=OUTPUTS, window=600):
    if a.provider.registry.node(a.provider.address).stake == 0:
        register_provider(a.provider)
    oid = a.client.market.open_order(SPEC, 1, MODEL, 50 * TOKEN, a.now() + 900, window, 500,
                                     hashlib.sha256(b"program").digest(), 84)
    a.client.market.accept_bid(bid_for(a, oid))
    digests = [tensor_digest(t) for t in outputs]
    a.provider.market.commit_result(oid, digests, hashlib.sha256(b"trace").digest(), 84)
    assert a.client.market.order(oid).output_cid == outputs_root(digests)
    return oid


def faults(a, actor):
    return a.d.disputes_client(actor.key).outputs()


def wealth(actor):
    return actor.token.balance_of(actor.address) + actor.registry.node(actor.address).stake


def test_a_served_chunk_is_logged_for_its_asker_and_the_result_then_paid(actors):
    a = actors
    oid = committed(a, window=30)
    client, provider = faults(a, a.client), faults(a, a.provider)
    bond = client.request_bond(oid)
    assert bond == a.d.disputes_client(a.stranger.key).bond_for(oid) // 10  # a tenth of a challenge's
    paid0 = a.provider.token.balance_of(a.provider.address)
    client.request_chunk(oid, 0, 3)
    a.advance(31)  # the window is over, but the chunk is not served: no payment yet
    with pytest.raises(ChainError, match="not served yet"):
        a.stranger.market.finalize(oid)
    wrong = serve_args(OUTPUTS, 0, 4)  # another chunk's bytes, or altered ones, are refused
    with pytest.raises(ChainError, match="not in the output's tensor"):
        provider.serve_chunk(oid, 0, 3, wrong)
    forged = serve_args(OUTPUTS, 0, 3)
    forged = type(forged)(**{**forged.__dict__, "data": bytes([forged.data[0] ^ 1]) + forged.data[1:]})
    with pytest.raises(ChainError, match="not in the output's tensor"):
        provider.serve_chunk(oid, 0, 3, forged)
    with pytest.raises(ChainError, match="claim|deadline"):  # nobody can claim it before its deadline
        faults(a, a.stranger).claim_unserved(oid, 0, 3)
    provider.serve_chunk(oid, 0, 3, serve_args(OUTPUTS, 0, 3))
    assert client.served(oid) == {(0, 3): bytes(tensor_chunks(OUTPUTS[0])[3])}  # the asker reads the bytes
    assert a.provider.token.balance_of(a.provider.address) == paid0 + bond  # the provider takes the bond
    a.stranger.market.finalize(oid)
    assert a.client.market.order(oid).state_name == "finalized"


def test_a_provider_that_withholds_an_asked_chunk_is_slashed_and_the_asker_paid(actors):
    a = actors
    oid = committed(a)
    client = faults(a, a.client)
    stake0, client0 = a.provider.registry.node(a.provider.address).stake, wealth(a.client)
    client.request_chunk(oid, 1, 0)
    assert client.open_request(oid, 1, 0).asker == a.client.address
    a.advance(a.d.move_time + 1)
    with pytest.raises(ChainError, match="deadline has passed"):  # too late to serve now
        faults(a, a.provider).serve_chunk(oid, 1, 0, serve_args(OUTPUTS, 1, 0))
    faults(a, a.stranger).claim_unserved(oid, 1, 0)  # anyone settles it; the asker is paid
    assert a.client.market.order(oid).state_name == "overturned"
    assert a.provider.registry.node(a.provider.address).stake < stake0
    assert wealth(a.client) > client0 + 40 * TOKEN  # price back, bond back, and the challenger's share
    assert client.open_request(oid, 1, 0) is None


def test_asking_for_what_does_not_exist_cannot_make_an_honest_provider_lose(actors):
    a = actors
    oid = committed(a)
    client, helper = faults(a, a.client), faults(a, a.validator)
    for output, chunk in [(2, 0), (0, 10), (1, 1)]:  # no third output; 10 chunks in the first; 1 in the second
        client.request_chunk(oid, output, chunk)
    with pytest.raises(ChainError, match="serve no data"):
        helper.serve_chunk(oid, 0, 10, serve_args(OUTPUTS, 0, 9))  # chunk 9's bytes as a chunk 10
    paid0 = [t.token.balance_of(t.address) for t in (a.validator, a.provider)]
    for output, chunk in [(2, 0), (0, 10), (1, 1)]:  # anyone holding the outputs shows there is none
        helper.serve_chunk(oid, output, chunk, serve_args(OUTPUTS, output, chunk))
    # the bonds go to the provider whoever serves (copying its serve earns nothing)
    assert a.validator.token.balance_of(a.validator.address) == paid0[0]
    assert a.provider.token.balance_of(a.provider.address) == paid0[1] + 3 * client.request_bond(oid)
    assert client.served(oid) == {(2, 0): b"", (0, 10): b"", (1, 1): b""}
    with pytest.raises(ChainError, match="served already"):  # asked once: the answer is in the log
        client.request_chunk(oid, 2, 0)
    a.advance(601)
    a.stranger.market.finalize(oid)  # nothing left asked: paid
    assert a.client.market.order(oid).state_name == "finalized"


def test_who_may_ask_and_when(actors):
    a = actors
    oid = committed(a, window=30)
    with pytest.raises(ChainError, match="its own output"):
        faults(a, a.provider).request_chunk(oid, 0, 0)
    poor = faults(a, a.stranger)
    a.stranger.token.transfer(a.client.address, a.stranger.token.balance_of(a.stranger.address))
    with pytest.raises(ChainError, match="bond"):
        poor.request_chunk(oid, 0, 0)
    faults(a, a.client).request_chunk(oid, 0, 0)
    with pytest.raises(ChainError, match="asked for already"):
        faults(a, a.validator).request_chunk(oid, 0, 0)
    a.advance(31)
    with pytest.raises(ChainError, match="window has closed"):
        faults(a, a.validator).request_chunk(oid, 0, 1)


def test_requests_queue_and_wait_for_a_running_game(actors):
    """A flood of requests cannot outrun a provider that serves one at a time: each is due a
    dispute move after the one before it. While a game runs nobody may ask (a sybil's request
    could otherwise be claimed in the middle of an honest challenger's game, for its reward)."""
    a = actors
    oid, oid2 = committed(a), committed(a)
    client = faults(a, a.client)  # (its own nonce: the actors' client account sends nothing more)
    client.request_chunk(oid, 0, 0)
    client.request_chunk(oid, 0, 1)
    first, second = client.open_request(oid, 0, 0), client.open_request(oid, 0, 1)
    assert second.deadline == first.deadline + a.d.move_time
    a.d.disputes_client(a.validator.key).challenge(oid2, b"\7" * 32)
    with pytest.raises(ChainError, match="game over the result is running"):
        client.request_chunk(oid2, 0, 0)


def test_a_providers_sybil_gains_nothing_by_asking_and_claiming(actors):
    """The provider's sybil asks for two chunks and the provider withholds them, to collect the
    challenger's share of its own slash: half of it is burnt, so the ring loses; the second
    claim, on a result already overturned, only returns its bond."""
    a = actors
    oid = committed(a)
    ring0 = wealth(a.provider) + wealth(a.stranger)
    sybil = faults(a, a.stranger)
    sybil.request_chunk(oid, 0, 0)
    sybil.request_chunk(oid, 0, 1)
    a.advance(a.d.move_time + 1)
    sybil.claim_unserved(oid, 0, 0)
    assert a.client.market.order(oid).state_name == "overturned"
    sybil.claim_unserved(oid, 0, 1)  # the bond back, nothing more
    assert sybil.open_request(oid, 0, 1) is None
    assert wealth(a.provider) + wealth(a.stranger) < ring0 - 50 * TOKEN


def test_the_sample_and_the_proofs_follow_the_program():
    from veracity.exact.program import OpDesc

    descs = [OpDesc(kind=1, step=0, op="x", dtype=4, dims=[50, 400], output=1, outputs=2),
             OpDesc(kind=1, step=0, op="y", dtype=1, dims=[10], output=2, outputs=2)]
    counts = chunk_counts(descs)
    assert counts == [10, 1]
    picks = asked_chunks(counts, 4)
    assert len(set(picks)) == 4 and all(c < counts[o] for o, c in picks)
    assert sorted(asked_chunks(counts, 20)) == [(0, c) for c in range(10)] + [(1, 0)]
