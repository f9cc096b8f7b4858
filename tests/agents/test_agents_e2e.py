"""Agents on the devnet end to end, every part its own process over real HTTP: a gateway whose
lease providers run SmolLM2, a validator daemon that re-executes their windows, agents served and
registered with ``veracity agent serve``, and their owner, a validator and a client using the CLI.

First a provider that alters one op of SmolLM2 (corrupt-op) holds the gateway's lease: an agent's
task is answered, the validator daemon catches the window and wins the dispute, and the agent
validator's answer for that run, on chain, is 0: its work failed. Then an honest provider takes
over: the chain analyst says who was slashed, for which order and why (as the chain says), every
receipt of its run verifies, its spans carry the GenAI conventions' attributes and the receipts,
the validator's answer is 100, and a client's feedback is counted in the app store."""

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from nodenet import Net

from veracity.agents.tools import SLASH_CAUSES
from veracity.chain.agents import split_hash
from veracity.chain.anvil import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
CHEATER, NODE_VALIDATOR, HONEST, GATEWAY, OWNER, CHECKER, CLIENT = 1, 2, 3, 4, 5, 6, 7
HELPER = """name: helper
description: Answers in a few words.
model: smollm2
system: Answer in a few words.
"""


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "veracity.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def wait_for(condition, within, what):
    end = time.monotonic() + within
    while True:
        got = condition()
        if got:
            return got
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.5)


