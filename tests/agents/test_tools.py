"""The agent runtime's built-in tools as an agent sees them: the calculator's answers and
refusals; the chain tool's answers about a story played on a real anvil devnet (a finalized
order, a provider slashed for a missed deadline, a provider overturned in a dispute game, an open
order), citing the ids, addresses and amounts the chain holds; retrieval's passages through a
real gateway, with the embeddings' receipts; and another agent's answer over real HTTP, with the
receipts of its run."""

import asyncio
import hashlib
import re
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from chainstory import TOKEN, played
from fastapi import FastAPI, Request

from veracity.agents.record import RunRecord
from veracity.agents.runtime import run_tool
from veracity.agents.spec import ToolSpec
from veracity.agents.tools import (
    EMBED_BATCH,
    OUTPUT_CHARS,
    ToolContext,
    ToolError,
    ask_agent,
    build_tools,
    calculate,
    fit_tokens,
    minilm_token_count,
    parse_chain_query,
    rank,
    split_passages,
    vrc,
)
from veracity.chain.anvil import free_port
from veracity.errors import VeracityError
from veracity.market.receipts import Receipt


def tool(name, ctx=None, **options):
    tools = build_tools([ToolSpec(name=name, **options)], ctx or ToolContext(None, None))
    (t,) = tools.values()
    return t


# the calculator ------------------------------------------------------------------------------

@pytest.mark.parametrize("expr,answer", [
    ("2 + 3 * 4", "2 + 3 * 4 = 14"),
    ("(40 - 2) * 0.95", "(40 - 2) * 0.95 = 36.1"),
    ("0.1 + 0.2", "0.1 + 0.2 = 0.3"),  # exact decimals, not binary floats
    ("1 / 3", "1 / 3 = 0.333333333333 (rounded)"),
    ("10 / 4", "10 / 4 = 2.5"),
    ("-7 // 2", "-7 // 2 = -4"),
    ("7.5 % 2", "7.5 % 2 = 1.5"),
    ("-(2 ** 10)", "-(2 ** 10) = -1024"),
    ("2 ^ 8", "2 ** 8 = 256"),  # the caret as a power, as people write it
    ("2 ** -2", "2 ** -2 = 0.25"),
    ("2 ** 0.5", "2 ** 0.5 = 1.41421356237 (rounded)"),
    ("1e3 * 1.5", "1e3 * 1.5 = 1500"),
    ("2 ** 1000", "2 ** 1000 = 1.07150860719e+301 (rounded)"),
    ("  38 * 0.05 = ", "38 * 0.05 = 1.9"),
])
def test_the_calculator_answers_with_the_expression_and_its_value(expr, answer):
    assert calculate(expr) == answer
    assert tool("calculator").run(expr).output == answer


@pytest.mark.parametrize("expr,message", [
    ("2 +", "calculator: `2 +` is not an expression"),
    ("", "calculator: give an arithmetic expression"),
    ("sqrt(2)", "`sqrt(2)` is not a number"),
    ("__import__('os').system('ls')", "is not a number"),
    ("x * 2", "`x` is not a number"),
    ("1,000 * 2", "write numbers without commas"),
    ("'a' * 3", "`'a'` is not a number"),
    ("2 < 3", "`2 < 3` is not arithmetic"),
    ("1 / 0", "`1 / 0` divides by zero"),
    ("5 % 0", "divides by zero"),
    ("2 ** 100000", "exponent in `2 ** 100000` is above 1000"),
    ("10 ** 10 ** 10", "is above 1000"),
    ("9 ** 999 * 9 ** 999", "too large to compute"),
    ("1e999999999", "too large or too small"),
    ("1" * 41, "more than 40 digits"),
    ("1+" * 100 + "1", "at most 200"),
    ("(-8) ** (1/3)", "no real value"),
])
def test_the_calculator_refuses_what_is_not_bounded_arithmetic(expr, message):
    with pytest.raises(ToolError, match=re.escape(message)):
        calculate(expr)
    assert issubclass(ToolError, VeracityError)  # the runtime hands the message back to the model


# the chain: parsing and amounts (pure) ---------------------------------------------------------

