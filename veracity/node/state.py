"""A node's durable state in SQLite (WAL): event cursors and each job's progress.

Every step a daemon takes is written here before the next begins, so after ``kill -9`` and a
restart it resumes where it was: it re-reads events from its cursor and finishes, commits or
gives up on each job according to its recorded status. Status changes follow the job's life;
an impossible change (committing a job that never ran) is refused.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veracity.errors import VeracityError

# provider's view of a job: which statuses may follow which
NEXT = {
    "seen": {"bid", "skipped"},
    "bid": {"accepted", "lost"},
    "accepted": {"running", "gave_up"},
    "running": {"done", "accepted", "failed", "gave_up"},  # back to accepted: retry after a crash
    "done": {"committed", "gave_up"},
    "committed": {"settled", "challenged", "overturned", "undecided"},
    "challenged": {"settled", "committed", "overturned", "undecided"},  # back to committed: the challenger lost
}
FINAL = {"skipped", "lost", "failed", "gave_up", "settled", "overturned", "undecided"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, block INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    order_id INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    model TEXT,
    spec_cid TEXT,
    price TEXT,
    deadline INTEGER,
    output_cid TEXT,
    trace_root TEXT,
    trace_length INTEGER,
    error TEXT,
    updated_at REAL NOT NULL,
    bid TEXT,
    trace_cid TEXT,
    outputs TEXT
);
"""
FIELDS = ("model", "spec_cid", "price", "deadline", "output_cid", "trace_root", "trace_length", "error", "bid",
          "trace_cid", "outputs")
COLUMNS = ("order_id", "status", "model", "spec_cid", "price", "deadline", "output_cid", "trace_root", "trace_length",
           "error", "updated_at", "bid", "trace_cid", "outputs")  # the order of Job's fields
SELECT = f"SELECT {', '.join(COLUMNS)} FROM jobs"


def _stored(fields: dict[str, Any]) -> dict[str, Any]:
    """Job fields as stored: a price as decimal text."""
    return {k: str(v) if k == "price" and v is not None else v for k, v in fields.items()}


def _job(row: tuple[Any, ...]) -> "Job":
    """A jobs row as a Job: its price read back as an integer."""
    fields = list(row)
    at = COLUMNS.index("price")
    fields[at] = None if fields[at] is None else int(fields[at])
    return Job(*fields)


class StateError(VeracityError):
    """A job status change that its life does not allow."""


@dataclass(frozen=True)
class Job:
    order_id: int
    status: str
    model: str | None
    spec_cid: str | None
    price: int | None  # token base units (kept as decimal text: an amount may pass SQLite's 2^63)
    deadline: int | None
    output_cid: str | None
    trace_root: str | None
    trace_length: int | None
    error: str | None
    updated_at: float
    bid: str | None  # the signed bid (JSON) this node offered, served again after a restart
    trace_cid: str | None  # the blob of the job's trace records
    outputs: str | None = None  # the output records' digests committed (hex, concatenated)


