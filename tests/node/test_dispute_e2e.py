"""A provider daemon defends its committed result in a dispute: a challenger that cannot back its
claim loses its bond to the provider, and the client's job settles as usual. It moves in time
while its job loop is busy building the programs of heavy (legal) specs (hole 12)."""

import json
import re
import sqlite3
import threading
import time
from pathlib import Path

import httpx
from nodenet import TOKEN, Net

from veracity.blobs.transfer import push
from veracity.cid import cid_of, digest_of
from veracity.client.jobs import submit
from veracity.verify.sampling import bond_to_provider
from veracity.workloads.planner import MAX_PROGRAM_RECORDS
from veracity.workloads.spec import Verification, load_spec

JOBS = Path(__file__).resolve().parent.parent.parent / "examples" / "jobs"
MOVE_TIME = 6


def open_heavy_orders(net, key, n):
    """``n`` orders whose legal spec costs the provider seconds each to check: 32,000 sentences for
    MiniLM, 1,000 batches, a program of 94,000 records to build and hash (the bound is 100,000;
    1,000 outputs, within the 1,024 a commitment holds). The order claims a program the provider
    can only refute by building its own."""
    inputs = "".join(json.dumps({"text": "a"}) + "\n" for _ in range(32_000)).encode()
    spec = load_spec(JOBS / "minilm.yaml")
    spec = spec.model_copy(update={"inputs": spec.inputs.model_copy(update={"path": None, "cid": cid_of(inputs)})})
    spec_bytes = spec.model_dump_json(exclude_none=True).encode()
    push(net.url, inputs), push(net.url, spec_bytes)
    chain, _, _, market = net.dep.clients(key)
    return [market.open_order(digest_of(cid_of(spec_bytes)), spec.kind_code, spec.model_id, TOKEN, chain.now() + 600,
                              60, 0, b"\x01" * 32, MAX_PROGRAM_RECORDS) for _ in range(n)]


def test_a_lying_challenger_loses_its_bond_to_the_provider_that_defends(tmp_path):
    net = Net(tmp_path, accounts=6, move_time=MOVE_TIME)
    try:
        p = net.provider(3, ["digits-mlp", "minilm"])
        dep, client, liar = net.dep, net.accts[1], net.accts[4]
        _, token, _, market = dep.clients(client.key)
        before_p, before_liar = token.balance_of(p.address), token.balance_of(liar.address)
        spec = load_spec(JOBS / "digits-mlp.yaml").model_copy(update={"verification": Verification(challenge_window=20)})
        result = {}
        job = threading.Thread(target=lambda: result.update(out=submit(spec, dep, client.key, bid_wait=120,
                                                                       result_timeout=300)))
        job.start()
        for _ in range(600):  # wait for the commitment
            if market.fn.order_count().call() and market.order(1).state_name == "committed":
                break
            time.sleep(0.1)
        heavy = open_heavy_orders(net, net.accts[2].key, 2)  # the provider's job loop checks them one by one
        disputes = dep.disputes_client(liar.key)
        bond = disputes.bond_for(1)
        disputes.challenge(1, b"\x07" * 32)  # claims another trace, but has none behind that root
        for _ in range(100):  # the provider daemon answers the opening query on its own
            if disputes.game(1).revealed & 1:
                break
            time.sleep(0.2)
        assert disputes.game(1).revealed == 1, "the provider did not defend its result"
        pending = httpx.get(f"{net.url}/bids/{heavy[-1]}", timeout=5)  # its job loop is still checking specs
        assert pending.status_code == 404 and "no decision yet" in pending.text, pending.text
        for _ in range(200):  # the liar never moves: the provider daemon calls timeout itself
            if disputes.game(1).stage_name == "settled":
                break
            time.sleep(0.2)
        assert disputes.game(1).stage_name == "settled"
        job.join(300)
        out = result["out"]
        fee = out.price * dep.fee_bps // 10_000
        assert token.balance_of(p.address) == before_p + out.price - fee + bond_to_provider(bond)  # half is burnt
        assert token.balance_of(liar.address) == before_liar - bond
        assert market.order(1).state_name == "finalized"
        db = sqlite3.connect(tmp_path / "p3" / "state.db")
        for _ in range(600):  # the daemon follows (once its job loop is done with the heavy specs): settled
            status = db.execute("SELECT status FROM jobs WHERE order_id = 1").fetchone()[0]
            if status == "settled":
                break
            time.sleep(0.1)
        assert status == "settled"
        log = (tmp_path / "p3.log").read_text()
        assert "dispute, revealed the chain value of record" in log
        for oid in heavy:  # each heavy spec was checked in full, and refused on its (made-up) program
            assert re.search(rf"order {oid}: no bid, computes another program for these inputs \(\d+ records", log)
    finally:
        net.stop()
