"""A job end to end with real processes: anvil, a provider daemon over HTTP, the client here."""

import threading
import time
from pathlib import Path

import httpx
import pytest

from veracity.blobs.transfer import fetch
from veracity.client.jobs import MissedDeadlineError, NoBidError, providers, submit
from veracity.exact.trace import decode_records
from veracity.workloads.infer import run_infer_job
from veracity.workloads.spec import Verification, load_spec

JOBS = Path(__file__).resolve().parent.parent.parent / "examples" / "jobs"
TOKEN = 10**18


@pytest.fixture
def network(net):
    def provider(*args, **kw):
        acct = net.provider(*args, **kw)
        provider.last = net.last
        return acct

    provider.restart = net.restart
    return net.dep, net.accts, provider


def test_a_job_settles_and_the_output_is_the_local_exact_run(network):
    dep, accts, provider = network
    p = provider(3, ["digits-mlp"])
    client = accts[1]
    spec = load_spec(JOBS / "digits-mlp.yaml")
    spec = spec.model_copy(update={"verification": Verification(challenge_window=2, spot_check_rate=0.1)})
    _, token, _, _ = dep.clients(client.key)
    before_c, before_p = token.balance_of(client.address), token.balance_of(p.address)
    out = submit(spec, dep, client.key, bid_wait=120, result_timeout=400)
    local = run_infer_job("digits-mlp", Path(spec.inputs.path).read_bytes(), backend="numpy")
    assert out.outputs == local.outputs and out.trace_root == local.trace_root
    # the provider keeps the whole trace; its records hash to the committed root
    url = providers(dep, client.key)[p.address]
    trace_cid = httpx.get(f"{url}/traces/{out.order_id}", timeout=5).json()["trace_cid"]
    assert decode_records(fetch(url, trace_cid)) == decode_records(local.trace)
    assert out.provider == p.address and out.price == int(5 * TOKEN * 0.9)
    fee = out.price * dep.fee_bps // 10_000
    assert token.balance_of(client.address) == before_c - out.price
    assert token.balance_of(p.address) == before_p + out.price - fee


def test_when_nobody_bids_the_client_is_told_why_and_refunded(network):
    dep, accts, provider = network
    provider(3, ["minilm"])
    client = accts[1]
    _, token, _, _ = dep.clients(client.key)
    before = token.balance_of(client.address)
    with pytest.raises(NoBidError, match="does not serve model 'digits-mlp'"):
        submit(load_spec(JOBS / "digits-mlp.yaml"), dep, client.key, bid_wait=120)
    assert token.balance_of(client.address) == before


def past_the_deadline_once_accepted(dep, stop):
    """Once the order is accepted, move the chain's clock past its deadline (the late provider
    would never deliver: no need to wait the deadline out)."""
    chain, _, _, market = dep.clients(dep.deployer.key)
    while not stop.is_set():
        if market.fn.order_count().call() and market.order(1).state_name == "accepted":
            chain.w3.provider.make_request("evm_increaseTime", [market.order(1).deadline - chain.now() + 1])
            chain.w3.provider.make_request("evm_mine", [])
            return
        time.sleep(0.1)


def test_a_late_provider_is_slashed_and_the_client_refunded(network):
    dep, accts, provider = network
    p = provider(3, ["digits-mlp"], behaviour="late")
    client = accts[1]
    _, token, registry, _ = dep.clients(client.key)
    before_c, stake = token.balance_of(client.address), registry.node(p.address).stake
    spec = load_spec(JOBS / "digits-mlp.yaml").model_copy(update={"deadline": 35})
    stop = threading.Event()
    clock = threading.Thread(target=past_the_deadline_once_accepted, args=(dep, stop))
    clock.start()
    try:
        with pytest.raises(MissedDeadlineError, match="missed the deadline"):
            submit(spec, dep, client.key, bid_wait=120, result_timeout=400)
    finally:
        stop.set()
        clock.join()
    collateral = int(5 * TOKEN * 0.9) * 5000 // 10_000
    assert token.balance_of(client.address) == before_c + collateral  # escrow back, plus the collateral
    node = registry.node(p.address)
    assert node.stake == stake - collateral and node.locked == 0 and node.reputation == -1


def test_a_provider_killed_mid_job_resumes_and_is_paid_once(network, tmp_path):
    import sqlite3

    dep, accts, provider = network
    p = provider(3, ["tiny-gpt"])
    proc, cfg = provider.last
    client = accts[1]
    _, token, _, market = dep.clients(client.key)
    before_p = token.balance_of(p.address)
    inputs = tmp_path / "long.jsonl"
    inputs.write_text('{"text": "the provider ", "max_tokens": 90}\n' * 6)
    spec = load_spec(JOBS / "tiny-gpt.yaml").model_copy(update={
        "verification": Verification(challenge_window=2)})
    spec = spec.model_copy(update={"inputs": spec.inputs.model_copy(update={"path": str(inputs)})})
    result = {}
    worker = threading.Thread(target=lambda: result.update(out=submit(spec, dep, client.key, bid_wait=120,
                                                                      result_timeout=300)))
    worker.start()
    db = tmp_path / "p3" / "state.db"
    for _ in range(600):  # wait until the job is running, then kill -9 the daemon
        if db.exists():
            row = sqlite3.connect(db).execute("SELECT status FROM jobs WHERE status = 'running'").fetchone()
            if row:
                break
        time.sleep(0.05)
    else:
        pytest.fail("the job never started running")
    proc.kill()
    proc.wait()
    provider.restart(cfg)
    worker.join(300)
    out = result["out"]
    local = run_infer_job("tiny-gpt", inputs.read_bytes(), backend="torch")
    assert out.outputs == local.outputs
    fee = out.price * dep.fee_bps // 10_000
    assert token.balance_of(p.address) == before_p + out.price - fee  # paid exactly once
    assert market.order(out.order_id).state_name == "finalized"
