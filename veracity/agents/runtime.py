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

**A small model's scaffolding** (``first`` and ``answer: quote``, the chain analyst's). SmolLM2-135M
reads a question and the data that answers it well enough to point at the answer, but it cannot
choose among a tool's query forms (``bench/agents.py``: it copies the prompt's example), and its
own sentences garble names. So an agent may name a tool it asks ``first``, with the task itself
as the input (the chain tool reads questions), and ``answer: quote`` answers from the tools'
results (``quote_prompt``) and grounds what the model said in them (``grounded``): a fragment of
a line of the data is the whole line; a short answer stands when every address and number it
names is in the data; anything else is replaced by the data's line it points at. The
record keeps the model's own words (its ``chat`` event) and how the answer was grounded (the
``end`` event's ``grounded`` and ``cited``).
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
QUOTE_TOKENS = 48  # a quoted answer's (``answer: quote``: one line)
QUOTE_MIN_CHARS = 8  # a fragment this long or longer that a line of the data holds is a quote of that line
SHORT_WORDS = 8  # an answer this short may stand in its own words (a value), when its names are in the data


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


Complete = Callable[[str, int, str], Completion]  # (prompt, max_tokens, stop) -> one verified model call


def gateway_completer(url: str, model: str, timeout: float = 300) -> Complete:
    """Model calls through the gateway's ``completions`` (``url``: its /v1 URL; the prompt already
    templated; the text ends before ``stop``)."""
    client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
    gateway = url

    def complete(prompt: str, max_tokens: int, stop: str = '"') -> Completion:
        start = time.time_ns()
        try:
            resp = client.post("/completions", json={"model": model, "prompt": prompt, "max_tokens": max_tokens,
                                                        "stop": [stop]})
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


def local_completer(model: str = "smollm2", timings: list[float] | None = None) -> Complete:
    """Model calls in this process, through the providers' exact decoder: the same text the
    gateway would answer, without its HTTP and without receipts (``veracity agent run --local``:
    a run to try an agent out, which ``agent trace`` calls failed). ``timings`` gets each call's
    seconds."""
    from veracity.models.registry import loaded

    if model != "smollm2":
        raise AgentError(f"agents run on the chat LLM (model: smollm2), not {model!r}")
    m = loaded(model)

    def complete(prompt: str, max_tokens: int, stop: str = '"') -> Completion:
        start, t = time.time_ns(), time.perf_counter()
        ids = m.tokenizer.encode(prompt)
        out = m.generate(ids, max_tokens)
        text = m.tokenizer.decode(m.answer(out)[0]).split(stop)[0]
        if timings is not None:
            timings.append(time.perf_counter() - t)
        return Completion(text, len(ids), len(out), {}, start, time.time_ns())

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


def quote_prompt(task: str, results: list[str]) -> str:
    """``answer: quote``'s prompt: the tools' results, then the question (no chat template: the
    small model answers from data in this form better than in a chat turn)."""
    return "Data:\n" + "\n".join(results) + f"\n\nQuestion: {task}\nAnswer:"


ANSWER_LEAD = re.compile(r"^\s*(the answer( to (this|the) question)? is:?|answer:)\s*", re.I)
NAMES = re.compile(r"0x[0-9a-fA-F]{40}|\d+(?:\.\d+)?")
WORDS = re.compile(r"[a-z0-9]+")


def grounded(said: str, task: str, results: list[str]) -> tuple[str, str, list[str]]:
    """The answer to give for what the model ``said`` over ``results``: (answer, how, the lines
    cited). ``quote``: what it said begins with a fragment of a line of the data (any case;
    ``QUOTE_MIN_CHARS`` or longer, and most of what it said: ``quoted``), so the answer is that
    whole line (the first such); ``checked``: a short answer (``SHORT_WORDS`` words at most: a
    value, "38 VRC") in its own words, which names an address or a number, each of them in the
    data; ``replaced``: anything else (a longer sentence, whose claims between the names cannot be
    checked; a name the data does not hold; no name at all), so the answer is the line holding
    most of the names it did get right, then sharing most words with the task (the first of
    those tied)."""
    lines = [ln.strip() for r in results for ln in r.splitlines() if ln.strip()]
    text = ANSWER_LEAD.sub("", said.strip()).strip().rstrip(".").strip()
    line = quoted(re.sub(r"^the\s+", "", text, flags=re.I), lines)
    if line is not None:
        return line, "quote", [line]
    names = NAMES.findall(text)
    held = [n for n in names if any(holds(ln, n) for ln in lines)]
    if names and held == names and len(WORDS.findall(text.lower())) <= SHORT_WORDS:
        return text, "checked", [ln for ln in lines if any(holds(ln, n) for n in names)]
    if not lines:
        return text, "checked", []
    asked = set(WORDS.findall(task.lower()))
    best = max(lines, key=lambda ln: (sum(holds(ln, n) for n in held), len(asked & set(WORDS.findall(ln.lower())))))
    return best, "replaced", [best]


def holds(line: str, name: str) -> bool:
    """``line`` names ``name`` (an address or a number) as a whole word, in any case: 4 is not in 40."""
    return re.search(rf"(?<![0-9a-z.]){re.escape(name.lower())}(?![0-9a-z]|\.\d)", line.lower()) is not None


