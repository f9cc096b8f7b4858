"""The agent loop (``veracity agent run``): the model picks a tool or answers, the tool runs, its
result goes back into the context, until the model answers or a budget (steps, tokens) stops it.

Every model call goes through the gateway, so every answer carries a receipt tied to the chain;
the run's record (``agents.record``) keeps each receipt and each tool call's input and output
with their hashes.

**Tool calls under the JSON grammar** (``grammar: true``, the default). A call is the object
``{"tool": NAME, "input": TEXT}``; the first call of a run with tools names a tool (the grammar
leaves ``answer`` out until a result is in), so the agent reads before it answers. The runtime writes the object's structure itself and lets the
model fill only its two values, each a call that stops at the closing quote: the tool's name is
then the tool whose name the model's text starts with (the grammar's choice among the names:
the longest shared prefix), the input is any string (escaped by the runtime). So every call is
valid JSON naming a real tool, whatever a small model writes, and every piece of it came from
a verified model call. With ``grammar: false`` the model writes the whole object (what
``bench/agents.py`` compares).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import httpx

from veracity.agents.record import RunRecord, sha256_text
from veracity.agents.spec import AgentSpec
from veracity.errors import VeracityError

ANSWER = "answer"  # the pseudo-tool that ends the run with its input as the answer
TOOL_TOKENS = 8  # a tool name's generation
INPUT_TOKENS = 24  # a tool input's
ANSWER_TOKENS = 96  # the answer's
FREE_TOKENS = 96  # a whole call written by the model (grammar off)


class AgentError(VeracityError):
    """The agent could not run: the gateway refused or was unreachable, or a budget is invalid."""


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    receipt: dict[str, Any]
    start: int
    end: int


Complete = Callable[[str, int], Completion]  # (prompt, max_tokens) -> one verified model call


def gateway_completer(url: str, model: str, timeout: float = 300) -> Complete:
    """Model calls through the gateway's ``completions`` (``url``: its /v1 URL; the prompt already
    templated)."""
    client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
    gateway = url

    def complete(prompt: str, max_tokens: int) -> Completion:
        start = time.time_ns()
        try:
            resp = client.post("/completions", json={"model": model, "prompt": prompt, "max_tokens": max_tokens,
                                                        "stop": ['"']})
        except httpx.HTTPError as exc:
            raise AgentError(f"the gateway at {gateway} did not answer ({exc}); is it running?") from None
        if resp.status_code != 200:
            try:
                why = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                why = resp.text[:200]
            raise AgentError(f"the gateway refused a model call ({resp.status_code}): {why}")
        body = resp.json()
        usage = body.get("usage") or {}
        return Completion(body["choices"][0]["text"], int(usage.get("prompt_tokens", 0)),
                          int(usage.get("completion_tokens", 0)), body["veracity"]["receipt"], start, time.time_ns())

    return complete


def chat_template(model: str) -> Callable[[list[dict[str, str]]], str]:
    """The model file's own chat template (SmolLM2's ChatML), read from its GGUF header only."""
    from veracity.models.gguf import read_meta, smollm2_path
    from veracity.models.gguf_text import ChatTemplate

    if model != "smollm2":
        raise AgentError(f"agents run on the chat LLM (model: smollm2), not {model!r}")
    template = ChatTemplate.from_gguf(read_meta(smollm2_path()))
    return lambda messages: template.render(messages, add_generation_prompt=True)


def choose(text: str, options: list[str] | tuple[str, ...], fallback: str) -> str:
    """The grammar's choice among ``options`` for what the model wrote: the option it spells out,
    else the one sharing the longest prefix with it (ties: the first listed), else ``fallback``."""
    t = text.strip().lower()
    for option in options:
        if t == option.strip():
            return option

    def shared(option: str) -> int:
        n = 0
        while n < min(len(t), len(option)) and t[n] == option[n]:
            n += 1
        return n

    best = max(options, key=shared)
    return best if shared(best) > 0 else fallback


def slot(text: str) -> str:
    """A query form's value: the first address, number or word the model wrote."""
    m = re.search(r"0x[0-9a-fA-F]{40}|\d+|[^\s\"]+", text)
    return m.group(0) if m else ""


def pick_tool(text: str, names: list[str]) -> str:
    """The tool the grammar picks for what the model wrote: ``answer`` when it shares nothing
    with any name and answering is allowed, else the first name."""
    return choose(text, names, ANSWER if ANSWER in names else names[0])


def parse_free(text: str, names: list[str]) -> tuple[str, str] | None:
    """A tool call the model wrote whole (grammar off): (tool, input), or None when it is not a
    JSON object naming a known tool with a string input."""
    m = re.search(r"\{.*\}", text, re.S)
    if m is None:
        return None
    try:
        obj = json.loads(m.group(0))
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("tool") not in names or not isinstance(obj.get("input"), str):
        return None
    return obj["tool"], obj["input"]


EXAMPLE = """Example. Question: how much is 2 + 2, in words?
{"tool": "calculator", "input": "2 + 2"}
Result of calculator: 4
{"tool": "answer", "input": "Two plus two is four."}"""


