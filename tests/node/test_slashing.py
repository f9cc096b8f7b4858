"""Cheaters are caught and slashed end to end: six cheating provider daemons (corrupt-op,
wrong-output, lazy, withhold: corrupt-op's cheat, then none of the order's spec, inputs or
trace served once committed; disconnected: a coarse record its own op-level trace cannot end in;
lie-inside: corrupt-op's cheat, then an op-level trace of honest ops ending in its wrong record)
each take a job; a validator daemon re-executes each result (from the
blobs the client pushed to it too), challenges it with
its bond, and plays the dispute game through (bisection, the record opened against the order's
program, the chunk trees, one element judged on-chain by OneStep, or the cheater unable to show
its tensors, or its made-up input record judged against the client's). Every client gets its
payment back, every cheater loses its collateral and a fifth of its free stake to the validator,
which also gets its bond back (or, for lazy, whose served outputs cannot be read, to its client
when the client's claim for the unserved committed outputs comes first): exact balances."""

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from nodenet import TOKEN, Net

from veracity.blobs.transfer import fetch
from veracity.chain.events import EventStream
from veracity.cid import cid_from_digest
from veracity.client.jobs import submit
from veracity.errors import VeracityError
from veracity.verify.sampling import challenger_reward
from veracity.workloads.spec import Verification, load_spec

JOBS = Path(__file__).resolve().parent.parent.parent / "examples" / "jobs"
CHEATS = ("corrupt-op", "wrong-output", "lazy", "withhold", "disconnected", "lie-inside")
STAKE = 1000 * TOKEN  # each provider's registered stake (the daemon's default)


def front_run(net, sybil, provider, stop, got_in):
    """A cheater's sybil: challenges the provider's result the moment it is committed, with a
    bogus root, and then plays no move (it means to lose and shut the window; hole 4)."""
    disputes = net.dep.disputes_client(sybil.key)
    stream = EventStream(disputes.chain, {"Market": net.dep.market}, 0)
    while not stop.is_set():
        for ev in stream.poll():
            if ev.name == "ResultCommitted" and ev.args["provider"].lower() == provider.lower():
                try:
                    disputes.challenge(int(ev.args["order_id"]), b"\7" * 32)
                    got_in.set()
                except VeracityError:  # the validator was first (a loaded machine): nothing to front-run
                    pass
                return
        time.sleep(0.1)


