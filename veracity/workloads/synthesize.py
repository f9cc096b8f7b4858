"""The ``synthesize`` job kind: synthetic data that anyone regenerates bit for bit.

Its inputs blob is one JSON object: a prompt template with a ``{seed}`` placeholder, the seeds (or
topics) to fill it with, and how many tokens to generate for each; a chat model may also take a
system prompt::

    {"template": "Write one short question about {seed}.", "seeds": ["rivers", "bread"],
     "max_tokens": 24, "system": "You write quiz questions."}

The job *is* the ``infer`` job over its rendered items (``render``: one chat item per seed, in seed
order), and every question about it is answered by the infer machinery on those bytes: its run,
program, trace, output records and disputes are exactly that job's, so every record is judged on
chain. The exact LLM decodes greedily, so the samples follow from the spec alone: a validator that
re-executes the job gets the same output root and trace root, and a pool that takes the set keeps
its ``provenance`` (the job, the model, the order and its commitment).
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from veracity.errors import InputError
from veracity.exact.program import MAX_OUTPUTS
from veracity.workloads.infer import MAX_NESTING, InferWorkload, is_text, nesting
from veracity.workloads.workload import JobResult, Tamper, register

PLACEHOLDER = "{seed}"
MAX_SEEDS = 64  # samples a job makes; more go in more jobs
MODELS = ("smollm2", "tiny-gpt")  # the generators: a chat LLM, and the character-level GPT (a prompt, no chat)
REQUIRED = ("template", "seeds", "max_tokens")
OPTIONAL = ("system",)
EXAMPLE = '{"template": "Write a question about {seed}.", "seeds": ["rivers", "bread"], "max_tokens": 24}'


def parse(inputs: bytes, model: str = "smollm2") -> dict[str, Any]:
    """The job's inputs as a checked dict; InputError that says what is wrong and what to send."""
    try:
        text = inputs.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("synthesize inputs are not UTF-8: send one JSON object such as " + EXAMPLE) from None
    if nesting(text) > MAX_NESTING:
        raise InputError(f"synthesize inputs nest JSON more than {MAX_NESTING} deep: send one flat object such as "
                         + EXAMPLE)
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        what = "one JSON object, not JSONL" if exc.msg == "Extra data" else f"valid JSON ({exc.msg})"
        raise InputError(f"synthesize inputs must be {what}: send one object such as {EXAMPLE}") from None
    if not isinstance(spec, dict):
        raise InputError(f"synthesize inputs must be one JSON object, not a {type(spec).__name__}: send {EXAMPLE}")
    if missing := [k for k in REQUIRED if k not in spec]:
        raise InputError(f"synthesize inputs lack {', '.join(map(repr, missing))}: send {EXAMPLE}")
    if extra := sorted(set(spec) - set(REQUIRED) - set(OPTIONAL)):
        raise InputError(f"synthesize inputs have unknown keys {', '.join(map(repr, extra))}: the keys are "
                         f"{', '.join(REQUIRED + OPTIONAL)} (system optional)")
    if not is_text(spec):
        raise InputError("a string of the synthesize inputs holds a lone surrogate (such as \\ud800), which is not "
                         "text: send UTF-8 text")
    check_template(spec["template"])
    seeds = spec["seeds"]
    check_seeds(seeds)
    n = spec["max_tokens"]
    most = MAX_OUTPUTS // len(seeds)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= most:
        raise InputError(f'"max_tokens" must be an integer from 1 to {most}: a result commits at most {MAX_OUTPUTS} '
                         f"generated tokens, here across {len(seeds)} seeds (split the seeds into more jobs for more)")
    if "system" in spec:
        if model != "smollm2":
            raise InputError(f'{model} is not a chat model: drop "system" (the template is its whole prompt)')
        if not isinstance(spec["system"], str) or not spec["system"].strip():
            raise InputError('"system" must be a non-empty string (or left out)')
    return spec


