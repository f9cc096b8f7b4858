"""The explorer's index: every event of a deployment's contracts, in SQLite, with a resumable cursor.

``Index.sync`` reads the events after the cursor (``chain.events.EventStream``), in chain order,
and stores each with its block's time, the order it concerns and every address it names, in one
transaction with the cursor: a restart goes on from there without missing or repeating one.
Pages read the index (``explorer.views``); the chain's current state (stakes, balances) and the
nodes' HTTP APIs are read where the events do not hold a thing.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

from eth_utils import keccak

from veracity.chain.client import Chain
from veracity.chain.devnet import Deployment
from veracity.chain.events import ChainEvent, EventStream

SCHEMA = """
CREATE TABLE IF NOT EXISTS cursor (name TEXT PRIMARY KEY, block INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, block INTEGER NOT NULL, log_index INTEGER NOT NULL, time INTEGER NOT NULL,
    tx TEXT NOT NULL, contract TEXT NOT NULL, name TEXT NOT NULL, order_id INTEGER, args TEXT NOT NULL,
    UNIQUE (block, log_index));
CREATE INDEX IF NOT EXISTS events_order ON events (order_id, id);
CREATE INDEX IF NOT EXISTS events_name ON events (name, id);
CREATE TABLE IF NOT EXISTS actors (event_id INTEGER NOT NULL, address TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS actors_address ON actors (address, event_id);
"""

# the deployment's contracts whose events are indexed: (its field, the contract's name)
CONTRACTS = (("token", "Token"), ("registry", "Registry"), ("market", "Market"), ("disputes", "Disputes"),
             ("oracle", "Oracle"), ("agent_registry", "AgentRegistry"), ("reputation", "Reputation"),
             ("validation", "Validation"), ("collective", "Collective"), ("data_pool", "DataPool"),
             ("label_tasks", "LabelTasks"))
ORDER_KEYS = ("order_id", "lease", "request_id")  # an event's order: the Market's and the Disputes' ids
ORDER_CONTRACTS = ("Market", "Disputes", "Oracle", "DataPool")  # an Oracle request's id, a score order: Market orders
# embeddings (1536 bytes each) that no page shows: stored as their keccak256, which the DataPool
# keeps too (a pool's topic_hash, its accepted_hash)
BULKY = {("DataPool", "PoolCreated"): "topic", ("DataPool", "Accepted"): "embedding"}
LOCAL_MAX = 2**63 - 1


def plain(v: Any) -> Any:
    """An event argument as JSON holds it: bytes as 0x hex, integers past int64 as strings."""
    if isinstance(v, (bytes, bytearray)):
        return "0x" + bytes(v).hex()
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v if -LOCAL_MAX <= v <= LOCAL_MAX else str(v)
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def addresses(args: dict[str, Any]) -> set[str]:
    """Every account an event names (lowercase 0x, 40 hex digits; not the zero address)."""
    found = set()
    for v in args.values():
        for x in (v if isinstance(v, list) else [v]):
            if isinstance(x, str) and ADDRESS.fullmatch(x) and int(x, 16) != 0:
                found.add(x.lower())
    return found


def order_of(e: ChainEvent) -> int | None:
    """The order an event concerns (Oracle requests and a pool's score orders are Market orders too),
    else None."""
    if e.contract not in ORDER_CONTRACTS:
        return None
    for k in ORDER_KEYS:
        v = e.args.get(k)
        if isinstance(v, int) and 0 <= v <= LOCAL_MAX:
            return v
    return None


def slim(contract: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` as stored: a bulky field (``BULKY``) replaced by its keccak256 (``<field>_keccak``)."""
    field = BULKY.get((contract, name))
    if field is None or field not in args:
        return args
    out = {k: v for k, v in args.items() if k != field}
    raw = args[field]
    try:
        data = bytes.fromhex(raw.removeprefix("0x")) if isinstance(raw, str) else bytes(raw)
    except (ValueError, TypeError):
        return out
    out[f"{field}_keccak"] = "0x" + keccak(data).hex()
    return out


class Index:
    """The SQLite index at ``path`` of deployment ``dep``'s events (``sync`` adds the new ones)."""

    def __init__(self, path: Path, dep: Deployment) -> None:
        self.path, self.dep = Path(path), dep
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.chain = Chain(dep.rpc_url)
        watched = {name: getattr(dep, field) for field, name in CONTRACTS if getattr(dep, field, None)}
        self.addresses = {name: addr for name, addr in watched.items()}
        with self.db() as db:
            db.executescript(SCHEMA)
        self._same_chain(watched)
        self.stream = EventStream(self.chain, watched, self.cursor())
        self._times: dict[int, int] = {}
        self._head = self._count()

    def _same_chain(self, watched: dict[str, str]) -> None:
        """Start afresh when the index was made for another chain (a devnet started again has the same
        addresses and a new block 0) or for other contracts."""
        genesis = "0x" + bytes(self.chain.w3.eth.get_block(0)["hash"]).hex()
        want = json.dumps({"chain_id": self.dep.chain_id, "genesis": genesis,
                           "contracts": {k: v.lower() for k, v in sorted(watched.items())}})
        db = self.db()
        row = db.execute("SELECT value FROM meta WHERE name = 'chain'").fetchone()
        if row is not None and row[0] == want:
            return
        db.execute("BEGIN")
        for table in ("events", "actors", "cursor", "meta"):
            db.execute(f"DELETE FROM {table}")
        db.execute("INSERT INTO meta (name, value) VALUES ('chain', ?)", (want,))
        db.execute("COMMIT")

    def db(self) -> sqlite3.Connection:
        """This thread's connection (WAL: pages read while the indexer writes)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    def cursor(self) -> int:
        row = self.db().execute("SELECT block FROM cursor WHERE name = 'chain'").fetchone()
        return int(row[0]) if row else 0

    def _time(self, block: int) -> int:
        if block not in self._times:
            self._times[block] = int(self.chain.w3.eth.get_block(block)["timestamp"])
        return self._times[block]

    def sync(self, max_blocks: int = 5000) -> int:
        """Index the events of the blocks after the cursor (at most ``max_blocks`` at a time, until the
        chain's head); returns how many were added."""
        added = 0
        while True:
            start = self.stream.next_block
            try:
                events = self.stream.poll(max_blocks)
                if self.stream.next_block == start:
                    return added
                self.store(events, self.stream.next_block)
            except BaseException:
                self.stream.next_block = start  # nothing stored: read these blocks again
                raise
            added += len(events)
            self._head = self._count()

    def store(self, events: list[ChainEvent], next_block: int) -> None:
        """``events`` and the cursor past them, in one transaction."""
        self._times = {}  # block times of this batch only (a block's events come in one batch)
        db = self.db()
        db.execute("BEGIN")
        try:
            for e in events:
                if e.name == "Approval":  # an allowance moves nothing: not told
                    continue
                args = plain(slim(e.contract, e.name, e.args))
                cur = db.execute(
                    "INSERT OR IGNORE INTO events (block, log_index, time, tx, contract, name, order_id, args) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (e.block, e.log_index, self._time(e.block), e.tx_hash, e.contract, e.name, order_of(e),
                     json.dumps(args)))
                if cur.rowcount:
                    db.executemany("INSERT INTO actors (event_id, address) VALUES (?, ?)",
                                   [(cur.lastrowid, a) for a in sorted(addresses(args))])
            db.execute("INSERT INTO cursor (name, block) VALUES ('chain', ?) "
                       "ON CONFLICT (name) DO UPDATE SET block = excluded.block", (next_block,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # reads ------------------------------------------------------------------------------------
    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Event rows, their args decoded."""
        out = []
        for r in self.db().execute(sql, params):
            d = dict(r)
            if "args" in d:
                d["args"] = json.loads(d["args"])
            out.append(d)
        return out

    def events(self, *names: str, order: int | None = None, limit: int | None = None,
               newest: bool = False, contract: str | tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Events named ``names`` (all when none), of ``order`` and ``contract`` (a name or several)
        when given, oldest first (or newest)."""
        where: list[str] = []
        params: list[Any] = []
        if names:
            where.append(f"name IN ({', '.join('?' * len(names))})")
            params += list(names)
        if contract is not None:
            wanted = (contract,) if isinstance(contract, str) else tuple(contract)
            where.append(f"contract IN ({', '.join('?' * len(wanted))})")
            params += list(wanted)
        if order is not None:
            where.append("order_id = ?")
            params.append(order)
        sql = "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id" + (" DESC" if newest else "") + (f" LIMIT {int(limit)}" if limit else "")
        return self.rows(sql, tuple(params))

    def of_address(self, address: str, limit: int = 200) -> list[dict[str, Any]]:
        return self.rows("SELECT e.* FROM actors a JOIN events e ON e.id = a.event_id WHERE a.address = ? "
                         "ORDER BY e.id DESC LIMIT ?", (address.lower(), limit))

    def count(self, *names: str, contract: str | None = None) -> int:
        where = ([f"name IN ({', '.join('?' * len(names))})"] if names else []) + (["contract = ?"] if contract else [])
        q = "SELECT COUNT(*) FROM events" + (" WHERE " + " AND ".join(where) if where else "")
        return int(self.db().execute(q, names + ((contract,) if contract else ())).fetchone()[0])

    def _count(self) -> dict[str, int]:
        row = self.db().execute("SELECT MAX(id), MAX(block) FROM events").fetchone()  # ids: 1, 2, 3... (no deletes)
        return {"cursor": self.cursor(), "events": int(row[0] or 0), "block": int(row[1] or 0)}

    def head(self) -> dict[str, int]:
        """The indexed head: the next block to read, the events held and the latest block among them
        (kept by ``sync``: reading it costs nothing)."""
        return dict(self._head)

