"""The attacks of the soundness review, replayed on a real anvil node against the shipped
contracts: each cheating party really tries, and now loses or is refused with a clear reason.
The numbers in the test names are the holes' numbers in docs/security.md."""

import hashlib

import pytest
from test_disputes import N, step, trace
from test_market import (
    MODEL,
    PROGRAM,
    SPEC,
    TOKEN,
    TRACE_LEN,
    bid_for,
    open_lease,
    open_order,
    register_provider,
    window_sig,
)

from veracity.chain.client import PROVIDER
from veracity.errors import ChainError
from veracity.verify.sampling import bond_to_provider, challenger_reward


def wealth(a, actor):
    """Balance plus stake: what an account (or a sybil ring of them) owns."""
    return actor.token.balance_of(actor.address) + actor.registry.node(actor.address).stake


def cheated(a, collateral=200 * TOKEN):
    """An order whose provider committed a wrong trace (the honest one differs from record 123)."""
    register_provider(a.provider)
    oid = open_order(a, window=600, length=N)
    bid = bid_for(a, oid, collateral=collateral)
    a.client.market.accept_bid(bid)
    cheat, honest = trace(changed={123}), trace()
    a.provider.market.commit_result(oid, b"\1" * 32, cheat.root, N)
    return oid, bid, cheat, honest


def test_4_a_cheater_that_challenges_itself_through_a_sybil_loses_half_the_slash(actors):
    a = actors
    oid, bid, cheat, honest = cheated(a)
    ring0 = wealth(a, a.provider) + wealth(a, a.stranger)  # the stranger is the provider's sybil
    supply0 = a.stranger.token.total_supply()
    sybil = a.d.disputes_client(a.stranger.key)
    sybil.challenge(oid, honest.root)  # front-runs the honest validator, and plays to win the slash
    step(sybil, "challenger", honest, oid)
    a.advance(a.d.move_time + 1)
    sybil.timeout(oid)
    assert a.client.market.order(oid).state_name == "overturned"  # the wrong answer is not paid
    burnt = supply0 - a.stranger.token.total_supply()
    assert burnt > 0 and wealth(a, a.provider) + wealth(a, a.stranger) == ring0 - burnt  # the ring lost


def test_4_a_sybil_that_challenges_and_throws_the_game_only_delays_at_a_cost(actors):
    a = actors
    oid, bid, cheat, honest = cheated(a)
    ring0 = wealth(a, a.provider) + wealth(a, a.stranger)
    sybil, prov = a.d.disputes_client(a.stranger.key), a.d.disputes_client(a.provider.key)
    sybil.challenge(oid, b"\7" * 32)  # a bogus root: it means to lose and shut the window
    bond = sybil.game(oid).bond
    step(prov, "provider", cheat, oid)
    a.advance(a.d.move_time + 1)
    sybil.timeout(oid)
    assert wealth(a, a.provider) + wealth(a, a.stranger) == ring0 - (bond - bond_to_provider(bond))
    validator = a.d.disputes_client(a.validator.key)
    validator.challenge(oid, honest.root)  # the window restarted: the honest challenge still gets in
    step(validator, "challenger", honest, oid)
    a.advance(a.d.move_time + 1)
    validator.timeout(oid)
    assert a.client.market.order(oid).state_name == "overturned"


def test_5_no_zero_collateral_no_unbonding_stake_and_no_withdrawal_of_what_a_dispute_holds(actors):
    a = actors
    register_provider(a.provider)
    oid = open_order(a, window=86400, length=N)
    with pytest.raises(ChainError, match="collateral is below the minimum share of its price"):
        a.client.market.accept_bid(bid_for(a, oid, price=40 * TOKEN, collateral=0))
    a.provider.registry.request_unbond(901 * TOKEN)  # stake mostly unbonding: below the minimum bonded
    with pytest.raises(ChainError, match="bonded stake .* is below the minimum stake"):
        a.client.market.accept_bid(bid_for(a, oid, collateral=4 * TOKEN))
    a.provider2.registry.register(PROVIDER, 1000 * TOKEN, "cpu", 24, [MODEL], TOKEN, "http://x")
    bid = bid_for(a, oid, collateral=100 * TOKEN, provider=a.provider2)
    a.client.market.accept_bid(bid)
    cheat, honest = trace(changed={5}), trace()
    a.provider2.market.commit_result(oid, b"\1" * 32, cheat.root, N)
    a.provider2.registry.request_unbond(900 * TOKEN)  # everything free starts unbonding: it cheated
    a.advance(3601)  # past the unbonding delay, inside the (one-day) challenge window
    validator = a.d.disputes_client(a.validator.key)
    validator.challenge(oid, honest.root)
    node = a.provider2.registry.node(a.provider2.address)
    assert node.locked == 100 * TOKEN + 180 * TOKEN and node.unbonding == 720 * TOKEN  # the share is held
    a.provider2.registry.withdraw()  # while the game runs only what no lease or dispute holds leaves
    step(validator, "challenger", honest, oid)
    a.advance(a.d.move_time + 1)
    chal0 = a.validator.token.balance_of(a.validator.address)
    validator.timeout(oid)
    assert a.validator.token.balance_of(a.validator.address) == chal0 + validator.game(oid).bond + \
        challenger_reward(280 * TOKEN)
    assert a.provider2.registry.node(a.provider2.address).stake == 0


