"""Bad input never crashes a daemon: each case gets a clear CLI error or a logged refusal, no
funds are lost, and the provider daemon keeps serving (it then runs a good job)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from nodenet import Net, fuzz

from veracity.blobs.store import BlobError
from veracity.blobs.transfer import fetch, push
from veracity.chain.anvil import free_port
from veracity.chain.client import PROVIDER
from veracity.cid import cid_of, digest_of
from veracity.client.jobs import NoBidError, submit
from veracity.errors import InputError
from veracity.workloads.spec import Verification, load_spec, model_id

ROOT = Path(__file__).resolve().parent.parent.parent
JOBS = ROOT / "examples" / "jobs"
TOKEN = 10**18
LIMIT = 64 << 10  # this provider stores blobs up to 64 KiB


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    net = Net(tmp_path_factory.mktemp("bad-input"), accounts=8)
    net.provider(3, ["digits-mlp", "tiny-gpt"], max_blob_bytes=LIMIT)
    yield net
    net.stop()


def still_serving(net):
    proc, _ = net.last
    assert proc.poll() is None, "the provider daemon died"
    assert httpx.get(f"{net.url}/health", timeout=5).json() == {"status": "ok"}


def open_by_hand(net, spec_bytes, model="digits-mlp", client=1, price=5 * TOKEN):
    """Push ``spec_bytes`` to the provider and open an order for it directly on the Market."""
    _, _, _, market = net.dep.clients(net.accts[client].key)
    push(net.url, spec_bytes)
    return market, market.open_order(digest_of(cid_of(spec_bytes)), 1, model_id(model), price,
                                     market.chain.now() + 600, 2, 0, b"\1" * 32, 1)


def refusal(net, oid):
    for _ in range(100):
        resp = httpx.get(f"{net.url}/bids/{oid}", timeout=5)
        if resp.status_code != 404:
            return resp
        time.sleep(0.1)
    pytest.fail(f"the provider never decided on order {oid}")


def cli(net, *args):
    env = {**os.environ, "VERACITY_HOME": str(net.folder / "home")}
    return subprocess.run([sys.executable, "-m", "veracity.cli", *map(str, args), "--deployment", net.dep_file],
                          capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)


def test_malformed_spec(live, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: infer\nmodel: digits-mlp\ninputs: {path: x.jsonl}\nmax_price: -1\ndeadline: 60\n")
    proc = cli(live, "job", "submit", bad)
    assert proc.returncode == 2 and "max_price" in proc.stderr and "Traceback" not in proc.stderr
    market, oid = open_by_hand(live, b"kind: infer\nmodel: [not, a, name\n")  # a spec no one can parse
    resp = refusal(live, oid)
    assert resp.status_code == 409 and "cannot use the job spec" in resp.json()["detail"]
    assert "order %d: no bid, cannot use the job spec" % oid in (live.folder / "p3.log").read_text()
    before = market.token.balance_of(market.chain.address)
    market.reclaim(oid)  # the client's escrow is whole
    assert market.token.balance_of(market.chain.address) == before + 5 * TOKEN
    still_serving(live)


def test_unknown_model(live, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text((JOBS / "digits-mlp.yaml").read_text().replace("model: digits-mlp", "model: gpt-5")
                    .replace("../inputs/", str(ROOT / "examples" / "inputs") + "/"))
    proc = cli(live, "job", "submit", spec)
    assert proc.returncode == 2 and "unknown model 'gpt-5'" in proc.stderr and "Traceback" not in proc.stderr
    text = b'{"kind": "infer", "model": "gpt-5", "inputs": {"cid": "%s"}, "max_price": 5, "deadline": 600}' % \
        cid_of(b"{}").encode()
    market, oid = open_by_hand(live, text, model="gpt-5")
    resp = refusal(live, oid)
    assert resp.status_code == 409 and "does not serve model" in resp.json()["detail"]
    market.reclaim(oid)
    still_serving(live)


def test_cid_mismatch(live):
    # a spec whose inputs CID names bytes this provider was never given
    text = b'{"kind": "infer", "model": "digits-mlp", "inputs": {"cid": "%s"}, "max_price": 5, "deadline": 600}' % \
        cid_of(b'{"pixels": []}\n').encode()
    market, oid = open_by_hand(live, text)
    resp = refusal(live, oid)
    assert resp.status_code == 409 and "does not have the job inputs" in resp.json()["detail"]
    market.reclaim(oid)
    # a blob corrupted on the provider's disk is never served as if it were the CID's bytes
    cid = push(live.url, b'{"pixels": [1]}\n')
    (live.folder / "p3" / "blobs" / cid).write_bytes(b'{"pixels": [2]}\n')
    with pytest.raises(BlobError, match="corrupted"):
        fetch(live.url, cid)
    assert httpx.get(f"{live.url}/blobs/not-a-cid", timeout=5).status_code == 400
    still_serving(live)


def test_blob_too_large(live, tmp_path):
    with pytest.raises(BlobError, match="exceeds the limit"):
        push(live.url, b"x" * (LIMIT + 1))
    big = tmp_path / "big.jsonl"
    big.write_text('{"pixels": [%s]}\n' % ", ".join(["16"] * 64) * 400)  # about 80 KiB
    spec = load_spec(JOBS / "digits-mlp.yaml").model_copy(update={"verification": Verification(challenge_window=2)})
    spec = spec.model_copy(update={"inputs": spec.inputs.model_copy(update={"path": str(big)})})
    _, token, _, _ = live.dep.clients(live.accts[2].key)
    before = token.balance_of(live.accts[2].address)
    with pytest.raises(NoBidError, match="refused the blob: blob of .* exceeds the limit"):
        submit(spec, live.dep, live.accts[2].key, bid_wait=10)
    assert token.balance_of(live.accts[2].address) == before  # the escrow came back
    still_serving(live)


def test_unreachable_provider(live):
    dead = live.accts[4]  # registered on-chain, but nothing listens at its endpoint
    _, _, reg, _ = live.dep.clients(dead.key)
    reg.register(PROVIDER, 1000 * TOKEN, "cpu", 8, [model_id("digits-mlp")], 0, f"http://127.0.0.1:{free_port()}")
    spec = load_spec(JOBS / "digits-mlp.yaml").model_copy(update={"verification": Verification(challenge_window=2)})
    _, token, _, _ = live.dep.clients(live.accts[5].key)
    before = token.balance_of(live.accts[5].address)
    with pytest.raises(NoBidError, match=f"provider {dead.address}: cannot reach"):
        submit(spec, live.dep, live.accts[5].key, bid_wait=10, only={dead.address})
    assert token.balance_of(live.accts[5].address) == before
    out = submit(spec, live.dep, live.accts[5].key, bid_wait=120, result_timeout=400)  # the live one takes it
    assert out.provider == live.accts[3].address
    still_serving(live)


def test_too_little_escrow(live, tmp_path):
    poor = live.accts[6]
    chain, token, _, _ = live.dep.clients(poor.key)
    token.transfer(live.accts[0].address, token.balance_of(poor.address) - TOKEN)  # keeps 1 VRC
    spec = load_spec(JOBS / "digits-mlp.yaml")
    with pytest.raises(InputError, match="needs 5 VRC .* holds 1 VRC"):
        submit(spec, live.dep, poor.key)
    proc = cli(live, "job", "submit", JOBS / "digits-mlp.yaml", "--account", 6)
    assert proc.returncode == 2 and "holds 1 VRC" in proc.stderr and "Traceback" not in proc.stderr
    cheap = spec.model_copy(update={"max_price": 0.05})  # below the provider's 0.1 VRC floor
    with pytest.raises(NoBidError, match="below its price floor"):
        submit(cheap, live.dep, poor.key, bid_wait=10)
    assert token.balance_of(poor.address) == TOKEN  # nothing lost
    still_serving(live)


def test_order_ids_and_amounts_past_64_bits(live):
    """Order ids past what the chain can have are a 404, never a 500; an order escrowing more than
    2^63 wei (9.23 VRC) is decided like any other (its price once overflowed SQLite)."""
    body = {"index": 0, "item": {"text": "x"}, "signature": "0x" + "00" * 65}
    for method, path, json in [("GET", f"/traces/{2**63}", None), ("GET", "/traces/-1", None),
                               ("GET", f"/bids/{2**256}", None), ("POST", "/leases/-1/requests", body),
                               ("POST", f"/leases/{2**256}/requests", body), ("POST", f"/leases/{2**63}/requests", body)]:
        resp = httpx.request(method, f"{live.url}{path}", json=json, timeout=10)
        assert resp.status_code == 404, (path, resp.status_code, resp.text)
    inputs = (ROOT / "examples" / "inputs" / "digits-mlp.jsonl").read_bytes()
    push(live.url, inputs)
    spec = f"kind: infer\nmodel: digits-mlp\ninputs: {{cid: {cid_of(inputs)}}}\nmax_price: 10\ndeadline: 600\n"
    market, oid = open_by_hand(live, spec.encode(), price=10 * TOKEN)
    resp = refusal(live, oid)  # decided: its program (made up here) is not the job's
    assert resp.status_code == 409 and "computes another program" in resp.json()["detail"], resp.text
    market.reclaim(oid)
    still_serving(live)


def test_fuzzed_requests_get_no_server_error(live):
    calls = 0
    for op, case, resp in fuzz(live.url, 15):
        calls += 1
        assert resp.status_code < 500, (op.label, case.path_parameters, case.body, resp.status_code, resp.text[:300])
    assert calls >= 5 * 6  # every operation was called
    still_serving(live)
