"""The ``infer`` job kind: run an exact model over input items, with outputs and a trace."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from veracity.errors import InputError
from veracity.exact.execute import Exec, make_backend
from veracity.exact.program import output_records
from veracity.exact.trace import (
    CODE_DTYPES,
    Trace,
    TraceRecord,
    encode_records,
    output_hash,
    records_root,
    tensor_digest,
)
from veracity.workloads.spec import INFER_BATCH
from veracity.workloads.workload import JobResult, Tamper, register

Record = tuple[int, dict[str, Any]]  # (line number, JSON object)
WINDOW_BATCH = 1  # a lease window's items per batch: each request's trace is its own part (``joined_result``)


@dataclass(frozen=True)
class InferResult:
    outputs: list[np.ndarray]  # per item, integers (see each model's ``present``)
    output_hash: bytes  # independent of batching
    trace_root: bytes
    steps: int
    ops: int  # the trace's records
    records: list[TraceRecord] = field(default_factory=list)  # the trace, in execution order
    output_digests: list[bytes] = field(default_factory=list)  # the output records' digests, in output order


def infer(model: Any, items: list[Any], backend: str = "torch", batch_size: int = INFER_BATCH,
          trace: bool = True, progress: Callable[[int], None] | None = None,
          tamper: Callable[[int, str, Any], Any] | None = None, coarse: bool = True,
          answered: Callable[[int, np.ndarray], None] | None = None) -> InferResult:
    """Run ``model`` on parsed ``items`` in batches of ``batch_size`` (in input order). The trace is
    the coarse one a provider commits (``exact.levels``), or with ``coarse=False`` every record.
    ``answered(i, output)`` hears item ``i``'s output as soon as it is known: a generator's at its
    stop token (its later passes still run, and are traced), the others' when its batch is done."""
    tr = Trace() if trace else None
    ex = Exec(make_backend(backend), tr, tamper, coarse=coarse)
    outputs: list[np.ndarray] = []
    for lo in range(0, len(items), batch_size):
        if answered is not None and hasattr(model, "serve"):  # a generator answers at its stop token
            outs = model.run(ex, items[lo:lo + batch_size],
                             answered=lambda k, out, lo=lo, tell=answered: tell(lo + k, out))
        else:
            outs = model.run(ex, items[lo:lo + batch_size])
            if answered is not None:
                for k, out in enumerate(outs):
                    answered(lo + k, out)
        outputs += outs
        if progress:
            progress(min(lo + batch_size, len(items)))
    indexed = tr.indexed if tr else []
    if tr:
        tr.close()
    records = [r for _, r in indexed]
    by_index = dict(indexed)
    root = records_root(records) if tr else b"\0" * 32
    return InferResult(outputs, items_hash(outputs), root, ex.step_index + 1, len(records), records,
                       [by_index[i].digest for i in ex.outputs] if tr else [])


def items_hash(outputs: list[np.ndarray]) -> bytes:
    """The output hash over per-item outputs (``trace.output_hash``: independent of batching)."""
    return output_hash([tensor_digest(np.asarray(o, dtype=np.int32)) for o in outputs])


@dataclass(frozen=True)
class ServedRun:
    """One request served under a lease: its output and the coarse trace its run kept, steps
    counted from 0. A lease window is an infer job with batch 1 over the requests, in order, so
    its result is these runs joined (``joined_result``): nothing is run twice."""

    output: np.ndarray
    records: list[TraceRecord]
    steps: int
    output_digests: list[bytes]


def served_run(model: Any, item: Any, backend: str = "torch",
               answered: Callable[[np.ndarray], None] | None = None) -> ServedRun:
    """Run parsed ``item`` alone (a batch of 1) with the coarse trace a provider commits;
    ``answered`` hears its output as soon as it is known (``infer``)."""
    r = infer(model, [item], backend, batch_size=1,
              answered=None if answered is None else (lambda _, out: answered(out)))
    return ServedRun(r.outputs[0], r.records, r.steps, r.output_digests)