ADDR = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@pytest.mark.parametrize("query,kind,order,address", [
    ("orders", "orders", None, None),
    ("Latest ORDERS", "orders", None, None),
    ("orders before 12", "orders", 12, None),
    (f"orders of {ADDR}", "orders", None, ADDR),
    ("order 3", "order", 3, None),
    ("show order #3", "order", 3, None),
    ("3", "order", 3, None),
    ("the dispute on order 3", "order", 3, None),
    (f"balance {ADDR}", "balance", None, ADDR),
    (f"what is the stake of {ADDR}?", "balance", None, ADDR),
    (ADDR, "balance", None, ADDR),
    ("slashes", "slashes", None, None),
    ("who was slashed?", "slashes", None, None),
    (f"slashes of {ADDR}", "slashes", None, ADDR),
    ("disputes", "disputes", None, None),
    ("list the challenges", "disputes", None, None),
    ("providers", "providers", None, None),
    ("registered nodes by stake", "providers", None, None),
])
def test_chain_queries_are_read_forgivingly(query, kind, order, address):
    q = parse_chain_query(query)
    assert (q.kind, q.order, q.address) == (kind, order, address)


@pytest.mark.parametrize("query,message", [
    ("hello there", "is not a query I know; ask one of: orders"),
    ("balance 0x1234", "`0x1234` is not an address: an address is 0x and 40 hex digits"),
    ("what is my balance", "a balance needs an address"),
])
def test_chain_queries_it_cannot_answer_say_what_to_ask(query, message):
    with pytest.raises(ToolError, match=message):
        parse_chain_query(query)