def system_prompt(spec: AgentSpec, tools: dict[str, Any]) -> str:
    """The agent's own instructions, then its tools (one line each), the call format and a short
    worked example (a small model follows an example better than a rule)."""
    lines = [spec.system.strip(), "", "Tools (use one at a time):"]
    lines += [f"- {name}: {tool.description}" for name, tool in tools.items()]
    lines += [f"- {ANSWER}: your final answer to the question, as the input.", "",
              'Reply with one JSON object only: {"tool": "<tool name>", "input": "<text>"}. Use a tool '
              "first when the question needs data; answer once a result has what you need.", "", EXAMPLE]
    return "\n".join(lines)


@dataclass
class Run:
    answer: str
    reason: str  # answered, steps, tokens
    record: RunRecord


def run_agent(spec: AgentSpec, task: str, complete: Complete, render: Callable[[list[dict[str, str]]], str],
              tools: dict[str, Any], record: RunRecord | None = None, spec_sha256: str = "") -> Run:
    """Run ``task`` to an answer; every model call through ``complete``, every event into ``record``."""
    record = record if record is not None else RunRecord()
    names = [*tools, ANSWER]
    record.add("run", run_id=secrets.token_hex(8), agent=spec.name, model=spec.model, task=task,
               start=time.time_ns(), spec_sha256=spec_sha256)
    system = {"role": "system", "content": system_prompt(spec, tools)}
    turns: list[dict[str, str]] = []  # the tool calls and results kept (memory)
    used = {"in": 0, "out": 0}
    steps = 0

    def call(prompt: str, max_tokens: int, purpose: str, step: int) -> str:
        c = complete(prompt, max_tokens)
        used["in"] += c.input_tokens
        used["out"] += c.output_tokens
        record.add("chat", step=step, purpose=purpose, model=spec.model, start=c.start, end=c.end,
                   prompt_sha256=sha256_text(prompt), output=c.text, output_sha256=sha256_text(c.text),
                   input_tokens=c.input_tokens, output_tokens=c.output_tokens, receipt=c.receipt)
        return c.text

    def finish(answer: str, reason: str) -> Run:
        record.add("end", answer=answer, reason=reason, end=time.time_ns(), steps=steps, input_tokens=used["in"],
                   output_tokens=used["out"])
        return Run(answer, reason, record)

    while True:
        prompt = render([system, {"role": "user", "content": task}, *turns[-2 * spec.memory:]])
        out_of = "steps" if steps >= spec.budget.steps else "tokens" if used["out"] >= spec.budget.tokens else None
        if out_of:  # a budget is spent: the model must answer now
            head = prompt + '{"tool": "answer", "input": "'
            return finish(call(head, ANSWER_TOKENS, "answer", steps).strip(), out_of)
        if spec.grammar:  # the first call must be a tool's when there are tools: read before answering
            head = prompt + '{"tool": "'
            name = pick_tool(call(head, TOOL_TOKENS, "tool", steps), names if steps or not tools else [*tools])
            head += name + '", "input": "'
            forms = getattr(tools.get(name), "forms", ())
            if forms:  # the tool's inputs are a choice too (a query form, then its value if it takes one)
                form = choose(call(head, TOOL_TOKENS, "form", steps), forms, forms[0])
                value = slot(call(head + form, INPUT_TOKENS, "input", steps)) if form.endswith(" ") else ""
                text = (form + value).strip()
            else:
                text = call(head, ANSWER_TOKENS if name == ANSWER else INPUT_TOKENS, "input", steps).strip()
        else:
            picked = parse_free(call(prompt, FREE_TOKENS, "tool", steps), names)
            if picked is None:  # not a valid call: what it wrote is taken as the answer
                return finish(record.of("chat")[-1]["output"].strip(), "answered")
            name, text = picked
        if name == ANSWER:
            return finish(text, "answered")
        if turns and turns[-2]["content"] == json.dumps({"tool": name, "input": text}):
            head = prompt + '{"tool": "answer", "input": "'  # the same call again: it has what it asked for
            return finish(call(head, ANSWER_TOKENS, "answer", steps).strip(), "answered")
        steps += 1
        turns.append({"role": "assistant", "content": json.dumps({"tool": name, "input": text})})
        result = run_tool(tools[name], name, text, steps, record)
        turns.append({"role": "user", "content": f"Result of {name}: {result}\nAnswer the question from this result "
                                                 f"if it is enough."})


def run_tool(tool: Any, name: str, text: str, step: int, record: RunRecord) -> str:
    """Run one tool call into the record; a tool's refusal goes back to the model as its result."""
    start = time.time_ns()
    error, receipts, output = None, [], ""
    try:
        result = tool.run(text)
        output, receipts = result.output, list(result.receipts)
    except VeracityError as exc:
        error = output = str(exc)
    record.add("tool", step=step, name=name, start=start, end=time.time_ns(), input=text,
               input_sha256=sha256_text(text), output=output, output_sha256=sha256_text(output), error=error,
               receipts=receipts)
    return output


def default_record_path(folder: Path, agent: str) -> Path:
    return folder / f"{agent}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.jsonl"