class Served:
    """``veracity agent serve AGENT --register`` in its own process."""

    def __init__(self, net, folder, spec_path, gateway):
        self.port = free_port()
        self.runs = folder / "runs"
        self.log = folder / f"{spec_path.stem}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "veracity.cli", "agent", "serve", str(spec_path), "--port", str(self.port),
             "--url", f"{gateway}/v1", "--deployment", str(net.dep_file), "--account", str(OWNER), "--register",
             "--out", str(self.runs)], stdout=subprocess.PIPE, stderr=self.log.open("wb"), text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        line = self.proc.stdout.readline()
        assert line.startswith("agent id "), self.log.read_text()
        self.agent_id = int(line.split()[2])
        wait_for(lambda: self._up(), 60, "the agent's server")

    def _up(self):
        try:
            return httpx.get(f"{self.url}/card", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def task(self, text):
        resp = httpx.post(f"{self.url}/tasks", json={"task": text}, timeout=600)
        assert resp.status_code == 200, (resp.text, self.log.read_text())
        return resp.json()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def ask_validation(net, served, answer):
    got = cli("agent", "request-validation", answer["record"], "--agent-id", str(served.agent_id),
              "--validator", str(CHECKER), "--deployment", str(net.dep_file), "--account", str(OWNER))
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == answer["request_hash"]  # the bytes the agent served are the bytes asked about
    return bytes.fromhex(answer["request_hash"][2:])


def validate(net, request):
    """``veracity agent validate --once`` as the agent validator: its outcome for ``request``."""
    got = cli("agent", "validate", "--deployment", str(net.dep_file), "--account", str(CHECKER), "--once", "--json")
    assert got.returncode == 0, got.stderr
    return next(o for o in json.loads(got.stdout) if o["request_hash"] == "0x" + request.hex())


@pytest.fixture
def devnet(tmp_path):
    # the devnet's 60 s dispute moves: an honest party opening a SmolLM2 step replays only the request that holds
    # it (docs/security.md, "Replay"); it replayed the window from its start, and on a busy two-core machine
    # took 30 to 100 s, which lost an honest validator its game
    net = Net(tmp_path, accounts=8, move_time=60)
    try:
        yield net
    except AssertionError:
        print(net.logs())
        raise
    finally:
        net.stop()


def test_agents_on_the_devnet_a_cheat_fails_validation_and_honest_work_passes(devnet, tmp_path):
    net = devnet
    dep = net.dep
    market, registry = dep.clients(net.accts[0].key)[3], dep.clients(net.accts[0].key)[2]
    cheater = net.provider(CHEATER, ["smollm2"], behaviour="corrupt-op")
    net.validator(NODE_VALIDATOR, poll_interval=1.0)
    port = free_port()
    gateway = f"http://127.0.0.1:{port}"
    net.procs.append(subprocess.Popen(
        [sys.executable, "-m", "veracity.cli", "gateway", "run", "--port", str(port), "--deployment",
         str(net.dep_file), "--account", str(GATEWAY), "--window-requests", "8", "--window-s", "5",
         "--challenge-window", "120"], stdout=(tmp_path / "gateway.log").open("wb"), stderr=subprocess.STDOUT))
    wait_for(lambda: _answers(f"{gateway}/v1/models"), 120, "the gateway")
    (tmp_path / "helper.yaml").write_text(HELPER)
    helper = Served(net, tmp_path, tmp_path / "helper.yaml", gateway)
    analyst = None
    try:
        # 1. the cheater's lease serves the helper's task; its window is caught and overturned
        done = helper.task("What is 2 + 2?")
        leases = {c["receipt"]["lease"] for c in done["run"] if c["event"] == "chat"}
        assert leases and all(market.order(lease).provider == cheater.address for lease in leases)
        cheated = ask_validation(net, helper, done)
        wait_for(lambda: all(market.order(lease).state_name == "overturned" for lease in leases), 400,
                 f"the dispute over lease {leases}")
        outcome = validate(net, cheated)
        assert (outcome["status"], outcome["score"], outcome["tag"]) == ("answered", 0, "failed:receipt"), outcome
        assert "window wrong" in outcome["note"], outcome
        validation = dep.agent_clients(net.accts[OWNER].key)[2]
        assert (validation.status(cheated).response, validation.status(cheated).answers) == (0, 1)

        # 2. an honest provider takes over the gateway's leases; the analyst reads the story off the chain
        net.procs[0].kill()  # the cheater (its stake slashed) stops
        net.provider(HONEST, ["smollm2"])
        analyst = Served(net, tmp_path, ROOT / "examples" / "agents" / "chain-analyst.yaml", gateway)
        done = analyst.task("Which provider was slashed, for which order, and why?")
        slashed = {e["args"]["node"] for e in registry.contract.events.Slashed().get_logs(from_block=0)}
        overturned = {e["args"]["order_id"] for e in market.contract.events.Overturned().get_logs(from_block=0)}
        assert slashed == {cheater.address} and overturned == leases
        answer = done["answer"]  # one of its slashes: the provider, the order and the cause, as the chain holds them
        assert any(f"order {lease}:" in answer for lease in leases) and cheater.address in answer \
            and SLASH_CAUSES["Overturned"] in answer, (answer, done["run"])
        chats = [e for e in done["run"] if e["event"] == "chat"]
        assert chats and all(market.order(c["receipt"]["lease"]).provider == net.accts[HONEST].address for c in chats)

        # every receipt of the run verifies once its window is committed
        record = analyst.runs / done["record"].rsplit("/", 1)[1]
        traced = cli("agent", "trace", str(record), "--deployment", str(net.dep_file), "--wait", "240",
                     timeout=400)
        assert traced.returncode == 0 and "verified" in traced.stdout, traced.stdout + traced.stderr
        # the spans, exported by the server next to the record, follow the GenAI conventions
        spans = [s for r in json.loads(record.with_suffix(".otlp.json").read_text())["resourceSpans"]
                 for ss in r["scopeSpans"] for s in ss["spans"]]
        attrs = [{a["key"]: next(iter(a["value"].values())) for a in s["attributes"]} for s in spans]
        ops = sorted(a["gen_ai.operation.name"] for a in attrs)
        assert ops == sorted(["invoke_agent", "execute_tool", *["chat"] * len(chats)]), ops
        chat_attrs = [a for a in attrs if a["gen_ai.operation.name"] == "chat"]
        assert all(a["gen_ai.request.model"] == "smollm2" and int(a["gen_ai.usage.output_tokens"]) > 0
                   for a in chat_attrs)
        assert sorted(json.loads(a["veracity.receipt"])["index"] for a in chat_attrs) == \
            sorted(c["receipt"]["index"] for c in chats)

        # the agent validator answers 100 for it on chain; a client's feedback lands in the app store
        honest = ask_validation(net, analyst, done)
        outcome = validate(net, honest)
        assert (outcome["status"], outcome["score"]) == ("answered", 100) and outcome["tag"].startswith("verified"), \
            outcome
        # its pass attests the run's work by agent: the analyst's own model calls; a client pays for the
        # run on the Collective contract (on a soft pass: its window is still challengeable) and anyone
        # releases it, to the agent's owner (it has no wallet)
        assert f"split {analyst.agent_id}={len(chats)}" in outcome["note"]
        assert validation.status(honest).response_hash == split_hash([analyst.agent_id], [len(chats)])
        paid = cli("agent", "pay", str(analyst.agent_id), "--request", done["request_hash"], "--validator",
                   str(CHECKER), "--amount", "3", "--soft", "--deployment", str(net.dep_file), "--account", str(CLIENT))
        assert paid.returncode == 0 and paid.stdout.startswith("payment "), paid.stderr
        token = dep.clients(net.accts[0].key)[1]
        before = token.balance_of(net.accts[OWNER].address)
        released = cli("agent", "release", paid.stdout.split()[1], "--deployment", str(net.dep_file), "--account",
                       str(NODE_VALIDATOR))
        assert released.returncode == 0, released.stderr
        assert released.stdout.strip() == f"agent {analyst.agent_id}: 3 VRC to {net.accts[OWNER].address}"
        assert token.balance_of(net.accts[OWNER].address) == before + 3 * 10**18
        rated = cli("agent", "feedback", str(analyst.agent_id), "--score", "90", "--tag", "accurate",
                    "--deployment", str(net.dep_file), "--account", str(CLIENT))
        assert rated.returncode == 0, rated.stderr
        listed = cli("agent", "list", "--deployment", str(net.dep_file), "--json")
        rows = {r["agent_id"]: r for r in json.loads(listed.stdout)}
        assert rows[analyst.agent_id]["name"] == "chain-analyst"
        assert (rows[analyst.agent_id]["feedback_count"], rows[analyst.agent_id]["feedback_average"]) == (1, 90)
        assert (rows[analyst.agent_id]["validation_count"], rows[analyst.agent_id]["validation_average"]) == (1, 100)
        assert (rows[helper.agent_id]["validation_count"], rows[helper.agent_id]["validation_average"]) == (1, 0)
        # an owner cannot rate its own agent
        own = cli("agent", "feedback", str(analyst.agent_id), "--score", "100", "--deployment", str(net.dep_file),
                  "--account", str(OWNER))
        assert own.returncode != 0 and len(own.stderr.strip().splitlines()) == 1, own.stderr
    finally:
        print((tmp_path / "gateway.log").read_text()[-4000:])
        helper.stop()
        if analyst is not None:
            analyst.stop()


def _answers(url):
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
