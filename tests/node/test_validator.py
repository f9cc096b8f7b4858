"""A validator re-executes committed results: an honest provider matches, a cheater does not."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

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
        dep = deploy(node.rpc_url, accts[0], accts)
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
        spec = spec.model_copy(update={"verification": Verification(challenge_window=2)})
        try:
            submit(spec, dep, accts[1].key, bid_wait=20, result_timeout=180)
        except VeracityError as exc:  # a lazy provider serves outputs that are not even its committed ones
            assert behaviour == "lazy" and "served outputs that are not its committed result" in str(exc), exc
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