def quoted(text: str, lines: list[str]) -> str | None:
    """The first line holding the longest beginning of ``text`` any line holds (any case), if that
    beginning is ``QUOTE_MIN_CHARS`` long or longer and at least 60% of ``text``."""
    low = text.lower()
    best, size = None, 0
    for line in lines:
        ln = line.lower()
        lo, hi = size, len(low)  # the longest prefix of low that ln holds, past the best so far
        if low[:lo + 1] not in ln:
            continue
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if low[:mid] in ln:
                lo = mid
            else:
                hi = mid - 1
        if lo > size:
            best, size = line, lo
    if best is None or size < max(QUOTE_MIN_CHARS, 0.6 * len(low)):
        return None
    return best


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
    results: list[str] = []  # the tools' results, in order (``answer: quote`` answers from the last ``memory``)
    used = {"in": 0, "out": 0}
    steps = 0

    def call(prompt: str, max_tokens: int, purpose: str, step: int, stop: str = '"') -> str:
        c = complete(prompt, max_tokens, stop)
        used["in"] += c.input_tokens
        used["out"] += c.output_tokens
        record.add("chat", step=step, purpose=purpose, model=spec.model, start=c.start, end=c.end,
                   prompt_sha256=sha256_text(prompt), output=c.text, output_sha256=sha256_text(c.text),
                   input_tokens=c.input_tokens, output_tokens=c.output_tokens, receipt=c.receipt)
        return c.text

    def finish(answer: str, reason: str, how: str = "", cited: list[str] | None = None) -> Run:
        record.add("end", answer=answer, reason=reason, end=time.time_ns(), steps=steps, input_tokens=used["in"],
                   output_tokens=used["out"], grounded=how, cited=cited or [])
        return Run(answer, reason, record)

    def answer(prompt: str, reason: str) -> Run:
        """The model answers now: from the results, grounded in them (``answer: quote``), or in its own
        words as the answer tool's input."""
        if spec.answer == "quote" and results:
            kept = results[-spec.memory:]
            said = call(quote_prompt(task, kept), QUOTE_TOKENS, "answer", steps, stop="\n")
            text, how, cited = grounded(said, task, kept)
            return finish(text, reason, how, cited)
        return finish(call(prompt + '{"tool": "answer", "input": "', ANSWER_TOKENS, "answer", steps).strip(), reason)

    while True:
        prompt = render([system, {"role": "user", "content": task}, *turns[-2 * spec.memory:]])
        out_of = "steps" if steps >= spec.budget.steps else "tokens" if used["out"] >= spec.budget.tokens else None
        if out_of:  # a budget is spent: the model must answer now
            return answer(prompt, out_of)
        if spec.first and not steps:  # the tool asked first, with the task as its input
            name, text = spec.first, task
        elif not tools:  # nothing to choose: it answers (one model call)
            return answer(prompt, "answered")
        elif spec.grammar:  # the first call must be a tool's when there are tools: read before answering
            head = prompt + '{"tool": "'
            name = pick_tool(call(head, TOOL_TOKENS, "tool", steps), names if steps else [*tools])
            if name == ANSWER:
                return answer(prompt, "answered")
            head += name + '", "input": "'
            forms = getattr(tools.get(name), "forms", ())
            if forms:  # the tool's inputs are a choice too (a query form, then its value if it takes one)
                form = choose(call(head, TOOL_TOKENS, "form", steps), forms, forms[0])
                value = slot(call(head + form, INPUT_TOKENS, "input", steps)) if form.endswith(" ") else ""
                text = (form + value).strip()
            else:
                text = call(head, INPUT_TOKENS, "input", steps).strip()
        else:
            picked = parse_free(call(prompt, FREE_TOKENS, "tool", steps), names)
            if picked is None:  # not a valid call: what it wrote is taken as the answer
                return finish(record.of("chat")[-1]["output"].strip(), "answered")
            name, text = picked
        if name == ANSWER:
            return finish(text, "answered")
        if turns and turns[-2]["content"] == json.dumps({"tool": name, "input": text}):
            return answer(prompt, "answered")  # the same call again: it has what it asked for
        steps += 1
        turns.append({"role": "assistant", "content": json.dumps({"tool": name, "input": text})})
        result = run_tool(tools[name], name, text, steps, record)
        results.append(result)
        turns.append({"role": "user", "content": f"Result of {name}: {result}\nAnswer the question from this result "
                                                 f"if it is enough."})


def run_tool(tool: Any, name: str, text: str, step: int, record: RunRecord) -> str:
    """Run one tool call into the record; a tool's refusal goes back to the model as its result.
    Another agent's work (``call_agent``) is marked with ``member``: that agent's id (None when
    its card names none), whose share of a payment its receipts earn (``agents.validate.work_split``)."""
    start = time.time_ns()
    error, receipts, output, member = None, [], "", {}
    try:
        result = tool.run(text)
        output, receipts = result.output, list(result.receipts)
        if result.delegated:
            member = {"member": result.member}
    except VeracityError as exc:
        error = output = str(exc)
    record.add("tool", step=step, name=name, start=start, end=time.time_ns(), input=text,
               input_sha256=sha256_text(text), output=output, output_sha256=sha256_text(output), error=error,
               receipts=receipts, **member)
    return output


def default_record_path(folder: Path, agent: str) -> Path:
    return folder / f"{agent}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.jsonl"