def check_template(template: Any) -> None:
    if not isinstance(template, str) or not template.strip():
        raise InputError(f'"template" must be a non-empty string holding {PLACEHOLDER}, such as '
                         '"Write a question about {seed}."')
    if PLACEHOLDER not in template:
        raise InputError(f'"template" has no {PLACEHOLDER} placeholder: each seed is put in its place (such as '
                         '"Write a question about {seed}.")')
    if "{" in (rest := template.replace(PLACEHOLDER, "")) or "}" in rest:
        found = re.search(r"\{[^{}]*\}?|\}", rest)
        raise InputError(f'"template" holds {found.group(0) if found else "a brace"!r}: {PLACEHOLDER} is the only '
                         "placeholder and braces may appear nowhere else (reword the template)")


def check_seeds(seeds: Any) -> None:
    if not isinstance(seeds, list) or not seeds:
        raise InputError('"seeds" must be a non-empty list of strings (the seeds or topics, one sample each)')
    if len(seeds) > MAX_SEEDS:
        raise InputError(f'"seeds" has {len(seeds)} entries, more than the {MAX_SEEDS} a job takes: split them '
                         "into several jobs")
    first: dict[str, int] = {}
    for i, seed in enumerate(seeds, 1):
        if not isinstance(seed, str) or not seed.strip():
            raise InputError(f"seed {i} is {json.dumps(seed)[:40]}: every seed must be a non-empty string")
        if seed in first:
            raise InputError(f"seed {i} repeats seed {first[seed]} ({seed[:40]!r}): the same seed always gives the "
                             "same sample, so list each once")
        first[seed] = i


def prompts(spec: Mapping[str, Any]) -> list[str]:
    """Each seed's prompt: the template with the seed in the placeholder's place (a plain
    replacement: a seed's own braces are text)."""
    return [spec["template"].replace(PLACEHOLDER, seed) for seed in spec["seeds"]]


def items(spec: Mapping[str, Any], model: str = "smollm2") -> list[dict[str, Any]]:
    """The infer items of checked inputs, one per seed, in seed order."""
    n = spec["max_tokens"]
    if model != "smollm2":
        return [{"text": p, "max_tokens": n} for p in prompts(spec)]
    system = [{"role": "system", "content": spec["system"]}] if "system" in spec else []
    return [{"messages": [*system, {"role": "user", "content": p}], "max_tokens": n} for p in prompts(spec)]


def render(inputs: bytes, model: str = "smollm2") -> bytes:
    """The infer job's input JSONL that a synthesize job's inputs stand for (InputError for inputs
    that are not a synthesize job's): what every run, program and dispute of the job reads."""
    return "".join(json.dumps(item) + "\n" for item in items(parse(inputs, model), model)).encode()