def test_9_orders_and_windows_without_a_program_or_the_time_to_run_are_refused(actors):
    a = actors
    register_provider(a.provider)
    with pytest.raises(ChainError, match="needs its program"):
        a.client.market.open_order(SPEC, 1, MODEL, TOKEN, a.now() + 600, 60, 0, PROGRAM, 0)
    lease = open_lease(a, deadline_in=400)
    a.client.market.accept_bid(bid_for(a, lease, run_time=300))
    with pytest.raises(ChainError, match="needs its program"):
        a.client.market.post_window(lease, SPEC, PROGRAM, 0, window_sig(a, lease, SPEC, PROGRAM, 0))
    a.advance(120)  # 280 s left: less than the 300 s the provider said it needs
    with pytest.raises(ChainError, match="too close to the deadline"):
        a.client.market.post_window(lease, SPEC, PROGRAM, 7, window_sig(a, lease, SPEC, PROGRAM, 7))


def test_12_programs_are_bounded_so_no_dispute_move_demands_unbounded_preparation(actors):
    a = actors
    with pytest.raises(ChainError, match="more than 100000 records"):
        a.client.market.open_order(SPEC, 1, MODEL, TOKEN, a.now() + 600, 60, 0, PROGRAM, 100_001)
    assert open_order(a, length=100_000)


def test_8_a_window_its_provider_did_not_sign_is_refused(actors):
    a = actors
    register_provider(a.provider)
    lease = open_lease(a)
    a.client.market.accept_bid(bid_for(a, lease))
    own = window_sig(a, lease, SPEC, b"\6" * 32, 7, signer=a.client)  # the client's own program
    with pytest.raises(ChainError, match="not signed by the lease's provider"):
        a.client.market.post_window(lease, SPEC, b"\6" * 32, 7, own)
    signed = window_sig(a, lease, SPEC, PROGRAM, 7)  # signed for another program
    with pytest.raises(ChainError, match="not signed by the lease's provider"):
        a.client.market.post_window(lease, SPEC, b"\6" * 32, 7, signed)


def test_10_a_bid_accepted_too_late_to_run_is_refused(actors):
    a = actors
    register_provider(a.provider)
    oid = open_order(a, deadline_in=600)
    bid = bid_for(a, oid, run_time=500, expiry=a.now() + 590)
    a.advance(120)  # 480 s left, the provider needs 500
    with pytest.raises(ChainError, match="too late to accept"):
        a.client.market.accept_bid(bid)
    assert a.provider.registry.node(a.provider.address).locked == 0


def test_11_no_endless_windows_or_deadlines(actors):
    a = actors
    with pytest.raises(ChainError, match="challenge window is longer than one day"):
        a.client.market.open_order(SPEC, 1, MODEL, TOKEN, a.now() + 600, 2**256 - 1, 0, PROGRAM, TRACE_LEN)
    with pytest.raises(ChainError, match="more than 7 days away"):
        a.client.market.open_order(bytes(32), 1, MODEL, TOKEN, a.now() + 10 * 365 * 86400, 60)


