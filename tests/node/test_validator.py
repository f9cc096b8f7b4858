"""A validator re-executes committed results: an honest provider matches, a cheater does not."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from nodenet import TOKEN, Net

from veracity.chain.anvil import Anvil, free_port
from veracity.chain.devnet import deploy, dev_accounts
from veracity.client.jobs import submit
from veracity.errors import VeracityError
from veracity.node.validator import sampled
from veracity.workloads.spec import Verification, load_spec

JOBS = Path(__file__).resolve().parent.parent.parent / "examples" / "jobs"


def start(module, cfg, path):
    path.write_text(json.dumps(cfg))
    return subprocess.Popen([sys.executable, "-m", "veracity.cli", module.rsplit(".", 1)[1], "run", "--config", str(path)])


@pytest.mark.parametrize("behaviour,verdict,detail", [
    ("honest", "match", None),
    # the final output altered, and committed with the trace that ends in it
    ("wrong-output", "mismatch", r"trace root; the traces first differ at record 3 \(step 3, op layer\.2\.fc\)"),
    # one op altered half-way: the label may survive it, the trace does not, and it names the op
    ("corrupt-op", "mismatch", r"trace root; the traces first differ at record 2 \(step 2, op layer\.1\.relu\)"),
    ("lazy", "mismatch", "trace root; the traces first differ at record 0 "),
])
def test_validator_checks_a_committed_result(tmp_path, behaviour, verdict, detail):
    node = Anvil(accounts=6, block_time=1)
    procs = []
    try:
        accts = dev_accounts(6)
        dep = deploy(node.rpc_url, accts[0], accts, move_time=20)  # the lazy case's asks for outputs expire a move after
        dep_file = tmp_path / "deployment.json"
        dep.write(dep_file)
        vport = free_port()
        procs.append(start("veracity.node.provider", {
            "deployment": str(dep_file), "key": accts[3].key, "home": str(tmp_path / "p"), "port": free_port(),
            "behaviour": behaviour, "policy": {"models": ["digits-mlp"], "price_floor": 10**17}}, tmp_path / "p.json"))
        procs.append(start("veracity.node.validator", {
            "deployment": str(dep_file), "key": accts[5].key, "home": str(tmp_path / "v"), "port": vport,
            "rate": 1.0, "challenge": False}, tmp_path / "v.json"))  # checks only (disputes: test_slashing)
        _, _, reg, _ = dep.clients(accts[0].key)
        for _ in range(300):
            if reg.node(accts[3].address).role == 1 and reg.node(accts[5].address).role == 2:
                break
            time.sleep(0.1)
        spec = load_spec(JOBS / "digits-mlp.yaml")
        # a lazy provider's client asks for the committed outputs while the result can be challenged: a
        # window that a busy machine's client outlasts would leave it nothing to do
        window = 30 if behaviour == "lazy" else 2
        spec = spec.model_copy(update={"verification": Verification(challenge_window=window)})
        try:
            submit(spec, dep, accts[1].key, bid_wait=120, result_timeout=400)
        except VeracityError as exc:  # a lazy provider serves outputs that are not even its committed ones:
            # the client asks for the committed ones on chain, and the lazy provider, which has none, is slashed
            assert behaviour == "lazy" and "withheld its outputs" in str(exc) and "refunded" in str(exc), exc
        else:
            assert behaviour != "lazy"
        checks = []
        for _ in range(600):
            checks = httpx.get(f"http://127.0.0.1:{vport}/checks", timeout=5).json()
            if checks:
                break
            time.sleep(0.1)
        assert checks and checks[0]["order_id"] == 1
        assert checks[0]["verdict"] == verdict, checks
        if detail:
            assert re.search(detail, checks[0]["detail"]), checks
    finally:
        for p in procs:
            p.kill()
        node.stop()


def test_sampling_is_deterministic_and_follows_the_rate():
    draws = [sampled("0xabc", i, 0.1) for i in range(5000)]
    assert draws == [sampled("0xABC", i, 0.1) for i in range(5000)]
    assert 0.08 < sum(draws) / len(draws) < 0.12
    assert not any(sampled("0xabc", i, 0.0) for i in range(100)) and all(sampled("0xabc", i, 1.0) for i in range(100))


def test_a_validator_does_not_bet_its_bond_on_a_program_it_cannot_answer_for(tmp_path):
    """A provider and its own client post a single-level program (every record) for an honest job
    and commit its full trace: the validator's coarse re-run cannot match it, and a game over it
    would stall at the first query this validator's trace cannot answer, losing its bond to them.
    The validator records the mismatch and does not challenge."""
    from veracity.blobs.transfer import push
    from veracity.cid import cid_of, digest_of
    from veracity.exact.program import program_root
    from veracity.exact.trace import decode_records
    from veracity.market.bids import Bid, sign_bid
    from veracity.workloads.infer import job_program, run_infer_job
    from veracity.workloads.jobs import infer_job

    net = Net(tmp_path, accounts=6)
    try:
        validator, checks_url = net.validator(5, rate=1.0)
        client, prov = net.accts[1], net.accts[3]
        chain, token, reg, market = net.dep.clients(prov.key)
        reg.register(1, 1000 * TOKEN, "cpu", 2, [], 1, "http://127.0.0.1:9")
        spec = load_spec(JOBS / "digits-mlp.yaml")
        inputs = Path(spec.inputs.path).read_bytes()
        spec = spec.model_copy(update={"inputs": spec.inputs.model_copy(update={"path": None, "cid": cid_of(inputs)}),
                                       "verification": Verification(challenge_window=30)})
        spec_bytes = spec.model_dump_json(exclude_none=True).encode()
        vurl = checks_url.removesuffix("/checks")
        push(vurl, inputs), push(vurl, spec_bytes)
        full = job_program("digits-mlp", inputs)
        _, _, _, cmarket = net.dep.clients(client.key)
        oid = cmarket.open_order(digest_of(cid_of(spec_bytes)), spec.kind_code, spec.model_id, TOKEN,
                                 chain.now() + 600, 30, 10_000, program_root(full), len(full))
        bid = sign_bid(Bid(order_id=oid, provider=prov.address, price=TOKEN // 2, collateral=TOKEN,
                           expiry=chain.now() + 300, run_time=60), prov.key, net.dep.chain_id, net.dep.market)
        cmarket.accept_bid(bid)
        honest = run_infer_job("digits-mlp", inputs, backend="numpy", coarse=False)  # every record
        assert len(decode_records(honest.trace)) == len(full)
        market.commit_result(oid, honest.output_digests, honest.trace_root, len(full))
        assert infer_job("digits-mlp", inputs).run("numpy").trace_root != honest.trace_root  # coarse differs
        before = token.balance_of(validator.address)
        checks = []
        for _ in range(600):
            checks = httpx.get(checks_url, timeout=5).json()
            if checks:
                break
            time.sleep(0.1)
        assert checks and checks[0]["verdict"] == "mismatch", checks
        assert "the order's program is not the one its job gives, so this validator does not challenge" in \
            checks[0]["detail"], checks
        assert net.dep.disputes_client(validator.key).game(oid).stage == 0  # no game, no bond at stake
        assert token.balance_of(validator.address) == before
    finally:
        net.stop()