class NodeState:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        have = {r[1]: r[2] for r in self.db.execute("PRAGMA table_info(jobs)")}
        for col in ("bid", "trace_cid", "outputs"):  # a state file from an older version
            if col not in have:
                self.db.execute(f"ALTER TABLE jobs ADD COLUMN {col} TEXT")
        if have.get("price") == "INTEGER":  # an older state file's prices, as text (no amount is too large)
            self.db.execute("ALTER TABLE jobs RENAME COLUMN price TO price_integer")
            self.db.execute("ALTER TABLE jobs ADD COLUMN price TEXT")
            self.db.execute("UPDATE jobs SET price = CAST(price_integer AS TEXT)")

    def close(self) -> None:
        self.db.close()

    # cursors --------------------------------------------------------------------------------
    def cursor(self, name: str, default: int = 0) -> int:
        row = self.db.execute("SELECT block FROM cursors WHERE name = ?", (name,)).fetchone()
        return default if row is None else int(row[0])

    def set_cursor(self, name: str, block: int) -> None:
        self.db.execute("INSERT INTO cursors (name, block) VALUES (?, ?) "
                        "ON CONFLICT(name) DO UPDATE SET block = excluded.block", (name, block))

    # jobs -----------------------------------------------------------------------------------
    def job(self, order_id: int) -> Job | None:
        if not 0 <= order_id < 2**63:  # no order has that id (nor could SQLite look it up)
            return None
        row = self.db.execute(f"{SELECT} WHERE order_id = ?", (order_id,)).fetchone()
        return None if row is None else _job(row)

    def add_job(self, order_id: int, **fields: Any) -> Job:
        """Record a newly seen order (status 'seen'); seeing it again changes nothing."""
        cols = _stored({k: v for k, v in fields.items() if k in FIELDS})
        names = ", ".join(["order_id", "status", "updated_at", *cols])
        marks = ", ".join("?" * (3 + len(cols)))
        self.db.execute(f"INSERT OR IGNORE INTO jobs ({names}) VALUES ({marks})",
                        (order_id, "seen", time.time(), *cols.values()))
        return self.job(order_id)  # type: ignore[return-value]

    def advance(self, order_id: int, status: str, **fields: Any) -> Job:
        """Move a job to ``status`` (and record ``fields``) if its life allows it, atomically."""
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise StateError(f"unknown job fields {sorted(unknown)}")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            job = self.job(order_id)
            if job is None:
                raise StateError(f"order {order_id} is not a known job")
            if status not in NEXT.get(job.status, set()):
                raise StateError(f"order {order_id} cannot go from {job.status} to {status}")
            sets = ", ".join(["status = ?", "updated_at = ?", *(f"{k} = ?" for k in fields)])
            self.db.execute(f"UPDATE jobs SET {sets} WHERE order_id = ?",
                            (status, time.time(), *_stored(fields).values(), order_id))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return self.job(order_id)  # type: ignore[return-value]

    def record(self, order_id: int, **fields: Any) -> Job:
        """Record ``fields`` of a job without changing its status (a standing lease's window spec)."""
        unknown = set(fields) - set(FIELDS)
        if unknown or not fields:
            raise StateError(f"unknown job fields {sorted(unknown)}")
        sets = ", ".join(["updated_at = ?", *(f"{k} = ?" for k in fields)])
        self.db.execute(f"UPDATE jobs SET {sets} WHERE order_id = ?", (time.time(), *_stored(fields).values(), order_id))
        return self.job(order_id)  # type: ignore[return-value]

    def jobs(self, *statuses: str) -> list[Job]:
        marks = ", ".join("?" * len(statuses))
        rows = self.db.execute(f"{SELECT} WHERE status IN ({marks}) ORDER BY order_id", statuses)
        return [_job(r) for r in rows]

    def unfinished(self) -> list[Job]:
        """Jobs a restarted daemon must resume: every status that is not final."""
        return self.jobs(*[s for s in NEXT if s not in FINAL])


class CheckLog:
    """A validator's record of spot checks: one verdict per order, kept across restarts."""

    def __init__(self, state: NodeState) -> None:
        self.db = state.db
        self.db.execute("CREATE TABLE IF NOT EXISTS checks (order_id INTEGER PRIMARY KEY, verdict TEXT NOT NULL, "
                        "detail TEXT, checked_at REAL NOT NULL)")

    def record(self, order_id: int, verdict: str, detail: str = "") -> None:
        self.db.execute("INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?)", (order_id, verdict, detail, time.time()))

    def verdict(self, order_id: int) -> str | None:
        row = self.db.execute("SELECT verdict FROM checks WHERE order_id = ?", (order_id,)).fetchone()
        return None if row is None else row[0]

    def all(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT order_id, verdict, detail FROM checks ORDER BY order_id")
        return [{"order_id": r[0], "verdict": r[1], "detail": r[2]} for r in rows]