def test_13_a_bond_is_priced_by_what_the_game_holds_up_and_pays_the_delay(actors):
    a = actors
    oid, bid, cheat, honest = cheated(a, collateral=400 * TOKEN)
    disputes = a.d.disputes_client(a.stranger.key)
    bond = disputes.bond_for(oid)
    rounds = N.bit_length() + 72  # the coarse bisection, then at most 72 rounds below it (Disputes.INSIDE_ROUNDS)
    assert bond == a.d.dispute_bond + (bid.price + bid.collateral) * rounds * 10 // 10_000
    prov0 = a.provider.token.balance_of(a.provider.address)
    for _ in range(2):  # bogus challenges: each delays the provider, and each pays it for that
        disputes.challenge(oid, b"\5" * 32)
        a.advance(a.d.move_time + 1)
        disputes.timeout(oid)
    assert a.provider.token.balance_of(a.provider.address) == prov0 + 2 * bond_to_provider(bond)
    assert a.provider.registry.free_stake(a.provider.address) == 600 * TOKEN  # only collateral was held


def test_14_the_fee_pool_is_paid_to_the_treasury(actors):
    a = actors
    register_provider(a.provider)
    oid = open_order(a)
    a.client.market.accept_bid(bid_for(a, oid))
    a.provider.market.commit_result(oid, b"\1" * 32, b"\2" * 32, TRACE_LEN)
    a.advance(61)
    a.stranger.market.finalize(oid)
    fee = a.stranger.market.fee_pool()
    treasury = a.stranger.market.treasury()
    before = a.stranger.token.balance_of(treasury)
    a.stranger.market.pay_fees()  # anyone may
    assert a.stranger.token.balance_of(treasury) == before + fee > before and a.stranger.market.fee_pool() == 0
    with pytest.raises(ChainError, match="fee pool is empty"):
        a.stranger.market.pay_fees()
    with pytest.raises(ChainError, match="owner"):
        a.stranger.chain.send(a.stranger.market.fn.set_treasury(a.stranger.address))


def test_16_nobody_can_mint_on_a_production_token(actors):
    a = actors
    from veracity.chain.client import TokenClient

    token = TokenClient(a.deployer.chain, a.deployer.chain.deploy("Token", 1000 * TOKEN, False))
    names = {f["name"] for f in token.contract.abi if f.get("type") == "function"}
    assert "mint" not in names and "set_minter" not in names and not token.fn.is_minter(a.deployer.address).call()
    selector = a.deployer.chain.w3.keccak(text="mint(address,uint256)")[:4]
    data = selector + bytes(12) + bytes.fromhex(a.deployer.address[2:]) + (10**30).to_bytes(32, "big")
    with pytest.raises(Exception):
        a.deployer.chain.w3.eth.call({"from": a.deployer.address, "to": token.address, "data": data})
    with pytest.raises(ChainError, match="faucet exists only on devnet"):
        token.faucet(1)
    assert token.total_supply() == 1000 * TOKEN


