"""Cheating providers, for tests and the demo. Each really cheats, each in its own way, so the
verification layer is tested against what a dishonest node would actually do:

* ``wrong-output``: runs the job honestly but alters one element of its final output, and
  commits that output with the trace that ends in it;
* ``corrupt-op``: alters one element of one intermediate op output and computes everything after
  it from the altered value, so the outputs and the trace it commits are consistent with each
  other, and wrong from that op on;
* ``lazy``: runs nothing; commits made-up outputs and a made-up trace;
* ``forged-output``: commits the honest trace with a forged output (the root of the forged JSONL it serves)
  (anyone holding the trace proves the output root is not its records: `Disputes.prove_output_fault`);
* ``disconnected``: runs the job honestly but commits a coarse trace with one record (not an
  output) its computation does not give; in a dispute the step's op-level trace it recomputes
  cannot end in that record, so it cannot open the step (``exact.levels``);
* ``lie-inside``: cheats as ``corrupt-op`` does, and in a dispute shows an op-level trace of the
  disputed step whose op records are all honest and whose exported records are the ones it
  committed, pinning its error on the step's last op (``lying_step_records``);
* ``withhold``: cheats as ``corrupt-op`` does, and once it has committed a result its blob server
  answers 404 for that order's spec, inputs, start checkpoint and trace, to blind validators
  that would re-execute it (``withheld``; validators read them from the other nodes the client
  pushed them to).
* ``hide-output``: computes and commits honestly, then serves its result's output blob to
  nobody, nor the chunks of it a client asks for on chain (``OutputFaults.request_chunk``): it
  is slashed when the request's deadline passes, and its client refunded.

On a ``train`` job, ``corrupt-op`` alters one element of one op of a step half-way through the
job (``train_tamper``) and trains on from it: the checkpoint and the trace it commits agree with
each other and are wrong from that op on.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Callable

import numpy as np

from veracity.errors import VeracityError
from veracity.exact.trace import TraceRecord, encode_records, records_root, tensor_digest
from veracity.workloads.infer import job_program, parse_jsonl, run_infer_job
from veracity.workloads.spec import INFER_BATCH
from veracity.workloads.workload import JobResult

ATTENTION_INTERNALS = (".scores", ".vt", ".ht")  # recorded, but not what flows on


def nudged(x: Any, i: int, amount: int) -> np.ndarray:
    """A copy of ``x`` with flat element ``i`` moved by ``amount`` toward zero (away from it when
    it is zero or negative), so it stays in range."""
    y = np.array(x, dtype=np.int64, copy=True)
    y.flat[i] += -amount if y.flat[i] > 0 else amount
    return y


def corrupt_tamper(model_name: str, inputs: bytes, model: Any = None, target: float = 0.5,
                   at: int | None = None, batch_size: int = INFER_BATCH) -> Callable[[int, str, Any], Any]:
    """The ``corrupt-op`` cheat as an Exec hook: one element of the op at about ``target`` of the
    way through (or at record ``at``) is off by 64 units (1/64 in activation fixed point). A fresh
    hook replays the same cheat, which is how the cheater shows its tensors in a dispute. Without
    ``at`` the op is the first record from there on that a later step reads (or an output): one
    element of an op inside a step is often rounded away before anything the job commits (then
    nothing was cheated; ``exact.levels``)."""
    if at is None:  # the job's records, from its program (a shape-only run: no arithmetic)
        from veracity.exact import program as prog
        from veracity.exact.levels import exported

        program = job_program(model_name, inputs, model, batch_size)
        ops = len(program)
        start = min(int(ops * target), ops - 1)
        flows = [i for i in exported(program) if program[i].kind != prog.INPUT]
        at = next((i for i in flows if i >= start), flows[-1] if flows else start)

    def tamper(index: int, op: str, x: Any) -> Any:
        nonlocal at
        if index == at and op.endswith(ATTENTION_INTERNALS):
            at += 1  # those values do not flow on: corrupt the next op instead
        if index != at:
            return x
        return nudged(x, 0, 64)  # the first item's first position: never padding

    return tamper


def alter_record(k: int) -> Callable[[int, str, Any], Any]:
    """A cheat for tests and benchmarks that changes one element of record ``k``, whether or not
    later ops read it (so a dispute over it lands exactly there)."""
    def tamper(index: int, op: str, x: Any) -> Any:
        if index != k:
            return x
        return nudged(x, np.size(x) // 3, 3)
    return tamper


def altered_trace(records: list[TraceRecord], tensor_of: Callable[[int], np.ndarray], dtype: np.dtype,
                  k: int) -> tuple[list[TraceRecord], bytes, Callable[[int], np.ndarray]]:
    """A cheat for tests and benchmarks, without a re-run: the honest trace ``records`` with record
    ``k``'s tensor altered as ``alter_record`` alters it (``dtype``: its canonical dtype) and nothing
    after it recomputed, so the first record it gets wrong is ``k``. Its (records, root, tensors)."""
    bad = nudged(tensor_of(k), np.size(tensor_of(k)) // 3, 3)
    cheat = [r if i != k else TraceRecord(r.step, r.op, tensor_digest(bad.astype(dtype))) for i, r in enumerate(records)]
    return cheat, records_root(cheat), (lambda i: bad if i == k else tensor_of(i))


def corrupt_op_job(model_name: str, inputs: bytes, model: Any = None, target: float = 0.5,
                   at: int | None = None, batch_size: int = INFER_BATCH) -> JobResult:
    """``corrupt-op``: every op after the corrupted one is computed from it (on the int64
    reference backend), so outputs and trace are consistent with each other and wrong."""
    tamper = corrupt_tamper(model_name, inputs, model, target, at, batch_size)
    return run_infer_job(model_name, inputs, "numpy", batch_size, model=model, tamper=tamper)


def forge_answer(shown: Any) -> Any:
    """``forged-output`` under a lease: an answer served that is not the exact one (its window,
    committed honestly, then shows the difference to anyone who checks the receipt)."""
    if isinstance(shown, list):
        return [-shown[0] if shown[0] else 0.5, *shown[1:]]
    if isinstance(shown, str):
        return shown[::-1] + " "
    return shown


def forge_output(outputs_jsonl: bytes, job: Any) -> tuple[bytes, list[bytes]]:
    """``forged-output``: the first output's first number changed in the JSONL served, and the
    output root of that forged JSONL committed with the honest trace (the answer forged where
    the trace is not)."""
    first, _, rest = outputs_jsonl.partition(b"\n")
    rec = json.loads(first)
    out = rec["output"]
    if isinstance(out, dict):
        out["logits"][0] += 1.0
        out["class"] = max(range(len(out["logits"])), key=lambda i: (out["logits"][i], -i))
    elif isinstance(out, list):
        out[0] = -out[0] if out[0] else 0.5
    else:
        out = out[::-1]
    rec["output"] = out
    forged = json.dumps(rec).encode() + b"\n" + rest
    return forged, job.served_digests(forged)


def wrong_output_job(model_name: str, inputs: bytes, model: Any = None, batch_size: int = INFER_BATCH) -> JobResult:
    """``wrong-output``: the last op's output (the job's final output) is off in one element."""
    return corrupt_op_job(model_name, inputs, model, target=1.0, batch_size=batch_size)


def computes(behaviour: str) -> str:
    """The behaviour whose results ``behaviour`` computes (``withhold`` and ``lie-inside`` compute
    ``corrupt-op``'s)."""
    return "corrupt-op" if behaviour in ("withhold", "lie-inside") else behaviour


def disconnected(result: JobResult) -> JobResult:
    """``disconnected``: the honest result with one coarse record (the middle one that is not an
    output) replaced by a made-up digest; outputs and output digests stay honest."""
    from dataclasses import replace

    from veracity.exact.trace import decode_records

    records = decode_records(result.trace)
    inner = [i for i, r in enumerate(records) if r.digest not in result.output_digests]
    if not inner:
        return result
    k = inner[len(inner) // 2]
    records[k] = TraceRecord(records[k].step, records[k].op, secrets.token_bytes(32))
    return replace(result, trace=encode_records(records), trace_root=records_root(records))


def lying_step_records(job: Any, levels: Any, step: int, model: Any, tamper: Any) -> list[TraceRecord]:
    """``lie-inside``'s op-level trace of ``step``: its op records honest, its exported records the
    (wrong) ones it committed, so it connects to its coarse trace and lies about the ops between."""
    honest = job.step_records(levels, step, model)
    mine = job.step_records(levels, step, model, tamper)
    return [m if i in levels.coarse_index else h for i, h, m in zip(levels.steps[step], honest, mine)]


def tamper_for(behaviour: str, job: Any) -> Callable[[], Any] | None:
    """A factory of fresh hooks that replay ``behaviour``'s cheat on ``job`` (a ``workloads.jobs.Job``;
    None: an honest run): an Exec hook for inference, a tape hook for a digits-MLP train job (both
    cheats alter a weight gradient half-way through it); fine-tunes and tiny-GPT training run honestly."""
    behaviour = computes(behaviour)
    if behaviour not in ("corrupt-op", "wrong-output"):
        return None
    if job.trains:
        if not job.disputable:
            return None
        at = train_cheat_at(job)
        return lambda: train_tamper(at)
    model = job.model()
    target = 0.5 if behaviour == "corrupt-op" else 1.0
    return lambda: corrupt_tamper(job.model_name, job.inputs, model, target=target, batch_size=job.batch)


def lazy_job(model_name: str, inputs: bytes, model: Any = None, batch_size: int = INFER_BATCH) -> JobResult:
    """``lazy``: each input echoed with a made-up output, and a made-up trace of the program's
    length (so the Market takes the commitment), with the program's names and random digests; the
    committed outputs are its made-up trace's output records (consistent, so only a re-execution
    and a game catch it)."""
    from veracity.exact.program import output_records
    from veracity.workloads.infer import job_program

    lines = [json.dumps({**rec, "output": 0}) + "\n" for _, rec in parse_jsonl(inputs.decode("utf-8"), "inputs")]
    from veracity.exact.levels import Levels

    program = Levels.of(job_program(model_name, inputs, model, batch_size)).coarse_program()  # the committed (coarse) trace's
    records = [TraceRecord(d.step, d.op, secrets.token_bytes(32)) for d in program]
    outputs = "".join(lines).encode()
    return JobResult(outputs, secrets.token_bytes(32), records_root(records), 1, len(records), encode_records(records),
                     output_digests=[records[i].digest for i in output_records(program)], coarse=True)


def train_tamper(at: int) -> Callable[[int, str, np.ndarray], None]:
    """The ``corrupt-op`` cheat on a training job, as a tape hook: element 0 of record ``at`` is
    moved by 64 units, in place, so every later op of the job reads the altered value."""
    def tamper(index: int, op: str, x: np.ndarray) -> None:
        if index == at:
            x.flat[0] += -64 if x.flat[0] > 0 else 64
    return tamper


def train_cheat_at(job: Any) -> int:
    """The record a training cheater alters: a weight gradient about half-way through the job."""
    from veracity.exact import program as P

    program = job.program()
    grads = [i for i, d in enumerate(program) if d.kind == P.QMM and d.op.endswith(".gw")]
    return grads[len(grads) // 2]


COMMITTED = ("committed", "challenged", "settled", "overturned", "undecided")


WITHHOLDS = ("withhold", "hide-output")  # serve no chunk of their outputs asked for on chain


def withheld(behaviour: str, committed: Callable[[], list[Any]], store: Any) -> Callable[[str], bool] | None:
    """``withhold``'s blob filter (None for the honest behaviours): True for the spec, inputs, start
    checkpoint and trace of every order this provider has committed (``committed()``: its jobs with
    their ``trace_cid`` and ``spec_cid``, read from its state on each call, so it holds from the
    commit on) and blob store; ``hide-output``'s: True for their output blobs."""
    if behaviour == "hide-output":
        return lambda cid: any(cid == job.output_cid for job in committed())
    if behaviour != "withhold":
        return None
    from veracity.workloads.jobs import job_from_blobs

    named: dict[str, set[str]] = {}  # spec CID -> the CIDs it names (it never changes)

    def blobs_of(spec_cid: str) -> set[str]:
        if spec_cid not in named:
            cids = {spec_cid}

            def get(cid: str, _: str) -> bytes:
                cids.add(cid)
                return store.get(cid)
            try:
                job_from_blobs(store.get(spec_cid), get)
            except VeracityError:  # a spec it cannot read: hide what it found
                pass
            named[spec_cid] = cids
        return named[spec_cid]

    def hidden(cid: str) -> bool:
        return any(cid == job.trace_cid or (job.spec_cid and cid in blobs_of(job.spec_cid)) for job in committed())

    return hidden
