"""A committed output, checked against its committed trace, and proven wrong on chain when it is not.

A commitment puts the output records' digests on chain (``Market.commit_result``; the order's
output CID is their output root). Clients and validators, holding the committed trace (served by
the provider, or recomputed: the same bits), look for a committed output that is not its trace
record (``verify.outputs.find_fault``) and prove it in one call (``Disputes.prove_output_fault``):
the provider is slashed and the prover takes the challenger's share. A client also reads the
outputs the provider serves (``GET /traces/{order}`` names their blob) and checks they are the
committed ones. Outputs withheld or unreadable become an action on chain: the client asks for a
sample of their chunks (``OutputFaults.request_chunk``, ``OutputAsks``); the result is not paid
until they are served, and a provider that does not serve them by the deadline is slashed (the
client's own re-run, exact, then gives the outputs the served chunks proved available).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from veracity.blobs.store import BlobError
from veracity.blobs.transfer import fetch
from veracity.errors import InputError, VeracityError
from veracity.exact.trace import TraceRecord
from veracity.verify.available import SAMPLE, asked_chunks, chunk_counts
from veracity.verify.outputs import find_fault
from veracity.workloads.jobs import Job


@dataclass(frozen=True)
class OutputVerdict:
    ok: bool  # the served outputs are the committed output, and it is the trace's
    reason: str = ""
    proven: bool = False  # the fault was proven on chain (the provider is slashed)
    fault: bool = False  # the committed outputs are not the trace's (provable), not merely the served ones


def served_output(url: str, order_id: int) -> tuple[str, bytes]:
    """The output blob a provider serves for an order: (its CID, its bytes, checked against it)."""
    try:
        resp = httpx.get(f"{url.rstrip('/')}/traces/{order_id}", timeout=10)
        if resp.status_code != 200:
            raise BlobError(f"the provider serves no result for order {order_id} ({resp.status_code})")
        cid = resp.json()["output_cid"]
        if not isinstance(cid, str):
            raise BlobError(f"the provider names no output blob for order {order_id}")
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise BlobError(f"the provider's result could not be read ({exc})") from None
    return cid, fetch(url, cid)


def judge_output(job: Job, program: list[Any], records: list[TraceRecord], committed: list[bytes],
                 served: bytes | None = None, disputes: Any = None, order_id: int = 0,
                 model: Any = None) -> OutputVerdict:
    """Whether the committed outputs (their digests, which the commitment put on chain) are the
    committed trace's (``records``, whose root is the committed one), a fault proven with
    ``disputes`` when given; and whether ``served`` (when given) is the committed output."""
    fault = find_fault(program, records, committed)
    if fault is not None:
        if disputes is None:
            return OutputVerdict(False, fault.reason, fault=True)
        try:
            disputes.prove_output_fault(order_id, fault)
        except VeracityError as exc:
            return OutputVerdict(False, f"{fault.reason}; could not prove it on chain: {exc}", fault=True)
        return OutputVerdict(False, f"{fault.reason}; proven on chain: the provider is slashed", proven=True,
                             fault=True)
    if served is None:
        return OutputVerdict(True)
    try:
        digests = job.served_digests(served, model)
    except InputError as exc:
        return OutputVerdict(False, f"the served outputs cannot be read ({exc})")
    if digests != committed:
        return OutputVerdict(False, "the served outputs are not the committed output")
    return OutputVerdict(True)


class OutputAsks:
    """The output chunks a client asked for on chain, followed until each is served or claimed.

    ``tick`` claims every request whose deadline passed unserved (the provider loses: the order
    is overturned, the client refunded and paid the challenger's share); ``open`` says whether any
    is still waiting; ``withheld`` whether the provider failed one."""

    def __init__(self, outputs: Any, order_id: int, program: list[Any], k: int = SAMPLE) -> None:
        self.outputs, self.order_id = outputs, order_id
        self.pending: list[tuple[int, int]] = []
        self.withheld = False
        refused = []
        for output, chunk in asked_chunks(chunk_counts(program), k):
            if outputs.open_request(order_id, output, chunk) is not None:  # asked already (perhaps by the
                self.pending.append((output, chunk))                       # provider's sybil): followed all the same
            elif not outputs.was_served(order_id, output, chunk):
                try:
                    outputs.request_chunk(order_id, output, chunk)
                    self.pending.append((output, chunk))
                except VeracityError as exc:
                    refused.append(str(exc))
        if not self.pending and refused:
            raise VeracityError(f"no output chunk could be asked for: {refused[0]}")

    def open(self) -> bool:
        return bool(self.pending)

    def tick(self, now: int) -> None:
        for output, chunk in list(self.pending):
            ask = self.outputs.open_request(self.order_id, output, chunk)
            if ask is None:  # served (its bytes are in the ChunkServed log), or settled
                self.pending.remove((output, chunk))
            elif now > ask.deadline:
                try:
                    self.outputs.claim_unserved(self.order_id, output, chunk)
                except VeracityError:  # somebody claimed it first (the next tick sees it closed)
                    continue
                self.pending.remove((output, chunk))
                self.withheld = True