def test_18_dust_orders_earn_no_reputation(actors):
    a = actors
    register_provider(a.provider)
    for price in (TOKEN // 10, TOKEN):
        oid = open_order(a, max_price=price)
        a.client.market.accept_bid(bid_for(a, oid, price=price, collateral=price))
        a.provider.market.commit_result(oid, b"\1" * 32, b"\2" * 32, TRACE_LEN)
        a.advance(61)
        a.stranger.market.finalize(oid)
    assert a.provider.registry.node(a.provider.address).reputation == 1  # the 1 VRC order only


def oracle_request(a, payment=5 * TOKEN):
    """An Oracle request made by an account (any caller may be the consumer)."""
    oracle = a.client.chain.contract("Oracle", a.d.oracle).functions
    a.client.token.approve(a.d.oracle, payment)
    a.client.chain.send(oracle.request("digits-mlp", b'{"pixels": [0]}', a.client.address, payment, PROGRAM, TRACE_LEN))
    return a.client.market.fn.order_count().call()


def test_7_an_oracle_result_is_paid_only_on_delivery_and_an_undeliverable_one_is_voided(actors):
    import numpy as np

    from veracity.exact.outputs import encode_outputs
    from veracity.exact.trace import tensor_digest

    a = actors
    register_provider(a.provider)
    rid = oracle_request(a)
    bid = bid_for(a, rid, price=5 * TOKEN, collateral=TOKEN)
    a.provider.chain.send(a.provider.chain.contract("Oracle", a.d.oracle).functions.accept(
        rid, bid.price, bid.collateral, bid.expiry, bid.run_time, bytes.fromhex(bid.signature[2:])))
    big = np.arange(1100, dtype=np.int32).reshape(1, 1100)  # its canonical output blob: 4,414 bytes
    assert len(encode_outputs([big])) > 4096
    a.provider.market.commit_result(rid, [tensor_digest(big)], b"\2" * 32, TRACE_LEN)
    a.advance(a.client.market.order(rid).challenge_window + 1)
    with pytest.raises(ChainError, match="pays on delivery"):  # the provider cannot pay itself
        a.provider.market.finalize(rid)
    oracle = a.d.oracle_client(a.stranger.key)
    with pytest.raises(ChainError, match="can still be delivered"):
        oracle.cancel(rid)
    a.advance(3601)  # its output (4,414 bytes) can never be delivered through fulfil
    consumer0, stake0 = a.client.token.balance_of(a.client.address), a.provider.registry.node(a.provider.address).stake
    oracle.cancel(rid)
    assert a.client.token.balance_of(a.client.address) == consumer0 + bid.price + bid.collateral
    assert a.provider.registry.node(a.provider.address).stake == stake0 - bid.collateral
    assert a.client.market.order(rid).state_name == "refunded"


def test_7_fulfil_delivers_only_the_committed_output_blob(actors):
    """The provider commits an output root; fulfil parses the blob it is given, recomputes the
    root on chain and calls the consumer back only with the committed output's blob."""
    from pathlib import Path

    import numpy as np
    from web3.logs import DISCARD

    from veracity.exact.outputs import blob_root, encode_outputs
    from veracity.exact.trace import tensor_digest

    a = actors
    register_provider(a.provider)
    labeler_path = str(Path(__file__).resolve().parents[2] / "examples" / "contracts" / "DigitLabeler.vy")
    labeler = a.client.chain.contract(labeler_path, a.client.chain.deploy(labeler_path, a.d.token, a.d.oracle))
    a.client.token.approve(labeler.address, 5 * TOKEN)
    receipt = a.client.chain.send(labeler.functions.label(b'{"pixels": [0]}', 5 * TOKEN, PROGRAM, TRACE_LEN))
    (ev,) = a.client.chain.contract("Oracle", a.d.oracle).events.Requested().process_receipt(receipt, errors=DISCARD)
    rid = ev["args"]["request_id"]
    bid = bid_for(a, rid, price=5 * TOKEN, collateral=TOKEN)
    a.provider.chain.send(a.provider.chain.contract("Oracle", a.d.oracle).functions.accept(
        rid, bid.price, bid.collateral, bid.expiry, bid.run_time, bytes.fromhex(bid.signature[2:])))
    logits = np.array([[-900, 40, 7, 4095, -3, 4095, 0, 12, -1, 2]], dtype=np.int32)  # a tie: the lower index wins
    right = encode_outputs([logits])
    assert len(right) == 6 + 8 + 40
    a.provider.market.commit_result(rid, [tensor_digest(logits)], b"\2" * 32, TRACE_LEN)
    assert a.client.market.order(rid).output_cid == blob_root(right)  # the root the chain computed
    oracle = a.d.oracle_client(a.stranger.key)
    with pytest.raises(ChainError):  # not while its challenge window is open
        oracle.fulfil(rid, right)
    a.advance(a.client.market.order(rid).challenge_window + 1)
    other = logits.copy()
    other[0, 0] = 5000  # another answer, well formed
    refused = {
        "that is not the committed output": [encode_outputs([other]), encode_outputs([logits.astype(np.int16)]),
                                             encode_outputs([logits.reshape(10)]), encode_outputs([logits, logits])],
        "ends inside a tensor header": [right + b"\0", right + b"VXT2"],
        "ends inside a tensor's data": [right[:-1]],
        "ends inside a tensor's dimensions": [right[:10]],
        "must start with VXT2": [b"VXT3" + right[4:]],
        "unknown dtype code": [right[:4] + b"\x06" + right[5:]],
        "1 to 4 dimensions": [right[:5] + b"\x00" + right[6:]],
        "dimension of 0": [right[:6] + bytes(4) + right[10:]],
        "holds no tensor": [b""],
    }
    for reason, blobs in refused.items():
        for blob in blobs:
            with pytest.raises(ChainError, match=reason):
                oracle.fulfil(rid, blob)
    assert not labeler.functions.labelled(rid).call()
    prov0 = a.provider.token.balance_of(a.provider.address)
    oracle.fulfil(rid, right)
    assert labeler.functions.labelled(rid).call() and labeler.functions.digit(rid).call() == 3
    order = a.client.market.order(rid)
    assert order.state_name == "finalized"
    assert a.provider.token.balance_of(a.provider.address) == prov0 + order.price - order.price * a.d.fee_bps // 10_000
    with pytest.raises(ChainError, match="not awaiting a result"):  # delivered once
        oracle.fulfil(rid, right)


def mlp_result():
    """A real digits-MLP job on two images: its program (outputs marked) and honest trace."""
    import numpy as np

    from veracity.exact.dryrun import build
    from veracity.exact.program import output_records, program_root
    from veracity.models.registry import loaded
    from veracity.workloads.infer import infer

    m = loaded("digits-mlp")
    items = [np.arange(64) % 17, (np.arange(64) * 5) % 17, (np.arange(64) * 3) % 17]
    program = build(m, items, batch_size=1)  # one output record per image
    result = infer(m, items, backend="numpy", batch_size=1, coarse=False)  # a single-level order: every record
    return program, program_root(program), result.records, output_records(program)


def committed_with(a, output_digests, records, root, length):
    from veracity.exact.trace import outputs_root, records_root

    if a.provider.registry.node(a.provider.address).stake == 0:
        register_provider(a.provider)
    oid = a.client.market.open_order(SPEC, 1, MODEL, 50 * TOKEN, a.now() + 600, 600, 500, root, length)
    a.client.market.accept_bid(bid_for(a, oid))
    a.provider.market.commit_result(oid, output_digests, records_root(records), len(records))
    assert a.client.market.order(oid).output_cid == outputs_root(output_digests)  # computed on chain
    return oid


def test_1_an_output_that_is_not_the_traces_is_overturned_in_one_call(actors):
    """The provider commits the honest trace with a forged output (one output's digest changed,
    or an output dropped): anyone holding the trace and the served outputs proves it at once."""
    from veracity.verify.outputs import find_fault

    a = actors
    program, root, records, outs = mlp_result()
    honest = [records[i].digest for i in outs]
    assert find_fault(program, records, honest) is None  # nothing to prove when honest
    forged = honest[:1] + [hashlib.sha256(b"a forged answer").digest()] + honest[2:]
    oid = committed_with(a, forged, records, root, len(program))
    prover = a.d.disputes_client(a.stranger.key)
    with pytest.raises(ChainError, match="not the record's digest"):  # a made-up trace record is refused
        bad = find_fault(program, records, forged)
        prover.prove_output_fault(oid, type(bad)(**{**bad.__dict__, "digest": forged[1]}))
    sybil = a.d.disputes_client(a.validator.key)  # the cheater's sybil starts an idle game to hold proofs off
    held0 = sybil.token.balance_of(a.validator.address)
    sybil.challenge(oid, b"\7" * 32)
    gain0 = wealth(a, a.stranger)
    prover.prove_output_fault(oid, find_fault(program, records, forged))
    assert a.client.market.order(oid).state_name == "overturned"  # the wrong answer is not paid
    assert sybil.game(oid).stage_name == "settled" and sybil.token.balance_of(a.validator.address) == held0
    assert a.client.market.committed_outputs(oid) == forged  # the digests, from the Market's own event
    assert "output 1 is not record" in find_fault(program, records, forged).reason
    assert wealth(a, a.stranger) > gain0  # and the prover takes the challenger's share of the slash
    dropped = honest[:-1]
    oid2 = committed_with(a, dropped, records, root, len(program))
    fault = find_fault(program, records, dropped)
    assert fault.reason == f"the output root holds {len(dropped)} outputs, the program {len(honest)}"
    prover.prove_output_fault(oid2, fault)
    assert a.client.market.order(oid2).state_name == "overturned"


def test_1_an_honest_output_cannot_be_proven_wrong(actors):
    from dataclasses import replace

    from veracity.exact.trace import outputs_tree
    from veracity.verify.outputs import OutputFault, find_fault

    a = actors
    program, root, records, outs = mlp_result()
    honest = [records[i].digest for i in outs]
    oid = committed_with(a, honest, records, root, len(program))
    prover = a.d.disputes_client(a.stranger.key)
    forged = [hashlib.sha256(b"x").digest()] + honest[1:]
    lie = find_fault(program, records, forged)  # a fault against another root
    with pytest.raises(ChainError, match="not the committed output root"):
        prover.prove_output_fault(oid, lie)
    true_leaf = OutputFault(**{**lie.__dict__, "tree": outputs_tree(honest),
                               "leaf": honest[0]})
    with pytest.raises(ChainError, match="no fault"):
        prover.prove_output_fault(oid, true_leaf)
    not_output = replace(lie, index=0, desc=program[0])
    with pytest.raises(ChainError):
        prover.prove_output_fault(oid, not_output)
    assert a.client.market.order(oid).state_name == "committed"
