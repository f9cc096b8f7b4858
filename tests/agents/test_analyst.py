"""The chain analyst (``examples/agents/chain-analyst.yaml``) answers questions about a devnet's
story from the chain, with SmolLM2 itself deciding what the answer is: each answer is checked
against what the chain holds, not against text written down here. The model runs in this
process (``local_completer``: the providers' exact decoder, so the same words the gateway would
answer; the gateway's receipts are tests/agents/test_agents_e2e.py's). And the grounding that
turns what a small model said into an answer, on its own."""

from pathlib import Path

import pytest
from chainstory import played

from veracity.agents.runtime import chat_template, grounded, local_completer, run_agent
from veracity.agents.spec import load_agent, parse_agent
from veracity.agents.tools import ToolContext, build_tools, vrc
from veracity.errors import InputError

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def story():
    yield from played()


@pytest.fixture(scope="module")
def ask(story):
    spec = load_agent(ROOT / "examples" / "agents" / "chain-analyst.yaml")
    tools = build_tools(spec.tools, ToolContext(story.dep, None))
    complete, render = local_completer(), chat_template("smollm2")

    def ask(question):
        run = run_agent(spec, question, complete, render, tools)
        chats = run.record.of("chat")
        assert [c["purpose"] for c in chats] == ["answer"]  # one model call: the chain tool read the question
        assert run.record.of("tool")[0]["input"] == question
        return run.answer, run.record.of("end")[0]
    return ask


def test_the_analyst_answers_five_questions_about_the_devnet_as_the_chain_says(story, ask):
    market, token = story.market("deployer"), story.c["deployer"][1]
    registry = story.c["deployer"][2]
    wrong = {}

    # which provider was slashed, for which order, and why: a slash the Registry logged, its order
    # (the Market's settlement in the same transaction) and its cause
    answer, end = ask("Which provider was slashed, for which order, and why?")
    slashes = registry.contract.events.Slashed().get_logs(from_block=0)
    causes = {"TimedOut": "missed its deadline", "Overturned": "lost a dispute"}
    settled = {e["transactionHash"]: (e["args"]["order_id"], causes[e["event"]]) for name in causes
               for e in getattr(market.contract.events, name)().get_logs(from_block=0)}
    told = [(s["args"]["node"], *settled[s["transactionHash"]]) for s in slashes]
    if not any(f"order {oid}:" in answer and who in answer and why in answer for who, oid, why in told):
        wrong["slashed"] = (answer, told)

    answer, _ = ask("How many orders are there?")
    if str(market.fn.order_count().call()) not in answer.split():
        wrong["orders"] = answer

    answer, _ = ask("How much was the provider of order 1 paid?")
    (paid,) = market.contract.events.Finalized().get_logs(from_block=0)
    if paid["args"]["order_id"] != 1 or vrc(paid["args"]["paid"]) not in answer:
        wrong["paid"] = (answer, paid["args"])

    answer, _ = ask("What is the state of order 4?")
    if market.order(4).state_name not in answer:
        wrong["state"] = answer

    who = story.addr["provider"]
    answer, _ = ask(f"What is the balance of {who}?")
    if vrc(token.balance_of(who)) not in answer or who not in answer:
        wrong["balance"] = (answer, vrc(token.balance_of(who)))
    assert not wrong, wrong


def test_what_a_small_model_says_is_grounded_in_the_data():
    data = ["2 slashes, latest first:\norder 3: 0x90F79bf6EB2c4f870365E785982E1f101E93b906 slashed 360 VRC: lost a "
            "dispute\norder 2: 0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65 slashed 100 VRC: missed its deadline"]
    third, second = data[0].splitlines()[1:]
    task = "Which provider missed its deadline?"
    # a fragment of a line (cut short, in another case, after "The") is a quote of the whole line
    assert grounded(" The order 2: 0x15d34aaf54267db7d7c367839aaf71a00a2c6a65 slashed ", task, data) == (
        second, "quote", [second])
    assert grounded("0x90F79bf6EB2c4f870365E785982E1f101E93b906 = 0x90", task, data)[:2] == (third, "quote")
    # its own words stand when every address and number in them is in the data, as a whole word
    assert grounded("The answer is: two providers, 2 in all.", task, data) == (
        "two providers, 2 in all", "checked", [data[0].splitlines()[0], second])  # the lines naming 2
    # a short shared beginning is not a quote ("provider " is in no line here, "slashed " is, but is
    # not most of what was said); words that name nothing are not checked: replaced
    assert grounded("Slashed providers miss deadlines", task, data) == (second, "replaced", [second])
    # a number the data does not hold (36 is not 360), or nothing said, is replaced too; a longer
    # sentence by the line holding most of the names it got right (3 and 360 over the task's words)
    assert grounded("The order 3 was slashed 360 by provider 7, which is the one-step of the one-step", task,
                    data) == (third, "replaced", [third])
    assert grounded("36 VRC", task, data) == (second, "replaced", [second])
    assert grounded(" ", task, data) == (second, "replaced", [second])


def test_an_agent_cannot_ask_first_a_tool_it_does_not_have():
    with pytest.raises(InputError, match=r"first: 'chain' is not one of its tools \(calculator\)"):
        parse_agent("name: a\ntools: [{name: calculator}]\nfirst: chain\n")
    with pytest.raises(InputError, match="answer"):
        parse_agent("name: a\nanswer: verbatim\n")
