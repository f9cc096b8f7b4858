"""A provider daemon defends its committed result in a dispute: a challenger that cannot back its
claim loses its bond to the provider, and the client's job settles as usual."""

import sqlite3
import threading
import time
from pathlib import Path

from veracity.node.client import submit
from veracity.verify.sampling import bond_to_provider
from veracity.workloads.spec import Verification, load_spec

from .conftest import Net

JOBS = Path(__file__).resolve().parent.parent.parent / "examples" / "jobs"
MOVE_TIME = 6


def test_a_lying_challenger_loses_its_bond_to_the_provider_that_defends(tmp_path):
    net = Net(tmp_path, accounts=6, move_time=MOVE_TIME)
    try:
        p = net.provider(3, ["digits-mlp"])
        dep, client, liar = net.dep, net.accts[1], net.accts[4]
        _, token, _, market = dep.clients(client.key)
        before_p, before_liar = token.balance_of(p.address), token.balance_of(liar.address)
        spec = load_spec(JOBS / "digits-mlp.yaml").model_copy(update={"verification": Verification(challenge_window=20)})
        result = {}
        job = threading.Thread(target=lambda: result.update(out=submit(spec, dep, client.key, bid_wait=20,
                                                                       result_timeout=300)))
        job.start()
        for _ in range(600):  # wait for the commitment
            if market.fn.order_count().call() and market.order(1).state_name == "committed":
                break
            time.sleep(0.1)
        disputes = dep.disputes_client(liar.key)
        bond = disputes.bond_for(1)
        disputes.challenge(1, b"\x07" * 32)  # claims another trace, but has none behind that root
        for _ in range(100):  # the provider daemon answers the opening query on its own
            if disputes.game(1).revealed & 1:
                break
            time.sleep(0.2)
        assert disputes.game(1).revealed == 1, "the provider did not defend its result"
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
        for _ in range(100):  # the daemon follows: challenged, committed again, settled
            status = sqlite3.connect(tmp_path / "p3" / "state.db").execute("SELECT status FROM jobs").fetchone()[0]
            if status == "settled":
                break
            time.sleep(0.1)
        assert status == "settled"
        assert "dispute, revealed the chain value of record" in (tmp_path / "p3.log").read_text()
    finally:
        net.stop()