@pytest.mark.parametrize("wei,shown", [(0, "0 VRC"), (38 * TOKEN, "38 VRC"), (TOKEN // 10, "0.1 VRC"),
                                       (123456789 * 10**12, "123.4568 VRC"), (TOKEN // 3, "0.3333 VRC"),
                                       (1, "<0.0001 VRC"), (-2 * TOKEN, "-2 VRC")])
def test_amounts_are_in_vrc_with_up_to_four_decimals(wei, shown):
    assert vrc(wei) == shown


# the chain: a story on a real devnet -----------------------------------------------------------

@pytest.fixture(scope="module")
def story():
    yield from played()


@pytest.fixture(scope="module")
def chain(story):
    return tool("chain", ToolContext(story.dep, None))


def test_the_story_is_on_the_chain(story):
    m = story.market("deployer")
    assert [m.order(i).state_name for i in (1, 2, 3, 4)] == ["finalized", "refunded", "overturned", "open"]


def test_orders_lists_the_latest_first_with_who_and_how_much(chain, story):
    out = chain.run("orders").output
    assert len(out) <= OUTPUT_CHARS
    lines = out.splitlines()
    assert lines[0].startswith("4 orders in all")
    assert lines[1] == f"order 4 (minilm) open: client {story.addr['client']}, no provider, max price 25 VRC"
    assert lines[2] == (f"order 3 (minilm) overturned: client {story.addr['client2']}, provider "
                        f"{story.addr['provider']}, price 40 VRC")
    assert "order 2 (minilm) refunded" in out or "orders before 3" in out  # the rest, or how to ask for it
    older = chain.run("show me the orders before 3").output
    assert older.splitlines()[1:] == [
        f"order 2 (minilm) refunded: client {story.addr['client']}, provider {story.addr['provider2']}, price 30 VRC",
        f"order 1 (minilm) finalized: client {story.addr['client']}, provider {story.addr['provider']}, price 40 VRC"]
    mine = chain.run(f"orders of {story.addr['client2']}").output
    assert "order 3 (minilm) overturned" in mine and "order 1 " not in mine and "order 4 " not in mine


def test_a_finalized_order_shows_its_commit_and_payment(chain, story):
    out = chain.run("Show order #1").output
    o = story.market("deployer").order(1)
    assert out == chain.run("order 1").output
    assert out.startswith(f"order 1 (minilm): finalized; client {story.addr['client']}, provider "
                          f"{story.addr['provider']}; price 40 VRC, collateral 200 VRC")
    assert f"output root 0x{o.output_cid.hex()} (1 output), trace root 0x{story.root1.hex()} (84 records)" in out
    assert out.endswith("settled: finalized: the provider was paid 38 VRC (fee 2 VRC)")  # 5% fee
    assert len(out) <= OUTPUT_CHARS


def test_a_missed_deadline_shows_the_refund_and_the_slash(chain, story):
    out = chain.run("order 2").output
    assert "commit:" not in out  # nothing was committed
    assert out.endswith("settled: the provider missed its deadline: the client got 30 VRC back and the provider "
                        "was slashed 100 VRC to the client")


def test_an_overturned_order_shows_its_dispute_game_and_slash(chain, story):
    out = chain.run("what happened in the dispute on order 3?").output
    assert len(out) <= OUTPUT_CHARS + 100
    # the provider's stake share held at the challenge: 20% of its free stake (1000 - 200 locked)
    held = 800 * TOKEN * 2000 // 10_000
    assert f"dispute: challenged by {story.addr['validator']} (bond {vrc(story.bond)}); provider lost: the " \
           "provider missed its move's deadline" in out
    assert out.endswith(f"settled: overturned: the client got 40 VRC back and the provider was slashed "
                        f"{vrc(200 * TOKEN + held)} to the challenger {story.addr['validator']} "
                        f"({vrc((200 * TOKEN + held) // 2)} burnt)")
    assert vrc(200 * TOKEN + held) == "360 VRC"


def test_an_open_order_and_one_that_does_not_exist(chain, story):
    assert chain.run("order 4").output == f"order 4 (minilm): open; client {story.addr['client']}; max price 25 VRC"
    with pytest.raises(ToolError, match="order 9 does not exist: the market has orders 1 to 4"):
        chain.run("order 9")


def test_slashes_say_who_for_which_order_how_much_and_why(chain, story):
    out = chain.run("who was slashed?").output
    assert out.splitlines() == [
        "2 slashes, latest first:",
        f"order 3: {story.addr['provider']} slashed 360 VRC to {story.addr['validator']}, 180 VRC burnt: lost a "
        "dispute: the provider missed its move's deadline",
        f"order 2: {story.addr['provider2']} slashed 100 VRC to {story.addr['client']}: missed its deadline"]
    mine = chain.run(f"slashes of {story.addr['provider2']}").output
    assert mine.splitlines()[0] == "1 slash, latest first:" and "order 2:" in mine and "order 3:" not in mine


def test_disputes_list_each_game_and_its_outcome(chain, story):
    out = chain.run("disputes").output
    assert out.splitlines()[1:] == [f"order 3: challenged by {story.addr['validator']} (bond {vrc(story.bond)}): "
                                    "provider lost: the provider missed its move's deadline"]


def test_providers_are_listed_by_stake_with_their_record(chain, story):
    out = chain.run("providers").output
    reg = story.c["deployer"][2]
    p, p2 = reg.node(story.addr["provider"]), reg.node(story.addr["provider2"])
    assert (p.stake, p.reputation, p2.stake, p2.reputation) == (640 * TOKEN, 0, 400 * TOKEN, -1)
    assert out.splitlines() == [
        "2 providers, by stake:",
        f"{story.addr['provider']}: stake 640 VRC (locked 0 VRC), floor 1 VRC, reputation 0, 2 orders won, "
        "serves minilm",
        f"{story.addr['provider2']}: stake 400 VRC (locked 0 VRC), floor 0.5 VRC, reputation -1, 1 order won, "
        "serves minilm"]  # the validator is not a provider


def test_balances_show_tokens_and_stake(chain, story):
    token = story.c["deployer"][1]
    out = chain.run(f"balance {story.addr['provider'].lower()}").output  # any case
    assert out == (f"{story.addr['provider']}: {vrc(token.balance_of(story.addr['provider']))} in tokens; provider "
                   "stake 640 VRC (locked 0 VRC, free 640 VRC), reputation 0, price floor 1 VRC")
    client = chain.run(f"how many tokens does {story.addr['client']} have").output
    # 100000 funded, 40 paid for order 1, 30 back and 100 of provider2's collateral for order 2, 25 in escrow
    assert client == f"{story.addr['client']}: 100035 VRC in tokens; not registered (no stake)"


def test_the_chain_tool_without_a_chain_says_what_to_do(story, tmp_path):
    with pytest.raises(ToolError, match="runs without a deployment.*veracity devnet up"):
        tool("chain").run("orders")
    gone = story.dep.model_copy(update={"rpc_url": f"http://127.0.0.1:{free_port()}"})
    start = time.monotonic()
    with pytest.raises(ToolError, match=r"cannot read the chain at http://127\.0\.0\.1:\d+ .*devnet running"):
        tool("chain", ToolContext(gone, None)).run("orders")
    assert time.monotonic() - start < 30


# retrieval -----------------------------------------------------------------------------------

def test_documents_split_into_passages_under_their_headings():
    text = "# Slashing\n\nA provider that misses its deadline\nloses its collateral.\n\n\n## Fees\n\n" \
           "The market keeps 5%.\n\n" + "word " * 300
    passages = split_passages(text, limit=200)
    assert passages[:2] == ["# Slashing A provider that misses its deadline loses its collateral.",
                            "## Fees The market keeps 5%."]
    assert all(len(p) <= 200 for p in passages) and " ".join(passages[2:]).split() == ["word"] * 300


def test_passages_are_cut_to_what_minilm_takes():
    count = minilm_token_count()
    hexes = " ".join("0x" + hashlib.sha256(bytes([i])).hexdigest() for i in range(20))  # far more tokens than words
    assert count(hexes) > 256
    pieces = fit_tokens(hexes, count)
    assert len(pieces) > 1 and all(count(p) <= 256 for p in pieces) and " ".join(pieces) == hexes


def test_ranking_is_by_cosine_similarity_best_first():
    vectors = np.array([[1.0, 0, 0], [0.6, 0.8, 0], [0, 0, 2.0], [0.6, 0.8, 0]])
    assert rank(np.array([0.0, 1.0, 0.0]), vectors, 2) == [(1, pytest.approx(0.8)), (3, pytest.approx(0.8))]
    assert rank(np.array([0.0, 0.0, 5.0]), vectors, 1) == [(2, 1.0)]  # length does not matter


@pytest.mark.parametrize("options,message", [
    ({}, "needs `docs:`"),
    ({"docs": "/nonexistent/docs"}, "does not exist"),
])
def test_retrieval_without_documents_says_what_to_fix(options, message, tmp_path):
    with pytest.raises(ToolError, match=message):
        tool("retrieve", **options)
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")
    with pytest.raises(ToolError, match="holds no .md or .txt files"):
        tool("retrieve", docs=str(tmp_path))


DOCS = {
    "slashing.md": "# Slashing\n\nA provider that misses its deadline loses its collateral to the client, "
                   "and one that loses a dispute game is slashed to the challenger.\n\n"
                   "Half of a slash in a dispute is burnt.",
    "cooking.txt": "To bake bread, mix flour, water, salt and yeast, let the dough rise, then bake it "
                   "in a hot oven.\n\nA sourdough starter replaces the yeast.",
    "sub/fees.md": "The market keeps a fee of five percent of every order's price in its fee pool.",
}


@pytest.fixture
def gateway(net, tmp_path):
    """A gateway on a fresh devnet with one provider daemon serving minilm."""
    net.provider(1, ["minilm"])
    port = free_port()
    log = open(tmp_path / "gateway.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "veracity.cli", "gateway", "run", "--port", str(port),
                             "--deployment", str(net.dep_file), "--account", "4", "--window-requests", "64",
                             "--window-s", "30", "--challenge-window", "4"], stdout=log, stderr=subprocess.STDOUT)
    net.procs.append(proc)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 120
    while True:
        try:
            httpx.get(f"{url}/v1/models", timeout=2)
            break
        except httpx.HTTPError:
            assert time.monotonic() < end and proc.poll() is None, (tmp_path / "gateway.log").read_text()
            time.sleep(0.2)
    yield url
    print((tmp_path / "gateway.log").read_text())


def test_retrieval_finds_passages_through_the_gateway_with_receipts(gateway, net, tmp_path):
    docs = tmp_path / "docs"
    for name, text in DOCS.items():
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text(text)
    retrieve = tool("retrieve", ToolContext(net.dep, gateway), docs=str(docs), top_k=2)
    assert retrieve.name == "retrieve" and "documents of docs/" in retrieve.description
    first = retrieve.run("What happens to a provider that misses its deadline?")
    lines = first.output.splitlines()
    assert len(lines) == 2 and lines[0].startswith("[slashing.md, ")
    assert "misses its deadline loses its collateral" in lines[0]
    assert "bake" not in first.output
    # the first call embedded the five passages and the query, each with the provider's signed receipt
    assert len(first.receipts) == 6
    market = net.dep.clients(net.accts[0].key)[3]
    for r in first.receipts:
        receipt = Receipt.model_validate(r)
        assert receipt.signer() == receipt.provider == net.accts[1].address
        assert market.order(receipt.lease).provider == net.accts[1].address  # a lease on this chain
    # later calls use the cached passages: the query's receipt and those of the passages shown
    again = retrieve.run("how do I bake bread")
    assert again.output.splitlines()[0].startswith("[cooking.txt, ") and len(again.receipts) == 3
    assert all(r in first.receipts for r in again.receipts[:2]) and again.receipts[2] not in first.receipts
    assert EMBED_BATCH == 64  # the gateway's batch limit (veracity.gateway.app.MAX_BATCH)
    with pytest.raises(ToolError, match="give a question"):
        retrieve.run("   ")


def test_retrieval_without_a_gateway_says_so(tmp_path):
    (tmp_path / "a.md").write_text("hello")
    with pytest.raises(ToolError, match="without a gateway"):
        tool("retrieve", docs=str(tmp_path)).run("hello")
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ToolError, match=f"the gateway at {dead} did not answer"):
        tool("retrieve", ToolContext(None, dead), docs=str(tmp_path)).run("hello")


