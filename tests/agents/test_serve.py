"""An agent served over HTTP, the app store and a validator, as their users see them, on a real
anvil devnet: ``veracity agent serve`` in its own process (its card, its registration on chain,
its refusals of bad tasks, one task at a time, a gateway that fails), ``veracity agent list``
(the registered agents with their feedback and validations) and ``veracity agent validate``
(answers that land on chain: 0 for a run whose receipt is forged or whose window a dispute
overturned, for a run without receipts, for bytes that are not the requested record; no answer
while a window is not committed; requests to other validators left alone).

No model runs here (SmolLM2 through a gateway takes minutes on a CPU): the agent's gateway is a
socket the test holds, which takes the model call and never answers until the test drops it."""

import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import unquote

import httpx
import pytest
from typer.testing import CliRunner

import veracity.cli  # noqa: F401  (adds every command group to the app)
from veracity.agents.record import RunRecord
from veracity.agents.server import MAX_TASK_CHARS, register_agent
from veracity.agents.tools import ToolError, ask_agent
from veracity.agents.trace import RunCheck
from veracity.agents.validate import (
    FAILED_HASH,
    FAILED_NO_RECEIPTS,
    FAILED_RECEIPT,
    VERIFIED_FINAL,
    VERIFIED_SOFT,
    Answer,
    answer_for,
    changed,
    due,
    known_split,
    read_split,
    request_hash,
    request_validation,
    response_uri,
    work_split,
)
from veracity.chain.agents import ValidationInfo
from veracity.chain.anvil import Anvil, free_port
from veracity.chain.client import PROVIDER, VALIDATOR
from veracity.chain.devnet import deploy, dev_accounts
from veracity.cli.app import app
from veracity.exact.trace import TraceRecord
from veracity.gateway.receipts import ReceiptCheck
from veracity.market.bids import Bid, sign_bid
from veracity.market.receipts import line_hash, sign_receipt
from veracity.verify.bisection import TraceView
from veracity.workloads.spec import model_id

TOKEN = 10**18
OWNER, CLIENT, PROVIDER_I, OWNER2, CHECKER, CHECKER2, STRANGER = 1, 2, 3, 4, 5, 6, 7
TINY = """name: tiny-helper
description: Adds numbers; every model call carries a receipt.
model: smollm2
tools: [{name: calculator}]
budget: {steps: 2, tokens: 64}
"""


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A devnet and its deployment file."""
    node = Anvil(accounts=8)
    try:
        accts = dev_accounts(8)
        dep = deploy(node.rpc_url, accts[0], accts)
        path = tmp_path_factory.mktemp("devnet") / "deployment.json"
        dep.write(path)
        yield dep, path
    finally:
        node.stop()


@pytest.fixture(scope="module")
def gateway():
    """The agent's gateway: a socket that takes connections and never answers (``drop`` ends one)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(30)
    yield listener
    listener.close()


def drop(gateway):
    """The gateway drops the model call it holds: the agent's run fails."""
    conn, _ = gateway.accept()
    conn.close()


@pytest.fixture(scope="module")
def served(chain, gateway, tmp_path_factory):
    """``veracity agent serve`` in its own process, registered on the devnet: (url, agent id, records folder)."""
    dep, dep_file = chain
    folder = tmp_path_factory.mktemp("agent")
    (folder / "tiny.yaml").write_text(TINY)
    port = free_port()
    out, log = folder / "stdout", folder / "stderr"
    proc = subprocess.Popen([sys.executable, "-m", "veracity.cli", "agent", "serve", str(folder / "tiny.yaml"),
                             "--port", str(port), "--url", f"http://127.0.0.1:{gateway.getsockname()[1]}/v1",
                             "--deployment", str(dep_file), "--account", str(OWNER), "--register",
                             "--out", str(folder / "runs"), "--price", "2 VRC / task"],
                            stdout=out.open("wb"), stderr=log.open("wb"))
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/card", timeout=2)
            break
        except httpx.HTTPError:
            assert proc.poll() is None and time.monotonic() < end, log.read_text()
            time.sleep(0.1)
    agent_id = int(out.read_text().split("agent id ")[1].split()[0])
    yield url, agent_id, folder / "runs"
    proc.terminate()
    proc.wait(10)


