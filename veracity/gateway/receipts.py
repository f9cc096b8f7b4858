"""Checking a receipt against the chain: was this answer committed, and is it still standing?

``verify`` reads the lease (the standing order) from the Market: its provider must be the
receipt's signer; once the window is posted and committed, the window's spec, inputs and outputs
are fetched by the CIDs on chain (every byte checked against its CID), the outputs must give the
committed output root and each output must be its record in the committed trace (else anyone can
overturn the window: ``Disputes.prove_output_fault``), and line ``index`` of the inputs and of
the outputs must hash to the receipt's input and output hashes. The verdict says
what a caller can rely on: ``verified`` (committed, and final or in its challenge window),
``pending`` (served, the window not committed yet), or ``failed`` (with the reason: another
signer, a different committed answer, a window overturned by a dispute or never committed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from veracity.blobs.transfer import fetch, fetch_trace
from veracity.chain.devnet import Deployment
from veracity.cid import cid_from_digest
from veracity.client.jobs import providers
from veracity.client.outputs import judge_output, served_output
from veracity.errors import SignatureError, VeracityError
from veracity.market.receipts import Receipt, line_hash
from veracity.workloads.jobs import job_from_blobs


@dataclass
class ReceiptCheck:
    verdict: str  # verified, pending, failed
    reason: str
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict == "verified"


def _line(blob: bytes, index: int) -> str | None:
    lines = [ln for ln in blob.decode("utf-8").splitlines() if ln.strip()]
    return lines[index] + "\n" if index < len(lines) else None


def _output_wrong(market: Any, url: str, lease: int, order: Any, job: Any, outputs: bytes) -> str | None:
    """Why a window's served outputs are not an output its committed trace proves (None: they are):
    they must be the committed outputs, and each output must be its trace record (``judge_output``,
    read-only here: a fault is reported, not proven)."""
    from veracity.exact.program import program_root

    try:
        committed = market.committed_outputs(lease)
        records = fetch_trace(url, lease, order.trace_root)
    except VeracityError as exc:
        return str(exc)
    program = job.posted_program(job.model())
    if program_root(program) != market.program(lease)[0]:
        return "the window's program is not its job's"
    verdict = judge_output(job, program, records, committed, outputs)
    if not verdict.fault:
        return None if verdict.ok else verdict.reason
    return f"its committed output is not its trace's ({verdict.reason}); anyone can prove it"


def window_of(order: Any) -> dict[str, Any] | None:
    """The window commitment a receipt carries once its lease's result is on chain."""
    if not any(order.output_cid):
        return None
    return {"spec_cid": cid_from_digest(order.spec_cid), "output_cid": cid_from_digest(order.output_cid),
            "trace_root": "0x" + order.trace_root.hex(), "trace_length": order.trace_length,
            "state": order.state_name}


def read_receipt(text: str) -> Receipt:
    """A receipt from JSON text: the ``x-veracity-receipt`` header, a response's ``veracity.receipt``,
    or a whole response (its first receipt). ValueError says what is wrong with it."""
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and "veracity" in doc:  # a whole response
            doc = doc["veracity"]["receipt"]
        elif isinstance(doc, dict) and "receipt" in doc:
            doc = doc["receipt"]
        if isinstance(doc, list):
            doc = doc[0]
        return Receipt.model_validate(doc)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"not a Veracity receipt ({str(exc).splitlines()[0]})") from None


def verify(dep: Deployment, key: str, receipt: Receipt) -> ReceiptCheck:
    if receipt.chain_id != dep.chain_id or receipt.market.lower() != dep.market.lower():
        return ReceiptCheck("failed", f"the receipt is for chain {receipt.chain_id}, market {receipt.market}; "
                                      f"this deployment is chain {dep.chain_id}, market {dep.market}")
    try:
        signer = receipt.signer()
    except SignatureError as exc:
        return ReceiptCheck("failed", f"the receipt's signature is refused: {exc}")
    if signer.lower() != receipt.provider.lower():
        return ReceiptCheck("failed", f"the receipt is signed by {signer}, not by its provider {receipt.provider}")
    market = dep.clients(key)[3]
    order = market.order(receipt.lease)
    facts: dict[str, Any] = {"lease": receipt.lease, "index": receipt.index, "provider": order.provider,
                             "state": order.state_name}
    if order.provider.lower() != receipt.provider.lower():
        return ReceiptCheck("failed", f"lease {receipt.lease}'s provider is {order.provider}, not the receipt's "
                                      f"signer {receipt.provider}", facts)
    if order.state_name == "overturned":
        return ReceiptCheck("failed", f"a dispute found lease {receipt.lease}'s window wrong: the provider was "
                                      "slashed and the answer must not be relied on", facts)
    if not any(order.output_cid):
        if order.state_name == "refunded":
            return ReceiptCheck("failed", f"lease {receipt.lease}'s window was never committed: the provider "
                                          "missed its deadline, its collateral was slashed", facts)
        posted = any(order.spec_cid)
        return ReceiptCheck("pending", f"lease {receipt.lease}'s window is {'posted' if posted else 'still open'}; "
                                       "its commitment is not on chain yet", facts)
    window = window_of(order)
    facts.update(window or {})
    url = providers(dep, key).get(order.provider)
    if url is None:
        raise VeracityError(f"provider {order.provider} is not registered: its blobs cannot be fetched")
    spec_blob = fetch(url, window["spec_cid"])  # type: ignore[index]
    spec = json.loads(spec_blob)
    inputs = fetch(url, spec["inputs"]["cid"])
    _, outputs = served_output(url, receipt.lease)
    wrong = _output_wrong(market, url, receipt.lease, order, job_from_blobs(spec_blob, lambda cid, _: fetch(url, cid)), outputs)
    if wrong:
        return ReceiptCheck("failed", f"lease {receipt.lease}'s window cannot be relied on: {wrong}", facts)
    got_in, got_out = _line(inputs, receipt.index), _line(outputs, receipt.index)
    if got_in is None or line_hash(got_in) != receipt.input_hash:
        return ReceiptCheck("failed", f"request {receipt.index} is not line {receipt.index} of the window's "
                                      "committed inputs", facts)
    if got_out is None or line_hash(got_out) != receipt.output_hash:
        return ReceiptCheck("failed", f"the provider signed an answer that its committed window does not hold "
                                      f"(line {receipt.index} of output {window['output_cid']} differs)", facts)  # type: ignore[index]
    if order.state_name == "committed" and market.fn.challenged(receipt.lease).call():
        return ReceiptCheck("pending", f"the answer is line {receipt.index} of lease {receipt.lease}'s committed "
                                       "window, which is being disputed: wait for the dispute", facts)
    final = order.state_name == "finalized"
    return ReceiptCheck("verified", "the answer is line {} of the committed window{}".format(
        receipt.index, ", finalized" if final else ", in its challenge window"), facts)
