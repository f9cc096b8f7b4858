"""The agent runtime: its own overhead over the bare model calls, and how many tool calls are valid
with and without the JSON grammar.

Runs the chain analyst (``examples/agents/chain-analyst.yaml``) on a set of questions against a
fresh anvil devnet (its chain tool reads it), with SmolLM2 called in this process through the
same exact decoder the providers run (the gateway adds HTTP and receipts, not model behaviour:
the answers are the same bits). Each question is run three times: with ``grammar: true`` and
``false`` (the model choosing its tool calls: ``first`` and ``answer: quote`` off), and as the
analyst ships (the chain tool reads the question, the answer is grounded in its result).

* ``agent_overhead``: the runtime's own time (prompts, hashing, the record) over the model calls'
  time, summed over every run (tool calls excluded: they are the tools' time, not the runtime's);
* ``tool_calls_valid_grammar`` / ``tool_calls_valid_free``: the share of tool calls that are a
  JSON object naming a real tool with a string input;
* ``tool_names_spelled_grammar``: the share of grammar-mode calls where the model's own text was
  the tool's name exactly (the rest the grammar chose by prefix).

    python bench/agents.py --json bench/results/agents.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import write_json  # bench/_common.py (the script folder is on sys.path)
from rich.console import Console
from rich.table import Table

from veracity.agents.record import RunRecord
from veracity.agents.runtime import ANSWER, chat_template, local_completer, parse_free, run_agent
from veracity.agents.spec import load_agent
from veracity.agents.tools import ToolContext, build_tools
from veracity.chain.anvil import Anvil
from veracity.chain.devnet import deploy, dev_accounts

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "Which provider was slashed, for which order, and why?",
    "How many orders are on the market?",
    "Which providers are registered, and what do they stake?",
    "What is 17 * 23?",
    "Were there any disputes?",
    "What is the state of order 1?",
    "What is the balance of 0x70997970C51812dc3A010C7d01b50e0d17dc79C8?",
    "How much is 2.5 VRC plus 0.75 VRC?",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--questions", type=int, default=len(QUESTIONS), help="how many of the questions to ask")
    ap.add_argument("--steps", type=int, default=2, help="each run's tool-call budget")
    args = ap.parse_args()
    console = Console()
    render = chat_template("smollm2")
    base = load_agent(ROOT / "examples" / "agents" / "chain-analyst.yaml")
    node = Anvil(accounts=4)
    rows, model_s, tool_s, wall_s = [], 0.0, 0.0, 0.0
    valid = {True: [0, 0], False: [0, 0]}  # grammar -> [valid, calls]
    spelled = [0, 0]
    grounding: dict[str, int] = {}  # the shipped analyst's answers: how each was grounded (quote, checked, replaced)
    try:
        accts = dev_accounts(4)
        dep = deploy(node.rpc_url, accts[0], accts)
        for question in QUESTIONS[:args.questions]:
            for grammar in (True, False, None):  # None: the analyst as shipped (first: chain, answer: quote)
                spec = base if grammar is None else base.model_copy(update={
                    "grammar": grammar, "first": None, "answer": "free",
                    "budget": base.budget.model_copy(update={"steps": args.steps})})
                tools = build_tools(spec.tools, ToolContext(dep, None, accts[0].key))
                names = [*tools, ANSWER]
                timings: list[float] = []
                t = time.perf_counter()
                run = run_agent(spec, question, local_completer(timings=timings), render, tools, RunRecord())
                wall = time.perf_counter() - t
                tools_time = sum((e["end"] - e["start"]) / 1e9 for e in run.record.of("tool"))
                wall_s, model_s, tool_s = wall_s + wall, model_s + sum(timings), tool_s + tools_time
                chats = run.record.of("chat")
                calls = [c for c in chats if c["purpose"] == "tool"]
                if grammar is None:
                    how = run.record.of("end")[0]["grounded"]
                    grounding[how] = grounding.get(how, 0) + 1
                elif grammar:  # every call is built by the runtime: valid by construction; count what the model spelled
                    valid[True][0] += len(calls)
                    spelled[0] += sum(c["output"].strip().lower() in names for c in calls)
                    spelled[1] += len(calls)
                else:
                    valid[False][0] += sum(parse_free(c["output"], names) is not None for c in calls)
                if grammar is not None:
                    valid[grammar][1] += len(calls)
                rows.append({"question": question, "grammar": grammar, "answer": run.answer, "reason": run.reason,
                             "tool_calls": len(run.record.of("tool")), "model_calls": len(chats),
                             "wall_s": wall, "model_s": sum(timings), "tools_s": tools_time})
                mode = {True: "grammar", False: "free   ", None: "shipped"}[grammar]
                console.print(f"[dim]{mode} {question[:50]!r}: {run.answer[:70]!r} "
                              f"({run.reason}, {wall:.1f}s)[/]")
    finally:
        node.stop()
    overhead = (wall_s - model_s - tool_s) / model_s
    result = {"agent_overhead": overhead,
              "tool_calls_valid_grammar": valid[True][0] / max(1, valid[True][1]),
              "tool_calls_valid_free": valid[False][0] / max(1, valid[False][1]),
              "tool_names_spelled_grammar": spelled[0] / max(1, spelled[1]),
              "tool_calls": {"grammar": valid[True][1], "free": valid[False][1]},
              "analyst_grounding": grounding,
              "model_s": model_s, "tools_s": tool_s, "wall_s": wall_s, "runs": rows,
              "model": "smollm2 (SmolLM2-135M-Instruct, Q4_1, exact), in process"}
    table = Table("measure", "value", title="agent runtime (chain analyst, SmolLM2-135M)")
    table.add_row("agent_overhead (runtime time over model time)", f"{overhead:.4f}")
    table.add_row("tool calls valid, grammar", f"{result['tool_calls_valid_grammar']:.2f} of {valid[True][1]}")
    table.add_row("tool calls valid, free", f"{result['tool_calls_valid_free']:.2f} of {valid[False][1]}")
    table.add_row("tool names the model spelled itself (grammar)", f"{result['tool_names_spelled_grammar']:.2f}")
    table.add_row("shipped analyst's answers: quote / checked / replaced",
                  " / ".join(str(grounding.get(k, 0)) for k in ("quote", "checked", "replaced")))
    table.add_row("model time / tools time / wall", f"{model_s:.1f}s / {tool_s:.2f}s / {wall_s:.1f}s")
    console.print(table)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