def task(url, body, **kw):
    return httpx.post(f"{url}/tasks", content=body if isinstance(body, (str, bytes)) else json.dumps(body),
                      headers={"content-type": "application/json"}, timeout=60, **kw)


def failing_task(url, gateway, runs, meanwhile=lambda: None):
    """One task whose model call the gateway holds (``meanwhile`` runs then) and then drops: the
    answer, the record the run left, and what ``meanwhile`` gave."""
    before = set(runs.iterdir()) if runs.is_dir() else set()
    got = {}
    caller = threading.Thread(target=lambda: got.update(resp=task(url, {"task": "What is 2 + 2?"})))
    caller.start()
    wait_for(lambda: httpx.get(f"{url}/status").json()["busy"])
    during = meanwhile()
    drop(gateway)
    caller.join(30)
    (path,) = set(runs.iterdir()) - before
    return got["resp"], path, during


def wait_for(condition, within=30):
    end = time.monotonic() + within
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


# serve ---------------------------------------------------------------------------------------

def test_the_card_says_what_the_agent_is_and_where_it_is_registered(chain, served):
    dep, _ = chain
    url, agent_id, _ = served
    card = httpx.get(f"{url}/card").json()
    assert card == {
        "type": "https://eips.ethereum.org/EIPS/eip-8004#registration-v1", "name": "tiny-helper",
        "description": "Adds numbers; every model call carries a receipt.",
        "endpoints": [{"name": "tasks", "endpoint": f"{url}/tasks", "version": "1"}],
        "model": "smollm2", "tools": ["calculator"], "price": "2 VRC / task",
        "registrations": [{"agentId": agent_id, "agentRegistry": f"eip155:{dep.chain_id}:{dep.agent_registry}"}],
        "supportedTrust": ["reputation", "validation"]}
    reg = dep.agent_clients("")[0]
    assert reg.uri(agent_id) == f"{url}/card" and reg.owner_of(agent_id) == dep.accounts[OWNER].address


def test_registering_again_with_the_same_uri_keeps_the_agent(chain, served):
    dep, _ = chain
    url, agent_id, _ = served
    reg = dep.agent_clients(dep.accounts[OWNER].key)[0]
    assert register_agent(reg, f"{url}/card") == (agent_id, False)
    other, new = register_agent(reg, f"{url}/elsewhere")
    assert new and other != agent_id and register_agent(reg, f"{url}/elsewhere") == (other, False)
    # another owner with the same URI is another agent: the check is per owner
    assert register_agent(dep.agent_clients(dep.accounts[OWNER2].key)[0], f"{url}/card")[1]


@pytest.mark.parametrize("body, status, message", [
    ("not json", 400, "the body is not JSON"),
    ([], 400, 'send a JSON object: {"task"'),
    ({}, 400, "no `task`"),
    ({"task": 3}, 400, "`task` must be a string"),
    ({"task": "  \n"}, 400, "the task is empty"),
    ({"task": "2 + 2", "model": "gpt"}, 400, "unknown field 'model'"),
    ({"task": "x" * (MAX_TASK_CHARS + 1)}, 413, f"the task is {MAX_TASK_CHARS + 1} characters; at most"),
    ({"task": "x" * 70_000}, 413, "the body is over 65536 bytes"),
])
def test_a_bad_task_is_refused_with_what_is_wrong(served, body, status, message):
    resp = task(served[0], body)
    assert resp.status_code == status and message in resp.json()["detail"], resp.text


def test_another_agents_call_agent_tool_hears_the_refusal(served):
    with pytest.raises(ToolError, match=rf"refused the task \(413\): the task is {MAX_TASK_CHARS + 5} characters"):
        ask_agent(f"{served[0]}/tasks", "x" * (MAX_TASK_CHARS + 5))