def samples(inputs: bytes, outputs: bytes, model: str = "smollm2") -> list[dict[str, str]]:
    """The generated set: each seed, its prompt and the text the model generated for it, in seed
    order, from the job's inputs and its output JSONL (one line per seed, as the infer job writes
    it); InputError when the outputs are not this job's."""
    spec = parse(inputs, model)
    try:
        lines = [json.loads(line) for line in outputs.decode("utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"the outputs are not output JSONL ({exc})") from None
    wanted = items(spec, model)
    if len(lines) != len(wanted) or not all(isinstance(line, dict) and "output" in line and
                                            {k: v for k, v in line.items() if k != "output"} == item
                                            for line, item in zip(lines, wanted)):
        raise InputError(f"the outputs are not this job's: it makes one line per seed ({len(wanted)}), each its "
                         "rendered item plus \"output\"")
    out = []
    for seed, prompt, line in zip(spec["seeds"], prompts(spec), lines):
        shown = line["output"]
        text = shown.get("text") if isinstance(shown, dict) else shown
        if not isinstance(text, str):
            raise InputError(f"the output for seed {seed[:40]!r} holds no generated text")
        out.append({"seed": seed, "prompt": prompt, "text": text})
    return out


def provenance(spec_cid: str, model: str, order_id: int, output_root: bytes | str,
               trace_root: bytes | str | None = None, provider: str | None = None,
               receipt: Any = None) -> dict[str, Any]:
    """What a generated set carries into a data pool: the job that made it (its spec's CID, whose
    inputs are the template and seeds), the model, the order and the commitment it settled with
    (the output root, and the trace root when given), and a receipt's fields when given (a dict or
    a pydantic model such as ``market.receipts.Receipt``). Anyone regenerates the set from the
    job and checks it against the output root."""

    def hexed(v: bytes | str) -> str:
        return "0x" + v.hex() if isinstance(v, bytes) else v

    out: dict[str, Any] = {"kind": "synthesize", "job": spec_cid, "model": model, "order": int(order_id),
                           "output_root": hexed(output_root)}
    if trace_root is not None:
        out["trace_root"] = hexed(trace_root)
    if provider is not None:
        out["provider"] = provider
    if receipt is not None:
        out["receipt"] = dict(receipt.model_dump() if hasattr(receipt, "model_dump") else receipt)
    return out


@contextmanager
def by_seed(inputs: bytes, model: str) -> Iterator[None]:
    """Say "seed N" where the infer machinery says "inputs line N" (line N is seed N's item)."""
    try:
        yield
    except InputError as exc:
        found = re.match(r"inputs line (\d+): (.*)", str(exc), re.S)
        if found is None:
            raise
        seeds = parse(inputs, model)["seeds"]
        i = int(found.group(1))
        seed = seeds[i - 1] if 0 < i <= len(seeds) else ""
        raise type(exc)(f"seed {i} ({seed[:40]!r}): {found.group(2)}") from None


class SynthesizeWorkload:
    """``synthesize``: the infer job over the rendered items (``render``), answered by ``InferWorkload``."""

    kind, models, code, trains, judged_on_chain, defaults = "synthesize", MODELS, 5, False, True, None

    def __init__(self) -> None:
        self.infer = InferWorkload()

    def as_infer(self, job: Any) -> Any:
        """The infer job this one is: the same spec and model, the rendered items as its inputs."""
        from veracity.workloads.jobs import Job

        return Job(job.spec.model_copy(update={"kind": "infer"}), render(job.inputs, job.spec.model))

    def _ask(self, job: Any, question: Callable[[Any], Any]) -> Any:
        with by_seed(job.inputs, job.spec.model):
            return question(self.as_infer(job))

    def params(self, training: Any) -> Any:
        raise InputError("a synthesize job takes no 'training' section (its inputs hold the template and seeds)")

    def run(self, job: Any, backend: str, model: Any = None, tamper: Tamper | None = None,
            progress: Callable[[int], None] | None = None) -> JobResult:
        return self._ask(job, lambda j: self.infer.run(j, backend, model, tamper, progress))

    def program(self, job: Any, model: Any = None, limit: int | None = None) -> list[Any]:
        return self._ask(job, lambda j: self.infer.program(j, model, limit))

    def records(self, job: Any, indices: set[int], model: Any = None,
                tamper: Tamper | None = None) -> dict[int, np.ndarray]:
        return self._ask(job, lambda j: self.infer.records(j, indices, model, tamper))

    def constants(self, job: Any, model: Any = None) -> dict[bytes, np.ndarray]:
        return self.infer.constants(job, model)

    def served_tensors(self, job: Any, outputs: bytes, model: Any = None) -> list[np.ndarray]:
        return self._ask(job, lambda j: self.infer.served_tensors(j, outputs, model))

    def evaluate(self, job: Any, checkpoint: bytes, data: bytes) -> str:
        raise InputError("only a training job's checkpoint is evaluated")

    def estimate(self, job: Any, program: list[Any] | None = None) -> Any:
        return self._ask(job, lambda j: self.infer.estimate(j, program))


register(SynthesizeWorkload())