# another agent -------------------------------------------------------------------------------

R1 = {"lease": 1, "index": 0, "output_hash": "0x01"}
R2 = {"lease": 1, "index": 1, "output_hash": "0x02"}
R3 = {"lease": 2, "index": 0, "output_hash": "0x03"}


def other_agent() -> FastAPI:
    """Another agent's endpoint, answering in ``veracity agent serve``'s shape."""
    app = FastAPI()

    @app.post("/run")
    async def run(req: Request):
        task = (await req.json())["task"]
        return {"answer": f"order 3 was overturned (asked: {task})",
                "run": [{"event": "run", "task": task}, {"event": "chat", "step": 0, "receipt": R1},
                        {"event": "tool", "name": "retrieve", "receipts": [R2, R3], "error": None},
                        {"event": "tool", "name": "calculator", "receipts": []},
                        {"event": "chat", "step": 1, "receipt": R2}, {"event": "end", "answer": "..."}]}

    @app.post("/member/tasks")
    async def member(req: Request):
        return {"answer": "done", "run": [{"event": "chat", "step": 0, "receipt": R3}]}

    @app.get("/member/card")
    async def member_card():
        return {"name": "member", "registrations": [{"agentId": 7, "agentRegistry": "eip155:31337:0x00"}]}

    @app.post("/broken")
    async def broken():
        from fastapi.responses import JSONResponse

        return JSONResponse({"detail": "the gateway is down"}, 503)

    @app.post("/stranger")
    async def stranger():
        return {"result": "not an agent"}

    @app.post("/slow")
    async def slow():
        await asyncio.sleep(2)
        return {"answer": "late", "run": []}

    return app