def test_one_task_at_a_time_and_a_failing_gateway_is_a_502(served, gateway):
    url, _, runs = served
    assert httpx.get(f"{url}/status").json() == {"busy": False, "tasks": 0}
    resp, path, second = failing_task(url, gateway, runs, lambda: task(url, {"task": "What is 3 + 3?"}))
    assert second.status_code == 429 and "busy with another task" in second.json()["detail"]
    assert second.headers["retry-after"] == "30"
    assert resp.status_code == 502 and "did not answer" in resp.json()["detail"], resp.text
    assert httpx.get(f"{url}/status").json() == {"busy": False, "tasks": 0}
    # the run's record is served, as a validation request's URI
    record = httpx.get(f"{url}/runs/{path.name}")
    assert path.name.startswith("tiny-helper-") and record.status_code == 200 and record.content == path.read_bytes()
    assert json.loads(record.text.splitlines()[0])["task"] == "What is 2 + 2?"
    for name in ("nothing.jsonl", "..%2Fstdout", "tiny.yaml"):
        assert httpx.get(f"{url}/runs/{name}").status_code == 404


def test_a_serve_that_cannot_start_says_why_in_one_line(served, tmp_path):
    url, _, _ = served
    (tmp_path / "a.yaml").write_text(TINY)
    proc = subprocess.run([sys.executable, "-m", "veracity.cli", "agent", "serve", str(tmp_path / "a.yaml"),
                           "--port", url.rsplit(":", 1)[1]], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: port {url.rsplit(':', 1)[1]} on 127.0.0.1 is in use: pick another with --port"]


# validate ------------------------------------------------------------------------------------

SPEC = hashlib.sha256(b"job spec").digest()
PROGRAM = hashlib.sha256(b"program").digest()


def leases(dep):
    """Two leases of the provider: one a dispute overturned (it committed a wrong trace and
    stopped answering the challenger), one accepted and not committed yet; their ids."""
    c = {i: dep.clients(dep.accounts[i].key) for i in (CLIENT, PROVIDER_I, CHECKER, STRANGER)}
    w3 = c[CLIENT][0].w3
    c[PROVIDER_I][2].register(PROVIDER, 1000 * TOKEN, "cpu", 16, [model_id("minilm")], TOKEN, "")
    c[CHECKER][2].register(VALIDATOR, 200 * TOKEN)
    n, ids = 16, []
    for _ in range(2):
        now = c[CLIENT][0].now()
        oid = c[CLIENT][3].open_order(SPEC, 1, model_id("minilm"), 50 * TOKEN, now + 600, 600, 500, PROGRAM, n)
        bid = Bid(order_id=oid, provider=dep.accounts[PROVIDER_I].address, price=40 * TOKEN,
                  collateral=200 * TOKEN, expiry=now + 300, run_time=60)
        c[CLIENT][3].accept_bid(sign_bid(bid, dep.accounts[PROVIDER_I].key, dep.chain_id, dep.market))
        ids.append(oid)
    cheat = TraceView([TraceRecord(i, "op", bytes([i, i == 9]) * 16) for i in range(n)])
    honest = TraceView([TraceRecord(i, "op", bytes([i, 0]) * 16) for i in range(n)])
    c[PROVIDER_I][3].commit_result(ids[0], b"\1" * 32, cheat.root, n)
    game = dep.disputes_client(dep.accounts[CHECKER].key)
    game.challenge(ids[0], honest.root)
    game.reveal(ids[0], *honest.reveal(game.game(ids[0]).query))
    w3.provider.make_request("evm_increaseTime", [dep.move_time + 1])
    w3.provider.make_request("evm_mine", [])
    dep.disputes_client(dep.accounts[STRANGER].key).timeout(ids[0])
    assert [c[CLIENT][3].order(i).state_name for i in ids] == ["overturned", "accepted"]
    return ids


def record_file(path, dep, signer_key=None, lease=None):
    """A run record whose one model call's receipt is signed by ``signer_key`` for ``lease``
    (no receipt when ``lease`` is None); its bytes."""
    record = RunRecord(path)
    record.add("run", run_id=path.stem, agent="tiny-helper", model="smollm2", task="What is 2 + 2?", start=1,
               spec_sha256="")
    if lease is not None:
        line_in, line_out = '{"prompt": "2 + 2"}\n', '{"prompt": "2 + 2", "output": "4"}\n'
        receipt = sign_receipt(signer_key, dep.chain_id, dep.market, lease, 0, line_hash(line_in), line_hash(line_out))
        record.add("chat", step=0, purpose="answer", model="smollm2", start=1, end=2, prompt_sha256="",
                   output="4", output_sha256="", input_tokens=9, output_tokens=1, receipt=receipt.model_dump())
    record.add("end", answer="4", reason="answered", end=3, steps=0, input_tokens=9, output_tokens=1)
    return path.read_bytes()


def test_the_validator_answers_what_is_addressed_to_it_on_chain(chain, served, gateway, tmp_path):
    dep, dep_file = chain
    url, _, runs = served
    overturned, open_lease = leases(dep)
    reg, _, val = dep.agent_clients(dep.accounts[OWNER2].key)
    agent = reg.register("https://agent.example/card")
    checker, checker2 = dep.accounts[CHECKER].address, dep.accounts[CHECKER2].address
    provider_key, stranger_key = dep.accounts[PROVIDER_I].key, dep.accounts[STRANGER].key

    def ask(name, data, validator=checker, h=None):
        uri = (tmp_path / name).as_uri()
        if h is None:
            return request_validation(val, validator, agent, uri, data)
        val.request(validator, agent, uri, h)
        return h

    forged = ask("forged.jsonl", record_file(tmp_path / "forged.jsonl", dep, stranger_key, open_lease))
    disputed = ask("disputed.jsonl", record_file(tmp_path / "disputed.jsonl", dep, provider_key, overturned))
    waiting = ask("waiting.jsonl", record_file(tmp_path / "waiting.jsonl", dep, provider_key, open_lease))
    other_bytes = record_file(tmp_path / "swapped.jsonl", dep)
    swapped = ask("swapped.jsonl", other_bytes, h=request_hash(other_bytes + b"\n"))
    elsewhere = ask("elsewhere.jsonl", record_file(tmp_path / "elsewhere.jsonl", dep), validator=checker2)
    # a run the agent served over HTTP, which its gateway failed: a record with no receipts
    _, served_run, _ = failing_task(url, gateway, runs)
    empty = request_validation(val, checker, agent, f"{url}/runs/{served_run.name}", served_run.read_bytes())

    runner = CliRunner()
    args = ["agent", "validate", "--deployment", str(dep_file), "--account", str(CHECKER), "--once"]
    first = runner.invoke(app, [*args, "--json"])
    assert first.exit_code == 0, first.output
    seen = {bytes.fromhex(o["request_hash"][2:]): o for o in json.loads(first.stdout)}
    assert elsewhere not in seen  # another validator's request is not this one's business
    assert {h: (seen[h]["status"], seen[h]["score"], seen[h]["tag"]) for h in (forged, disputed, waiting, swapped,
                                                                             empty)} == {
        forged: ("answered", 0, FAILED_RECEIPT), disputed: ("answered", 0, FAILED_RECEIPT),
        swapped: ("answered", 0, FAILED_HASH), empty: ("answered", 0, FAILED_NO_RECEIPTS),
        waiting: ("pending", None, "")}
    status = {h: val.status(h) for h in (forged, disputed, waiting, swapped, elsewhere, empty)}
    assert {h: (s.response, s.tag, s.answers) for h, s in status.items()} == {
        forged: (0, FAILED_RECEIPT, 1), disputed: (0, FAILED_RECEIPT, 1), swapped: (0, FAILED_HASH, 1),
        empty: (0, FAILED_NO_RECEIPTS, 1), waiting: (0, "", 0), elsewhere: (0, "", 0)}
    assert val.summary(agent) == (4, 0) and val.summary(agent, (checker2,)) == (0, 0)
    # the reasons are on chain, in the answers' response URIs
    why = {bytes(e["args"]["requestHash"]): unquote(e["args"]["responseURI"])
           for e in val.contract.events.ValidationResponse().get_logs(from_block=0)}
    assert f"lease {open_lease}'s provider is {dep.accounts[PROVIDER_I].address}, not the receipt's signer" in why[forged]
    assert f"a dispute found lease {overturned}'s window wrong" in why[disputed]
    assert "has no receipts" in why[empty] and "not the request hash" in why[swapped]
    # a second look answers nothing again; the pending one still waits for its window
    again = runner.invoke(app, args, env={"COLUMNS": "250"})
    shown = " ".join(again.output.split())
    assert again.exit_code == 0 and shown.count(" done ") == 4 and shown.count(" pending ") == 1, again.output
    assert all(val.status(h).answers == (0 if h in (waiting, elsewhere) else 1) for h in status)


def test_a_watching_validator_answers_requests_as_they_come(chain, tmp_path):
    dep, dep_file = chain
    out = tmp_path / "stdout"
    proc = subprocess.Popen([sys.executable, "-m", "veracity.cli", "agent", "validate", "--deployment", str(dep_file),
                             "--account", str(CHECKER2), "--watch", "--every", "0.5", "--json"],
                            stdout=out.open("wb"), stderr=(tmp_path / "stderr").open("wb"))
    try:
        reg, _, val = dep.agent_clients(dep.accounts[OWNER2].key)
        agent = reg.register("https://agent.example/watched")
        data = record_file(tmp_path / "run.jsonl", dep)
        h = request_validation(val, dep.accounts[CHECKER2].address, agent, (tmp_path / "run.jsonl").as_uri(), data)
        wait_for(lambda: val.status(h).answers == 1 or proc.poll() is not None)
        assert proc.poll() is None, (tmp_path / "stderr").read_text()
        assert (val.status(h).response, val.status(h).tag) == (0, FAILED_NO_RECEIPTS)
        wait_for(lambda: f"0x{h.hex()}" in out.read_text())  # what it did, one JSON line a change
        line = next(json.loads(ln) for ln in out.read_text().splitlines() if h.hex() in ln)
        assert (line["status"], line["agent_id"], line["score"]) == ("answered", agent, 0)
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_run_passes_only_when_every_receipt_is_verified():
    record = RunRecord()
    record.add("run", run_id="r", agent="a", model="smollm2", task="t", start=1, spec_sha256="")
    for i in range(3):
        record.add("chat", step=i, receipt={"lease": 7, "index": i})

    def checked(*verdicts):
        return RunCheck("verified", [ReceiptCheck(v, f"why {i}", {"state": s})
                                     for i, (v, s) in enumerate(v.split("/") for v in verdicts)])

    final = answer_for(record, checked("verified/finalized", "verified/finalized", "verified/finalized"))
    assert (final.score, final.tag) == (100, VERIFIED_FINAL)
    soft = answer_for(record, checked("verified/finalized", "verified/committed", "verified/finalized"))
    assert (soft.score, soft.tag) == (100, VERIFIED_SOFT)
    assert answer_for(record, checked("verified/finalized", "pending/accepted", "verified/committed")) is None
    failed = answer_for(record, checked("pending/accepted", "failed/overturned", "verified/finalized"))
    assert (failed.score, failed.tag) == (0, FAILED_RECEIPT)  # a failure is final: no need to wait for the rest
    assert failed.reason == "receipt 2 of 3 (lease 7 #1) failed: why 1"


def test_a_pass_attests_the_collectives_work_by_agent():
    """A collective (agent 5) that made one model call, retrieved with one embeddings call, and asked
    two members: agent 9 (two calls) and one whose card named no agent (its calls earn no one)."""
    record = RunRecord()
    record.add("run", run_id="r", agent="docs-collective", model="smollm2", task="t", start=1, spec_sha256="")
    record.add("tool", step=1, name="researcher", receipts=[{"lease": 1, "index": 0}, {"lease": 1, "index": 1}],
               member=9)
    record.add("tool", step=2, name="retrieve", receipts=[{"lease": 2, "index": 0}])
    record.add("tool", step=3, name="writer", receipts=[{"lease": 3, "index": 0}], member=None)
    record.add("chat", step=3, receipt={"lease": 4, "index": 0})
    record.add("tool", step=4, name="calculator", receipts=[])
    assert work_split(record, 5) == ([5, 9], [2, 2])
    checks = RunCheck("verified", [ReceiptCheck("verified", "ok", {"state": "finalized"})] * 5)
    passed = answer_for(record, checks, 5)
    assert passed.split == ([5, 9], [2, 2]) and passed.reason.endswith("; split 5=2,9=2")
    uri, _ = response_uri(passed.reason)
    assert read_split(uri) == ([5, 9], [2, 2])  # what `agent release` reads back from the answer on chain
    assert read_split(response_uri("all 3 receipts verified")[0]) is None
    # a member's card naming an agent the registry does not hold (or no number an id can be) earns
    # no one: paying it would block the payment for everyone
    assert known_split(([5, 9, 10**9], [2, 2, 7]), lambda agent: agent in (5, 9)) == ([5, 9], [2, 2])
    unregistered = answer_for(record, checks, 5, lambda agent: agent != 9)
    assert unregistered.split == ([5], [2]) and unregistered.reason.endswith("; split 5=2")
    record.add("tool", step=5, name="liar", receipts=[{"lease": 5, "index": 0}], member=2**256)
    assert work_split(record, 5) == ([5, 9], [2, 2])


def test_a_receipt_counted_twice_fails_the_run():
    """A member's server that returns one valid receipt many times would multiply its share."""
    record = RunRecord()
    record.add("run", run_id="r", agent="docs-collective", model="smollm2", task="t", start=1, spec_sha256="")
    record.add("chat", step=0, receipt={"lease": 4, "index": 0})
    record.add("tool", step=1, name="member", receipts=[{"lease": 1, "index": 0}] * 3, member=9)
    checks = RunCheck("verified", [ReceiptCheck("verified", "ok", {"state": "finalized"})] * 4)
    failed = answer_for(record, checks, 5)
    assert (failed.score, failed.tag, failed.split) == (0, FAILED_RECEIPT, None)
    assert failed.reason == "receipt 3 of 4 (lease 1 #0) is receipt 2 again: each model call counts once"


def test_a_passed_run_is_watched_until_its_windows_are_final():
    def info(answers=0, response=0, tag=""):
        return ValidationInfo("0x" + "11" * 20, 1, response, bytes(32), tag, 0, 0, answers)

    assert due(info()) and due(info(1, 100, VERIFIED_SOFT))
    assert not due(info(1, 100, VERIFIED_FINAL)) and not due(info(1, 0, FAILED_RECEIPT))
    soft, final, failed = Answer(100, VERIFIED_SOFT, "ok"), Answer(100, VERIFIED_FINAL, "ok"), Answer(0, FAILED_RECEIPT, "x")
    assert changed(info(), soft) and not changed(info(1, 100, VERIFIED_SOFT), soft)
    assert changed(info(1, 100, VERIFIED_SOFT), final) and changed(info(1, 100, VERIFIED_SOFT), failed)
    uri, h = response_uri("why " * 200)
    assert len(uri) <= 256 and uri.startswith("data:,why%20why") and uri.endswith("%E2%80%A6")


# list ----------------------------------------------------------------------------------------

def test_the_app_store_lists_agents_with_their_feedback_and_validations(chain, served):
    dep, dep_file = chain
    url, agent_id, _ = served
    dead = f"http://127.0.0.1:{free_port()}/card"
    other = dep.agent_clients(dep.accounts[OWNER2].key)[0].register(dead)
    rep = dep.agent_clients(dep.accounts[CLIENT].key)[1]
    rep.give(agent_id, 80, tag1="starred")
    rep.give(agent_id, 9000, decimals=2)
    h = request_hash(b"some run")
    dep.agent_clients(dep.accounts[OWNER2].key)[2].request(dep.accounts[CHECKER].address, other, "file:///run", h)
    dep.agent_clients(dep.accounts[CHECKER].key)[2].respond(h, 100, tag=VERIFIED_FINAL)

    runner = CliRunner()
    got = runner.invoke(app, ["agent", "list", "--deployment", str(dep_file), "--json"])
    assert got.exit_code == 0, got.output
    rows = {r["agent_id"]: r for r in json.loads(got.stdout)}
    assert rows[agent_id]["name"] == "tiny-helper" and rows[agent_id]["uri"] == f"{url}/card"
    assert rows[agent_id]["owner"] == dep.accounts[OWNER].address
    assert (rows[agent_id]["feedback_count"], rows[agent_id]["feedback_average"]) == (2, 85.0)
    assert rows[other]["name"] is None and "did not answer" in rows[other]["card_error"]
    assert (rows[other]["validation_count"], rows[other]["validation_average"]) == (1, 100)
    table = runner.invoke(app, ["agent", "list", "--deployment", str(dep_file)], env={"COLUMNS": "250"})
    lines = table.stdout.splitlines()
    mine = next(ln for ln in lines if f"{url}/card" in ln)
    assert "tiny-helper" in mine and "2, avg 85" in mine and dep.accounts[OWNER].address in mine
    theirs = next(ln for ln in lines if dead in ln)
    assert "? (no card)" in theirs and "1, avg 100" in theirs