def test_each_cheater_is_caught_by_the_validator_and_slashed(tmp_path):
    net = Net(tmp_path, accounts=15, move_time=8)
    stop = threading.Event()
    try:
        urls = {}
        cheaters = {}
        for b, i in zip(CHEATS, (3, 4, 5, 7, 11, 12)):  # started at once, then waited for below
            cheaters[b] = net.provider(i, ["digits-mlp"], behaviour=b, wait=False)
            urls[b] = net.url
        validator, checks_url = net.validator(8, poll_interval=1.5)
        sybil_in = threading.Event()
        sybil = threading.Thread(target=front_run, args=(net, net.accts[10], cheaters["corrupt-op"].address, stop,
                                                         sybil_in))
        sybil.start()
        dep = net.dep
        _, token, reg, market = dep.clients(dep.accounts[0].key)
        for _ in range(600):
            if all(reg.node(a.address).role == 1 for a in cheaters.values()) and reg.node(validator.address).role == 2:
                break
            time.sleep(0.1)
        clients = {b: net.accts[i] for b, i in zip(CHEATS, (1, 2, 6, 9, 13, 14))}
        before = {b: token.balance_of(c.address) for b, c in clients.items()}
        v_before = token.balance_of(validator.address)
        spec = load_spec(JOBS / "digits-mlp.yaml").model_copy(
            update={"verification": Verification(challenge_window=40)})
        errors = {}

        def run(b):
            try:
                submit(spec, dep, clients[b].key, bid_wait=120, result_timeout=400, only={cheaters[b].address})
            except VeracityError as exc:
                errors[b] = str(exc)

        threads = [threading.Thread(target=run, args=(b,)) for b in CHEATS]
        for t in threads:
            t.start()
        for t in threads:
            t.join(500)
        assert set(errors) == set(CHEATS), (errors, net.logs())
        for b in CHEATS:
            assert ("a dispute found provider" in errors[b] or "withheld its outputs" in errors[b]) \
                and "refunded" in errors[b], errors[b]
        ids = {market.order(i).provider: i for i in range(1, market.fn.order_count().call() + 1)}
        orders = {p: market.order(i) for p, i in ids.items()}
        games = dep.disputes_client(dep.accounts[0].key)
        # a client served unreadable outputs (lazy's) asks for the committed ones on chain; the cheater
        # cannot serve them, and the client's claim may overturn the result before the validator's game
        claimed = {int(e["args"]["order_id"]): e["args"]["asker"]
                   for e in games.outputs().contract.events.ChunkUnserved().get_logs(from_block=0)}
        gained = 0
        for b, acct in cheaters.items():
            order = orders[acct.address]
            assert order.state_name == "overturned", b
            share = (STAKE - order.collateral) * 2000 // 10_000
            node = reg.node(acct.address)
            assert node.stake == STAKE - order.collateral - share and node.locked == 0, b
            reward = challenger_reward(order.collateral + share)  # the other half is burnt
            if ids[acct.address] in claimed:  # the client's claim for unserved outputs came first
                assert claimed[ids[acct.address]] == clients[b].address and b == "lazy", b
                assert token.balance_of(clients[b].address) == before[b] + reward, b
            elif games.game(ids[acct.address]).challenger == clients[b].address:  # the client challenged first:
                assert b == "withhold", b  # its re-run contradicted a trace the provider would not serve
                assert token.balance_of(clients[b].address) == before[b] + reward, b
            else:
                assert token.balance_of(clients[b].address) == before[b], b  # paid, then refunded in full
                gained += reward
        assert token.balance_of(validator.address) == v_before + gained  # and every bond came back
        for _ in range(100):  # the validator records how each game ended
            checks = httpx.get(checks_url, timeout=5).json()
            if len(checks) == len(CHEATS) and all(c["verdict"] == "overturned" for c in checks):
                break
            time.sleep(0.2)
        assert [c["verdict"] for c in checks] == ["overturned"] * len(CHEATS), checks
        spec_cid = cid_from_digest(orders[cheaters["withhold"].address].spec_cid)
        inputs_cid = json.loads(fetch(checks_url.removesuffix("/checks"), spec_cid))["inputs"]["cid"]  # the validator's
        for cid in (spec_cid, inputs_cid):  # the withholder serves none of its order's data, to anyone
            assert httpx.get(f"{urls['withhold']}/blobs/{cid}", timeout=5).status_code == 404
        logs = net.logs()
        assert "called the referee on element" in logs  # corrupt-op and wrong-output: judged by OneStep
        assert "opened step 0 at coarse record 0 (input.pixels)" in logs \
            or ids[cheaters["lazy"].address] in claimed  # lazy: it cannot show the step (or its outputs)
        assert "does not hold your committed record" in logs  # disconnected: its step's trace cannot connect
        assert "the provider's trace could not be read" in logs or \
            games.game(ids[cheaters["withhold"].address]).challenger == clients["withhold"].address  # withhold:
        # challenged without its trace, by the validator or by its client (whose re-run contradicts it)
        # corrupt-op's sybil challenged first and threw its game; the validator waited and challenged after it
        assert "waiting for another challenger's game" in logs or not sybil_in.is_set()
    except AssertionError:
        print(net.logs())
        raise
    finally:
        stop.set()
        net.stop()



