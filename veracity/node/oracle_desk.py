"""A provider's side of Oracle requests (``contracts/Oracle.vy``): the Oracle is the client of
their Market orders, so the provider reads each request's spec from the Oracle (built on chain
from the input, so its CID is the order's), takes a request itself with its signed bid (first
come, first served), and once the committed result's challenge window has passed delivers it
(``fulfil``: the Oracle finalizes the order, which pays the provider, and calls the consumer
back with the output).

``fulfil`` carries at most the Oracle's ``MAX_OUTPUT`` bytes, and an undelivered result is never
paid (the provider's collateral is slashed to the consumer), so a provider takes only a request
whose output fits (``undeliverable``)."""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np

from veracity.errors import InputError, VeracityError
from veracity.exact.program import build_with_outputs
from veracity.node.blobs import BlobStore
from veracity.node.state import NodeState
from veracity.workloads.infer import input_records, parse_items
from veracity.workloads.jobs import Job, job_from_blobs

ORACLE_MAX_OUTPUT = 4096  # contracts/Oracle.vy's MAX_OUTPUT: the most bytes fulfil carries
FLOAT_JSON = (3, 24)  # len(json.dumps(x)) of a float: "0.0" .. "-2.2250738585072014e-308"
INT_JSON = (1, 20)  # of an int64: "0" .. "-9223372036854775808"
CHAR_JSON = (1, 12)  # of one character in a string: "a" .. a surrogate pair "\ud83d\ude00"


def _json_bounds(shown: Any) -> tuple[int, int]:
    """The least and most ``len(json.dumps(v))`` over every ``v`` of ``shown``'s form: the same
    lists, dicts and string lengths, any numbers and characters."""
    if shown is None or isinstance(shown, bool):
        n = len(json.dumps(shown))
        return n, n
    if isinstance(shown, float):
        return FLOAT_JSON
    if isinstance(shown, int):
        return INT_JSON
    if isinstance(shown, str):
        return 2 + CHAR_JSON[0] * len(shown), 2 + CHAR_JSON[1] * len(shown)
    if isinstance(shown, (list, dict)):
        parts = [_json_bounds(v) for v in (shown if isinstance(shown, list) else shown.values())]
        fixed = 2 + 2 * max(len(parts) - 1, 0)  # brackets and ", " separators
        if isinstance(shown, dict):
            fixed += sum(len(json.dumps(k)) + 2 for k in shown)  # each key and its ": "
        return fixed + sum(lo for lo, _ in parts), fixed + sum(hi for _, hi in parts)
    raise TypeError(f"cannot bound the JSON size of a {type(shown).__name__}")


def output_bounds(job: Job, model: Any) -> tuple[int, int]:
    """The least and most bytes an ``infer`` job's output JSONL can be, with no arithmetic: each
    line echoes its input's fields (known) and adds the model's ``present`` of the item's output,
    whose form (list and string lengths) the job's program fixes (a shape-only dry run), while its
    numbers' digits are known only once it runs. Every model's ``present`` has a form set by the
    output's size alone (a list of floats, a class and logits, a character per token)."""
    if job.spec.kind != "infer":
        raise InputError(f"an Oracle request is an infer job, not {job.spec.kind}")
    records = input_records(job.inputs)
    if len(records) != 1:  # an Oracle input is one line; outputs are not split by item here
        raise InputError(f"an Oracle request has one input line, not {len(records)}")
    program, outputs = build_with_outputs(model, parse_items(model, records, "inputs"))
    sizes = [int(np.prod(program[i].dims)) for i in outputs]
    shown = model.present(np.zeros(sum(sizes), dtype=np.int64))
    lo, hi = _json_bounds(shown)
    rest = len(json.dumps({**records[0][1], "output": None})) - len("null") + 1  # the fields and "\n"
    return rest + lo, rest + hi


def undeliverable(job: Job, model: Any, limit: int = ORACLE_MAX_OUTPUT) -> str | None:
    """Why the job's output could not go through ``fulfil``, or None if it can. Exact, and cheap:
    the bounds decide most jobs (a digits item or a tiny-gpt prompt fits whatever it outputs);
    otherwise (a minilm embedding: its float digits decide) the job runs on the numpy backend,
    which gives the same bytes as every exact backend, in about 0.3 s for one minilm item."""
    lo, hi = output_bounds(job, model)
    if hi <= limit:
        return None
    if lo > limit:
        return f"its output would be at least {lo} bytes, more than the Oracle's {limit}-byte limit"
    size = len(job.run("numpy", model=model).outputs)
    if size > limit:
        return f"its output would be {size} bytes, more than the Oracle's {limit}-byte limit"
    return None


def _no_blob(cid: str, what: str) -> bytes:
    raise InputError(f"an Oracle spec holds its input inline; it names {what} {cid}")


class OracleDesk:
    def __init__(self, oracle: Any, market: Any, blobs: BlobStore, state: NodeState, now: Callable[[], int],
                 log: Callable[[str], None]) -> None:
        self.oracle, self.market, self.blobs, self.state, self.now, self.log = oracle, market, blobs, state, now, log
        self.due: dict[int, int] = {}  # requests committed here -> when to deliver them
        for job in self.state.jobs("committed", "challenged"):  # after a restart
            self.committed(job.order_id)

    def is_client(self, client: str) -> bool:
        return client.lower() == self.oracle.address.lower()

    def fetch_spec(self, oid: int, spec_cid: str) -> None:
        if not self.blobs.has(spec_cid):
            self.blobs.put(self.oracle.spec(oid))

    def undeliverable(self, oid: int) -> str | None:
        """Why request ``oid``'s output could not be delivered (too long for ``fulfil``), or None."""
        try:
            job = job_from_blobs(self.oracle.spec(oid), _no_blob, f"oracle request {oid}'s spec")
            return undeliverable(job, job.model())
        except VeracityError as exc:
            return f"its output cannot be sized ({exc})"

    def take(self, bid: Any) -> str | None:
        """Accept this node's own bid through the Oracle; why not: its output would be too long to
        deliver (checked first: an undelivered result is slashed), or another provider was first."""
        if why := self.undeliverable(bid.order_id):
            self.log(f"oracle request {bid.order_id}: not taken, {why}")
            return why
        try:
            self.oracle.accept(bid)
        except VeracityError as exc:
            return f"the Oracle request went to another provider ({exc})"
        self.log(f"oracle request {bid.order_id}: taken")
        return None

    def committed(self, oid: int) -> None:
        order = self.market.order(oid)
        if self.is_client(order.client):
            self.due[oid] = order.committed_at + order.challenge_window

    def deliver(self) -> None:
        now = self.now()
        for oid, due in list(self.due.items()):
            job = self.state.job(oid)
            if job is None or job.status not in ("committed", "challenged"):  # settled, overturned...
                del self.due[oid]
                continue
            if job.status == "challenged" or now < due:
                continue
            try:
                self.oracle.fulfil(oid, self.blobs.get(job.output_cid))  # type: ignore[arg-type]
                del self.due[oid]
                self.log(f"oracle request {oid}: delivered to its consumer")
            except VeracityError as exc:  # the window restarted after a won dispute, or a block is late
                self.due[oid] = now + 2
                self.log(f"oracle request {oid}: not delivered yet ({exc})")
