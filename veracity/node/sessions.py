"""A provider's side of standing leases: serve a lease client's requests as they come, exactly,
each answer with a signed receipt, and keep them (SQLite) until the client posts the window.

``POST /leases/{order}/requests`` takes ``{"index", "item", "signature"}``: request ``index`` of
the lease (0, 1, 2, ... with no gaps), its item as an ``infer`` input line, signed by the lease's
client (``market.receipts.sign_request``). The answer is the output line the window's ``infer``
job will write for it, with the provider's receipt. Asking again for an index already served
with the same item gives the same answer (a retried request); another item there is refused.
When the client posts the window (``Market.post_window``) the lease is an ordinary order: the
provider runs the window's job and commits it, and its outputs are the answers it served (exact
arithmetic: the same bits, whatever the batch).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from veracity.errors import InputError, VeracityError
from veracity.market import receipts as R


class LeaseError(VeracityError):
    """A request a lease cannot take; ``status`` is the HTTP status that says so."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LeaseTerms:
    """What the chain says of a lease: its client, model, provider and deadline, and whether its
    window is still open (no spec posted, accepted, this provider's)."""

    client: str
    model: str
    provider: str
    deadline: int
    open: bool


class LeaseLog:
    """The requests served under each lease, one row each, in this node's SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._db().execute("CREATE TABLE IF NOT EXISTS lease_requests (order_id INTEGER NOT NULL, idx INTEGER NOT NULL, "
                           "input_line TEXT NOT NULL, output_line TEXT NOT NULL, receipt TEXT NOT NULL, "
                           "PRIMARY KEY (order_id, idx))")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:  # one connection per thread (HTTP handlers run in a pool)
            db = self._local.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
        return db

    def served(self, order_id: int) -> list[tuple[str, str, str]]:
        """(input line, output line, receipt JSON) of every request served, in order."""
        rows = self._db().execute("SELECT input_line, output_line, receipt FROM lease_requests WHERE order_id = ? "
                                  "ORDER BY idx", (order_id,))
        return [tuple(r) for r in rows]  # type: ignore[misc]

    def count(self, order_id: int) -> int:
        return int(self._db().execute("SELECT COUNT(*) FROM lease_requests WHERE order_id = ?", (order_id,)).fetchone()[0])

    def get(self, order_id: int, index: int) -> tuple[str, str, str] | None:
        row = self._db().execute("SELECT input_line, output_line, receipt FROM lease_requests WHERE order_id = ? "
                                 "AND idx = ?", (order_id, index)).fetchone()
        return None if row is None else tuple(row)  # type: ignore[return-value]

    def add(self, order_id: int, index: int, input_line: str, output_line: str, receipt: str) -> None:
        self._db().execute("INSERT INTO lease_requests VALUES (?, ?, ?, ?, ?)",
                           (order_id, index, input_line, output_line, receipt))


class LeaseServer:
    """Serves requests under this provider's open leases. ``terms(order)`` reads a lease from the
    chain; ``answer(model, item)`` runs one item exactly and returns what the job's output shows
    for it. One request runs at a time (the models share this process's cores)."""

    def __init__(self, log: LeaseLog, key: str, address: str, chain_id: int, market: str,
                 terms: Callable[[int], LeaseTerms], answer: Callable[[str, dict[str, Any]], Any],
                 now: Callable[[], int], margin_s: int = 40, max_requests: int = 4096) -> None:
        self.log, self.key, self.address = log, key, address
        self.chain_id, self.market = chain_id, market
        self.terms, self.answer, self.now, self.margin_s = terms, answer, now, margin_s
        self.max_requests = max_requests  # per lease: a client must post what it was served
        self._lock = threading.Lock()

    def _lease(self, order_id: int) -> LeaseTerms:
        t = self.terms(order_id)  # read each time: the window may have been posted meanwhile
        if t.provider.lower() != self.address.lower():
            raise LeaseError(f"order {order_id} is not a lease this provider holds", 404)
        if not t.open:
            raise LeaseError(f"lease {order_id}'s window is closed (posted or settled): open a new lease")
        if self.now() > t.deadline - self.margin_s:
            raise LeaseError(f"lease {order_id} is past its serving time (its deadline is near): open a new lease")
        return t

    def serve(self, order_id: int, index: int, item: Any, signature: str) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise LeaseError('"item" must be a JSON object (an infer input line)', 400)
        if not isinstance(index, int) or index < 0:
            raise LeaseError('"index" must be a non-negative integer', 400)
        line = R.input_line(item)
        input_hash = R.line_hash(line)
        lease = self._lease(order_id)
        try:
            signer = R.request_signer(signature, self.chain_id, self.market, order_id, index, input_hash)
        except Exception:
            raise LeaseError("the request's signature cannot be read", 401) from None
        if signer.lower() != lease.client.lower():
            raise LeaseError(f"request {index} is not signed by lease {order_id}'s client", 401)
        with self._lock:
            lease = self._lease(order_id)  # again: the window may have been posted while this waited
            done = self.log.get(order_id, index)
            if done is not None:
                if done[0] != line:
                    raise LeaseError(f"request {index} of lease {order_id} was served with another item")
                return self._response(index, *done)
            have = self.log.count(order_id)
            if have >= self.max_requests:
                raise LeaseError(f"lease {order_id} has served its {self.max_requests} requests: post the window")
            if index != have:
                raise LeaseError(f"lease {order_id} expects request {have} next, not {index}")
            try:
                shown = self.answer(lease.model, item)
            except InputError as exc:
                raise LeaseError(str(exc), 400) from None
            out = R.output_line(item, shown)
            receipt = R.sign_receipt(self.key, self.chain_id, self.market, order_id, index, input_hash,
                                     R.line_hash(out))
            self.log.add(order_id, index, line, out, receipt.model_dump_json())
            return self._response(index, line, out, receipt.model_dump_json())

    @staticmethod
    def _response(index: int, _line: str, out: str, receipt: str) -> dict[str, Any]:
        return {"index": index, "output": json.loads(out)["output"], "receipt": json.loads(receipt)}