def test_an_output_that_is_not_the_committed_traces_is_proven_wrong_by_the_client(tmp_path):
    """A provider that commits the honest trace with a forged output (its root, and the forged
    JSONL served): the client reads the outputs back into integers, finds the output that is not
    its trace record, and proves it on chain in one call: the forger is slashed, the client
    refunded and paid the challenger's share (hole 1 and 2 of docs/security.md)."""
    net = Net(tmp_path, accounts=6)
    try:
        forger = net.provider(3, ["digits-mlp", "minilm"], behaviour="forged-output")
        client = net.accts[1]
        _, token, reg, market = net.dep.clients(client.key)
        for model in ("digits-mlp", "minilm"):
            spec = load_spec(JOBS / f"{model}.yaml").model_copy(update={"verification": Verification(challenge_window=10)})
            before, stake = token.balance_of(client.address), reg.node(forger.address).stake
            with pytest.raises(VeracityError, match="a dispute found .* result wrong"):
                submit(spec, net.dep, client.key, bid_wait=120, result_timeout=400, only={forger.address})
            assert reg.node(forger.address).stake < stake  # slashed
            assert token.balance_of(client.address) > before  # refunded, and paid for the proof
        # a cheater that withholds its trace, with no validator about: the client's own re-run
        # contradicts it, so the client challenges and plays the game through itself (hole 2)
        withholder = net.provider(4, ["digits-mlp"], behaviour="withhold")
        spec = load_spec(JOBS / "digits-mlp.yaml").model_copy(update={"verification": Verification(challenge_window=30)})
        before, stake = token.balance_of(client.address), reg.node(withholder.address).stake
        with pytest.raises(VeracityError, match="a dispute found .* result wrong"):
            submit(spec, net.dep, client.key, bid_wait=120, result_timeout=400, only={withholder.address})
        assert reg.node(withholder.address).stake < stake
        assert token.balance_of(client.address) > before  # refunded, its bond back, and the challenger's share
    finally:
        net.stop()


def test_outputs_asked_for_on_chain_are_served_by_an_honest_provider_and_withheld_ones_slashed(tmp_path):
    """Output data availability end to end (holes 2 and 3 of docs/security.md). A provider that
    computes and commits honestly but serves its output to nobody (``hide-output``): the client
    asks for a sample of the output's chunks on chain instead of just refusing the result, the
    provider does not serve them by the deadline, and the client's claim slashes it and refunds
    the client. An honest provider's daemon serves a chunk a stranger asks of its result at once,
    proven against the committed output root, and is paid as usual."""
    import numpy as np

    from veracity.exact.trace import tensor_chunks
    from veracity.workloads.infer import run_infer_job, served_tensors

    net = Net(tmp_path, accounts=6, move_time=20)
    try:
        hider = net.provider(3, ["digits-mlp"], behaviour="hide-output")
        honest = net.provider(2, ["digits-mlp"])
        client = net.accts[1]
        _, token, reg, market = net.dep.clients(client.key)
        spec = load_spec(JOBS / "digits-mlp.yaml").model_copy(update={"verification": Verification(challenge_window=30)})
        before, stake = token.balance_of(client.address), reg.node(hider.address).stake
        with pytest.raises(VeracityError, match="withheld its outputs"):
            submit(spec, net.dep, client.key, bid_wait=120, result_timeout=400, only={hider.address})
        assert reg.node(hider.address).stake < stake  # slashed
        assert token.balance_of(client.address) > before  # refunded, bonds back, and the challenger's share

        stranger = net.dep.disputes_client(net.accts[5].key).outputs()
        done, errors = [], []
        spec = spec.model_copy(update={"verification": Verification(challenge_window=35)})  # time to ask inside it
        runner = threading.Thread(target=lambda: _submit_into(done, errors, spec, net, client, honest))
        runner.start()
        end = time.monotonic() + 300
        oid = None
        while oid is None and time.monotonic() < end:  # the honest result, once committed
            n = market.fn.order_count().call()
            if n and market.order(n).state_name == "committed" and market.order(n).provider == honest.address:
                oid = n
            time.sleep(0.2)
        assert oid is not None, net.logs()[-3000:]
        stranger.request_chunk(oid, 0, 0)
        while stranger.open_request(oid, 0, 0) is not None and time.monotonic() < end:
            time.sleep(0.2)
        served = stranger.served(oid)
        inputs = Path(spec.inputs.path).read_bytes()
        mine = served_tensors("digits-mlp", inputs, run_infer_job("digits-mlp", inputs).outputs)
        assert served == {(0, 0): bytes(tensor_chunks(np.asarray(mine[0]))[0])}, net.logs()[-3000:]
        runner.join(timeout=300)
        assert not errors and done and done[0].order_id == oid, (errors, net.logs()[-3000:])
        assert market.order(oid).state_name == "finalized"  # served, then paid as usual
    finally:
        net.stop()


def _submit_into(done, errors, spec, net, client, provider):
    try:
        done.append(submit(spec, net.dep, client.key, bid_wait=120, result_timeout=400, only={provider.address}))
    except Exception as exc:  # reported by the test
        errors.append(exc)