@pytest.fixture(scope="module")
def agent_url():
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(other_agent(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < end, "the other agent's server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_another_agents_answer_comes_back_with_its_runs_receipts(agent_url):
    tools = build_tools([ToolSpec(name="call_agent", url=f"{agent_url}/run", agent="analyst"),
                         ToolSpec(name="calculator")], ToolContext(None, None))
    assert list(tools) == ["analyst", "calculator"]
    assert "the analyst agent" in tools["analyst"].description
    assert all("\n" not in t.description for t in tools.values())
    result = tools["analyst"].run("what happened to order 3?")
    assert result.output == "order 3 was overturned (asked: what happened to order 3?)"
    assert result.receipts == [R1, R2, R3, R2]  # its model calls' and its tools', in its record's order
    assert tool("call_agent", url=f"{agent_url}/run").name == "call_agent"
    assert result.delegated and result.member is None  # its card is not beside its endpoint: no agent id


def test_a_members_work_is_marked_with_its_agent_id_from_its_card(agent_url):
    member = tool("call_agent", url=f"{agent_url}/member/tasks", agent="member")
    record = RunRecord()
    assert run_tool(member, "member", "do it", 1, record) == "done"
    (event,) = record.of("tool")
    assert (event["member"], event["receipts"]) == (7, [R3])  # what a validator's split pays agent 7 for
    run_tool(tool("calculator"), "calculator", "1 + 1", 2, record)
    assert "member" not in record.of("tool")[1]  # the agent's own tools' work is its own


def test_another_agent_that_fails_is_reported_clearly(agent_url):
    with pytest.raises(ToolError, match=r"refused the task \(503\): the gateway is down"):
        ask_agent(f"{agent_url}/broken", "hi")
    with pytest.raises(ToolError, match="not an agent's answer"):
        ask_agent(f"{agent_url}/stranger", "hi")
    with pytest.raises(ToolError, match="did not answer within 0.5 s"):
        ask_agent(f"{agent_url}/slow", "hi", timeout=0.5)
    dead = f"http://127.0.0.1:{free_port()}/run"
    with pytest.raises(ToolError, match="cannot reach the agent .* is `veracity agent serve` running"):
        ask_agent(dead, "hi")
    with pytest.raises(ToolError, match="give the task"):
        ask_agent(f"{agent_url}/run", "  ")
    with pytest.raises(ToolError, match="needs `url:`"):
        tool("call_agent", agent="analyst")
