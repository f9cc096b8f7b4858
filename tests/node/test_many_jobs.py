"""Twenty jobs in flight at once across three provider daemons: every one settles, and every
token is accounted for (clients pay exactly their prices, providers get price minus fee, the fee
pool gets the fees, no escrow is left behind)."""

import threading
from pathlib import Path

from nodenet import Net

from veracity.client.jobs import submit
from veracity.workloads.infer import run_infer_job
from veracity.workloads.spec import Verification, load_spec

JOBS = Path(__file__).resolve().parent.parent.parent / "examples" / "jobs"
CLIENTS, PROVIDERS = 20, 3
MODELS = ["digits-mlp", "minilm", "tiny-gpt"]  # the jobs' models, which the providers serve


def test_twenty_jobs_in_flight_across_three_providers_all_settle(tmp_path):
    net = Net(tmp_path, accounts=1 + CLIENTS + PROVIDERS)
    try:
        provs = net.providers([1 + CLIENTS + k for k in range(PROVIDERS)], MODELS, policy={"max_jobs": 10})
        dep = net.dep
        _, token, registry, market = dep.clients(dep.deployer.key)
        clients = net.accts[1:1 + CLIENTS]
        models = [MODELS[i % len(MODELS)] for i in range(CLIENTS)]
        specs = [load_spec(JOBS / f"{m}.yaml").model_copy(update={
            "deadline": 400, "verification": Verification(challenge_window=2)}) for m in models]
        before = {a.address: token.balance_of(a.address) for a in [*clients, *provs]}
        stakes = {p.address: registry.node(p.address).stake for p in provs}
        fees_before = market.fee_pool()

        outcomes, errors = {}, []

        def run(i):
            try:
                outcomes[i] = submit(specs[i], dep, clients[i].key, bid_wait=300, result_timeout=500)  # (it stops waiting once all bid)
            except Exception as exc:  # collected, then reported by the assertion below
                errors.append(f"client {i}: {exc!r}")

        threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert not errors, (errors, net.logs()[-5000:])
        assert len(outcomes) == CLIENTS

        local = {m: run_infer_job(m, Path(load_spec(JOBS / f"{m}.yaml").inputs.path).read_bytes()) for m in MODELS}
        for i, out in outcomes.items():
            assert out.outputs == local[models[i]].outputs and out.trace_root == local[models[i]].trace_root
            assert market.order(out.order_id).state_name == "finalized"
        assert len({out.provider for out in outcomes.values()}) >= 2  # the work was shared

        fee = {i: out.price * dep.fee_bps // 10_000 for i, out in outcomes.items()}
        for i, out in outcomes.items():
            assert token.balance_of(clients[i].address) == before[clients[i].address] - out.price
        for p in provs:
            earned = sum(out.price - fee[i] for i, out in outcomes.items() if out.provider == p.address)
            assert token.balance_of(p.address) == before[p.address] + earned
            node = registry.node(p.address)
            assert node.stake == stakes[p.address] and node.locked == 0  # every collateral released
        assert market.fee_pool() == fees_before + sum(fee.values())
        assert market.escrow_total() == 0
    finally:
        net.stop()
