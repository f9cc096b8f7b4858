"""The agent runtime's own parts: the agent file, the grammar's choices, a run's record and how a
run with no or broken receipts is judged (the loop end to end runs against a gateway)."""

import json

import pytest

from veracity.agents.record import RunRecord, read_record
from veracity.agents.runtime import ANSWER, choose, parse_free, pick_tool, slot, system_prompt
from veracity.agents.spec import load_agent, parse_agent
from veracity.agents.trace import check_run
from veracity.errors import InputError

NAMES = ["chain", "calculator", ANSWER]


def test_the_grammar_always_names_a_real_tool():
    assert pick_tool("chain", NAMES) == "chain"
    assert pick_tool(" Calc", NAMES) == "calculator"  # the name it starts to spell
    assert pick_tool("ch", NAMES) == "chain"
    assert pick_tool("The order was slashed", NAMES) == ANSWER  # not a tool: an answer
    assert pick_tool("", NAMES) == ANSWER
    assert pick_tool("The order", ["chain", "calculator"]) == "chain"  # answering not allowed yet: a tool


def test_a_tools_input_forms_are_a_choice_with_a_value_after_them():
    forms = ("slashes", "disputes", "orders", "order ", "balance ")
    assert choose("slash", forms, forms[0]) == "slashes"
    assert choose("order 3", forms, forms[0]) == "order "  # a form that takes a value
    assert choose("2 + 2", forms, forms[0]) == "slashes"  # nothing shared: the first form
    assert slot("3: provider 0x9965") == "3"
    assert slot(" 0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc was") == "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"


def test_a_free_call_is_valid_only_as_a_json_object_naming_a_tool():
    assert parse_free('{"tool": "chain", "input": "orders"}', NAMES) == ("chain", "orders")
    assert parse_free('Sure! {"tool": "answer", "input": "4"} done', NAMES) == (ANSWER, "4")
    for bad in ['{"tool": "chain"}', '{"tool": "web", "input": "x"}', '{"tool": "chain", "input": 3}',
                "{tool: chain}", "no call at all"]:
        assert parse_free(bad, NAMES) is None, bad


def test_an_agent_file_says_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match="appears twice"):
        parse_agent("name: a\nname: b\n")
    with pytest.raises(InputError, match="budget.steps"):
        parse_agent("name: a\nbudget: {steps: 0}\n")
    with pytest.raises(InputError, match="tools.0.name"):
        parse_agent("name: a\ntools: [{name: browser}]\n")
    with pytest.raises(InputError, match="unknown field"):
        parse_agent("name: a\nprompt: hi\n")
    with pytest.raises(InputError, match="same name"):
        parse_agent("name: a\ntools: [{name: calculator}, {name: calculator}]\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "a.yaml").write_text("name: a\ntools: [{name: retrieve, docs: docs}]\n")
    assert load_agent(tmp_path / "a.yaml").tools[0].docs == str((tmp_path / "docs").resolve())
    with pytest.raises(InputError, match="not found"):
        load_agent(tmp_path / "missing.yaml")


def test_the_example_agent_loads_and_its_prompt_lists_its_tools():
    spec = load_agent("examples/agents/chain-analyst.yaml")
    tools = {t.name: type("T", (), {"description": f"the {t.name} tool"})() for t in spec.tools}
    prompt = system_prompt(spec, tools)
    assert "- chain: the chain tool" in prompt and f"- {ANSWER}:" in prompt and '{"tool":' in prompt
    # the collective's: its members are call_agent tools, the researcher asked first
    collective = load_agent("examples/agents/collective.yaml")
    assert [(t.name, t.agent) for t in collective.tools] == [("call_agent", "researcher"), ("call_agent", "writer")]
    assert collective.first == "researcher" and collective.answer == "quote"
    assert load_agent("examples/agents/researcher.yaml").tools[0].docs.endswith("/docs")
    assert load_agent("examples/agents/writer.yaml").tools == []


def test_a_record_is_written_as_it_goes_and_read_back(tmp_path):
    path = tmp_path / "run.jsonl"
    record = RunRecord(path)
    record.add("run", run_id="r", agent="a", model="smollm2", task="t", start=1, spec_sha256="")
    record.add("chat", step=0, receipt={"lease": 1, "index": 0})
    record.add("tool", step=1, name="retrieve", receipts=[{"lease": 2, "index": 5}])
    record.add("chat", step=1, receipt={"lease": 1, "index": 1})
    back = read_record(path)
    assert back.events == record.events
    assert [r["index"] for r in back.receipts] == [0, 5, 1]  # in the order the calls were made
    path.write_text('{"event": "chat"}\n')
    with pytest.raises(InputError, match="no `run` event"):
        read_record(path)
    path.write_text("not json\n")
    with pytest.raises(InputError, match="not JSON"):
        read_record(path)


def test_a_run_without_receipts_or_with_a_broken_one_is_not_verified():
    record = RunRecord()
    record.add("run", run_id="r", agent="a", model="smollm2", task="t", start=1, spec_sha256="")
    assert check_run(record, None, "").verdict == "failed"  # nothing checked: nothing verified
    record.add("chat", step=0, receipt=json.loads('{"lease": "x"}'))
    check = check_run(record, None, "")
    assert check.verdict == "failed" and "not a receipt" in check.checks[0].reason