def joined_result(model: Any, inputs_jsonl: bytes, runs: list[ServedRun]) -> JobResult:
    """The result of the infer job with batch 1 over ``inputs_jsonl``, from each item's run alone:
    the same bits as running the job, since a batch's records depend on its item only (each leaf
    is its step, op name and digest), and its steps follow the earlier items' (``ServedRun``)."""
    return joined_parts(model, inputs_jsonl, [PartRun([r.output], r.records, r.steps, r.output_digests)
                                              for r in runs])


@dataclass(frozen=True)
class PartRun:
    """A run of some whole batches of an infer job (``part_run``), steps counted from 0."""

    outputs: list[np.ndarray]
    records: list[TraceRecord]
    steps: int
    output_digests: list[bytes]


def parts_of(n_items: int, batch_size: int, parts: int) -> list[tuple[int, int]]:
    """Items [lo, hi) of up to ``parts`` runs that split an infer job of ``n_items`` at batch
    boundaries (batches share no record: each part is run alone, and ``joined_parts`` joins them)."""
    batches = -(-n_items // batch_size)
    parts = max(1, min(parts, batches))
    cuts = [round(i * batches / parts) * batch_size for i in range(parts + 1)]
    return [(lo, min(hi, n_items)) for lo, hi in zip(cuts, cuts[1:]) if lo < hi and lo < n_items]


def part_run(model: Any, items: list[Any], backend: str = "torch", batch_size: int = INFER_BATCH) -> PartRun:
    """Run parsed ``items`` (whole batches of a job) with the coarse trace a provider commits."""
    r = infer(model, items, backend, batch_size=batch_size)
    return PartRun(r.outputs, r.records, r.steps, r.output_digests)


def joined_parts(model: Any, inputs_jsonl: bytes, parts: list[PartRun]) -> JobResult:
    """The result of the infer job over ``inputs_jsonl``, from its parts' runs in order
    (``parts_of``): the same bits as running it whole, since a batch's records depend on its items
    only (each leaf is its step, op name and digest), and a part's steps follow the earlier parts'."""
    records: list[TraceRecord] = []
    steps = 0
    for part in parts:
        records += [TraceRecord(r.step + steps, r.op, r.digest) for r in part.records]
        steps += part.steps
    outputs = [o for part in parts for o in part.outputs]
    result = InferResult(outputs, items_hash(outputs),
                         records_root(records), steps, len(records), records,
                         [d for part in parts for d in part.output_digests])
    return JobResult(output_lines(model, input_records(inputs_jsonl), result).encode(), result.output_hash,
                     result.trace_root, steps, len(records), encode_records(records),
                     output_digests=result.output_digests, coarse=True)


def parse_jsonl(text: str, source: str) -> list[Record]:
    """Input records, one JSON object per line (blank lines skipped), with line numbers. Lines end
    at a newline only (a raw U+2028 inside a JSON string is text, as JSON says)."""
    records = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        if nesting(line) > MAX_NESTING:  # before the parser's recursion (deep enough, it crashes the process)
            raise InputError(f"{source} line {n}: JSON nested more than {MAX_NESTING} deep")
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{source} line {n}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise InputError(f"{source} line {n}: expected a JSON object such as {{\"text\": \"...\"}}")
        if not is_text(rec):
            raise InputError(f"{source} line {n}: a string holds a lone surrogate (such as \\ud800), which is not "
                             "text: send UTF-8 text")
        records.append((n, rec))
    if not records:
        raise InputError(f"{source} has no input lines")
    return records


MAX_NESTING = 64  # arrays and objects in an input line, one inside another
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')


def nesting(line: str) -> int:
    """How deep a JSON line's arrays and objects nest (outside its strings); cheap when it has few."""
    if line.count("[") + line.count("{") <= MAX_NESTING:
        return 0
    depth = deepest = 0
    for c in re.findall(r"[\[\]{}]", _STRINGS.sub("", line)):
        depth += 1 if c in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def is_text(value: Any) -> bool:
    """Whether every string in a parsed JSON value is text (UTF-8 can encode it: no lone surrogate)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def input_records(inputs_jsonl: bytes, source: str = "inputs") -> list[Record]:
    """A job's input bytes as JSONL records (``parse_jsonl``), refusing bytes that are not UTF-8."""
    try:
        text = inputs_jsonl.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{'job inputs' if source == 'inputs' else source} is not UTF-8 JSONL") from None
    return parse_jsonl(text, source)


def parse_items(model: Any, records: list[Record], source: str) -> list[Any]:
    items = []
    for n, rec in records:
        try:
            items.append(model.parse(rec))
        except InputError as exc:
            raise InputError(f"{source} line {n}: {exc}") from None
    return items


def output_lines(model: Any, records: list[Record], result: InferResult) -> str:
    """The output JSONL: each input's fields plus ``"output"``."""
    return "".join(json.dumps({**rec, "output": model.present(out)}) + "\n"
                   for (_, rec), out in zip(records, result.outputs))


def run_infer_job(model_name: str, inputs_jsonl: bytes, backend: str = "torch", batch_size: int = INFER_BATCH,
                  model: Any = None, tamper: Callable[[int, str, Any], Any] | None = None,
                  coarse: bool = True) -> JobResult:
    """The ``infer`` job kind end to end: JSONL bytes in, output JSONL and commitments out (the
    coarse trace a provider commits, or with ``coarse=False`` every record: a single-level one)."""
    from veracity.models.registry import load

    m = model if model is not None else load(model_name)
    records = input_records(inputs_jsonl)
    result = infer(m, parse_items(m, records, "inputs"), backend=backend, batch_size=batch_size, tamper=tamper,
                   coarse=coarse)
    return JobResult(output_lines(m, records, result).encode(), result.output_hash, result.trace_root,
                     result.steps, result.ops, encode_records(result.records),
                     output_digests=result.output_digests, coarse=coarse)


def job_program(model_name: str, inputs_jsonl: bytes, model: Any = None, batch_size: int = INFER_BATCH,
                limit: int | None = None) -> list[Any]:
    """The program of an ``infer`` job (``exact.program``): what each record of its trace must be.
    A shape-only dry run: no arithmetic, so a client computes it in milliseconds (a large job,
    in seconds: ``limit`` stops it past that many records)."""
    from veracity.exact.dryrun import build
    from veracity.models.registry import load

    m = model if model is not None else load(model_name)
    return build(m, parse_items(m, input_records(inputs_jsonl), "inputs"), batch_size, limit)


class Kept(Exception):
    """Every record a replay was asked for is kept: it stops there (``keeping``'s ``stop``)."""


def keeping(indices: set[int], tamper: Callable[[int, str, Any], Any] | None = None, stop: bool = False
            ) -> tuple[Callable[[int, str, Any], Any], dict[int, np.ndarray]]:
    """An Exec hook that keeps a copy of records ``indices`` (after ``tamper``, when given), and the
    dict it keeps them in; with ``stop``, it raises ``Kept`` once it kept the last of them (records
    come in index order), so a replay runs only as far as the records it needs."""
    captured: dict[int, np.ndarray] = {}
    last = max(indices, default=-1)

    def hook(i: int, op: str, x: Any) -> Any:
        if tamper is not None:
            x = tamper(i, op, x)
        if i in indices:
            a = x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()  # a torch backend's tensor
            captured[i] = np.array(a, dtype=np.int64, copy=True)
            if stop and i == last:
                raise Kept
        return x

    return hook, captured


def record_tensors(model_name: str, inputs_jsonl: bytes, indices: set[int], model: Any = None,
                   tamper: Callable[[int, str, Any], Any] | None = None, batch_size: int = INFER_BATCH) -> dict[int, np.ndarray]:
    """Re-run a job (exact, so the same bits) and keep the tensors of records ``indices``: what a
    party shows in a dispute, recomputed when needed rather than stored. ``tamper`` replays an
    adversary's run. The replay runs only the batches that hold those records (batches share no
    record: a lease window's requests are one each), from the first of them, and stops at the last
    record asked for: opening a step costs its own request's run up to it, however long the job or
    window is. An honest replay runs on the fast backend (bit for bit the reference's); a tampered
    one on the reference, whose arrays the adversaries' hooks alter."""
    hook, captured = keeping(indices, tamper, stop=True)
    m = model if model is not None else load_model(model_name)
    items = parse_items(m, input_records(inputs_jsonl), "inputs")
    lo, ops, steps = batch_holding(m, items, min(indices, default=0), batch_size)
    ex = Exec(make_backend("numpy" if tamper is not None else "torch"), tamper=hook)
    ex.ops, ex.step_index = ops, steps - 1  # the records and steps of the batches before it
    try:
        for at in range(lo, len(items), batch_size):
            m.run(ex, items[at:at + batch_size])
    except Kept:
        pass
    return captured


def batch_holding(model: Any, items: list[Any], record: int, batch_size: int = INFER_BATCH) -> tuple[int, int, int]:
    """The first item of the batch that makes record ``record`` of an infer job over parsed ``items``,
    with the records and the steps the batches before it make (a shape-only dry run of those)."""
    from veracity.exact.dryrun import ShapeBackend

    ex = Exec(ShapeBackend(), program=[])
    for lo in range(0, len(items), batch_size):
        before = (ex.ops, ex.step_index + 1)
        model.run(ex, items[lo:lo + batch_size])
        if ex.ops > record:
            return (lo, *before)
    return len(items), ex.ops, ex.step_index + 1


def served_tensors(model_name: str, inputs_jsonl: bytes, outputs_jsonl: bytes, model: Any = None,
                   batch_size: int = INFER_BATCH) -> list[np.ndarray]:
    """The output records' tensors that served output JSONL shows: its integers, read back from
    each line's ``"output"`` (``unpresent``), cut into the program's output records (their dtypes
    and dims). Raises InputError when the JSONL cannot be read as this job's outputs, or when a
    line is not its input's fields plus the output as the model presents it."""
    from veracity.exact.dryrun import build

    m = model if model is not None else load_model(model_name)
    records = input_records(inputs_jsonl)
    program = build(m, parse_items(m, records, "inputs"), batch_size)
    try:
        lines = [json.loads(line) for line in outputs_jsonl.decode("utf-8").splitlines() if line.strip()]
        shown = [np.asarray(m.unpresent(line["output"]), dtype=np.int64) for line in lines]
        flat = np.concatenate([s.reshape(-1) for s in shown])
        same = len(lines) == len(records) and all(
            line == {**rec, "output": m.present(s)} for line, s, (_, rec) in zip(lines, shown, records))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise InputError(f"the outputs cannot be read ({exc})") from None
    if not same:
        raise InputError("the output lines are not the inputs with their outputs as the model presents them")
    tensors, at = [], 0
    for i in output_records(program):
        d = program[i]
        size = int(np.prod(d.dims))
        part = flat[at:at + size]
        at += size
        if part.size != size:
            raise InputError("the outputs are fewer than the job's program makes")
        tensors.append(part.reshape(d.dims).astype(CODE_DTYPES[d.dtype]))
    if at != flat.size:
        raise InputError("there are more outputs than the job's program makes")
    return tensors


def served_digests(model_name: str, inputs_jsonl: bytes, outputs_jsonl: bytes, model: Any = None,
                   batch_size: int = INFER_BATCH) -> list[bytes]:
    """The output record digests served output JSONL gives (``served_tensors``)."""
    return [tensor_digest(t) for t in served_tensors(model_name, inputs_jsonl, outputs_jsonl, model, batch_size)]


def output_count(model: Any, items: list[Any], batch_size: int = INFER_BATCH) -> int:
    """The output records an infer job over parsed ``items`` makes (what its result commits, at most
    ``program.MAX_OUTPUTS``): one per generated token for a model that generates (``outputs_of``),
    else one per batch."""
    per_item = getattr(model, "outputs_of", None)
    if per_item is not None:
        return sum(per_item(item) for item in items)
    return -(-len(items) // batch_size)


def window_outputs(model: Any, served: int, outputs: int, item: dict[str, Any], batch_size: int = WINDOW_BATCH) -> int:
    """The output records a lease window makes once ``item`` joins it, given that its ``served``
    requests make ``outputs`` (``output_count``, kept as a running count, so a request costs one
    parse, not one per request in the window). Only a model that generates parses the item
    (InputError for one it cannot take); for the others the count is the batches'."""
    per_item = getattr(model, "outputs_of", None)
    if per_item is None:
        return -(-(served + 1) // batch_size)
    return outputs + per_item(model.parse(item))


def item_estimate(model: Any, item: dict[str, Any]) -> Any:
    """The planner's estimate (``JobEstimate``) of one input line's run: what replaying a lease
    request takes in a dispute (a window's requests are batches of their own). A generating model
    counts it without building the program (``flops_of``); InputError for an item it cannot take."""
    from veracity.exact.dryrun import build
    from veracity.workloads.planner import JobEstimate, model_params, program_flops

    parsed = model.parse(item)
    flops_of = getattr(model, "flops_of", None)
    flops = flops_of(parsed) if flops_of is not None else program_flops(build(model, [parsed], 1))[0]
    return JobEstimate(flops, float(model_params(model)), "one request")


def load_model(name: str) -> Any:
    from veracity.models.registry import load

    return load(name)


class InferWorkload:
    """``infer``: any model of the model registry over JSONL items; every record judged on chain."""

    kind, models, code, trains, judged_on_chain, defaults = "infer", None, 1, False, True, None

    def params(self, training: Any) -> Any:
        raise InputError("an infer job takes no 'training' section (use kind: train or finetune)")

    def run(self, job: Any, backend: str, model: Any = None, tamper: Tamper | None = None,
            progress: Callable[[int], None] | None = None) -> JobResult:
        return run_infer_job(job.spec.model, job.inputs, backend, job.batch, model=model, tamper=tamper)

    def program(self, job: Any, model: Any = None, limit: int | None = None) -> list[Any]:
        return job_program(job.spec.model, job.inputs, model, job.batch, limit)

    def records(self, job: Any, indices: set[int], model: Any = None,
                tamper: Tamper | None = None) -> dict[int, np.ndarray]:
        return record_tensors(job.spec.model, job.inputs, indices, model=model, tamper=tamper, batch_size=job.batch)

    def constants(self, job: Any, model: Any = None) -> dict[bytes, np.ndarray]:
        from veracity.exact.program import model_constants

        return model_constants(model if model is not None else job.model())

    def served_tensors(self, job: Any, outputs: bytes, model: Any = None) -> list[np.ndarray]:
        return served_tensors(job.spec.model, job.inputs, outputs, model, job.batch)

    def evaluate(self, job: Any, checkpoint: bytes, data: bytes) -> str:
        raise InputError("only a training job's checkpoint is evaluated")

    def estimate(self, job: Any, program: list[Any] | None = None) -> Any:
        """From the program's records (exact shapes) and the model's weights."""
        from veracity.workloads.planner import JobEstimate, human, model_params, program_flops

        program = program if program is not None else job.program(job.model())
        flops, largest = program_flops(program)
        params = model_params(job.model())
        return JobEstimate(flops, params + 8.0 * largest * 4, f"{len(program)} records, {human(params)} weights")


register(InferWorkload())
