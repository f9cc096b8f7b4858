"""Node state in SQLite: survives a restart, follows each job's life, refuses impossible steps."""

import subprocess
import sys

import pytest

from veracity.node.state import NodeState, StateError


def test_state_survives_a_hard_kill(tmp_path):
    db = tmp_path / "node.db"
    script = f"""
import os, signal
from veracity.node.state import NodeState
s = NodeState({str(db)!r})
s.set_cursor("market", 42)
s.add_job(7, model="minilm", price=5, deadline=1000)
s.advance(7, "bid")
s.advance(7, "accepted")
s.advance(7, "running")
os.kill(os.getpid(), signal.SIGKILL)  # no clean shutdown
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    s = NodeState(db)
    assert s.cursor("market") == 42 and s.cursor("other", 5) == 5
    job = s.job(7)
    assert job.status == "running" and job.model == "minilm" and job.price == 5
    assert [j.order_id for j in s.unfinished()] == [7]
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_job_life_is_enforced(tmp_path):
    s = NodeState(tmp_path / "n.db")
    s.add_job(1)
    with pytest.raises(StateError, match="cannot go from seen to committed"):
        s.advance(1, "committed")
    for status in ("bid", "accepted", "running", "done"):
        s.advance(1, status)
    s.advance(1, "committed", output_cid="bafk", trace_root="ab", trace_length=3)
    assert s.job(1).trace_length == 3
    s.add_job(1, model="ignored")  # seeing an order again changes nothing
    assert s.job(1).status == "committed"
    with pytest.raises(StateError, match="not a known job"):
        s.advance(99, "bid")
    with pytest.raises(StateError, match="unknown job fields"):
        s.advance(1, "settled", colour="blue")
    s.advance(1, "settled")
    assert s.unfinished() == [] and [j.order_id for j in s.jobs("settled")] == [1]


def test_two_connections_see_each_others_writes(tmp_path):
    a, b = NodeState(tmp_path / "n.db"), NodeState(tmp_path / "n.db")
    a.add_job(3)
    b.advance(3, "bid")
    assert a.job(3).status == "bid"


def test_any_token_amount_is_kept_exactly(tmp_path):
    """A spec's max_price past 2^63 wei (9.23 VRC) once overflowed SQLite's integers, and the
    provider never decided on the order."""
    from veracity.market.policy import OrderView, PricePolicy, decide_bid

    s = NodeState(tmp_path / "n.db")
    for oid, price in enumerate((2**63, 2**256 - 1, 10 * 10**18, 0), 1):
        s.add_job(oid, model="minilm", price=price, deadline=10**6)
        assert s.job(oid).price == price and type(s.job(oid).price) is int
    terms = decide_bid(OrderView(1, "minilm", s.job(1).price, 10**6), PricePolicy(models=["minilm"], price_floor=1),
                       0, 0, 10**24)
    assert not isinstance(terms, str) and 0 < terms.price <= 2**63


def test_an_older_state_files_integer_prices_are_kept(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "n.db")
    old.execute("CREATE TABLE jobs (order_id INTEGER PRIMARY KEY, status TEXT NOT NULL, model TEXT, spec_cid TEXT, "
                "price INTEGER, deadline INTEGER, output_cid TEXT, trace_root TEXT, trace_length INTEGER, error TEXT, "
                "updated_at REAL NOT NULL)")
    old.execute("INSERT INTO jobs (order_id, status, price, updated_at) VALUES (4, 'bid', ?, 0)", (2**63 - 1,))
    old.commit()
    old.close()
    s = NodeState(tmp_path / "n.db")
    assert s.job(4).price == 2**63 - 1 and s.job(4).status == "bid"
    s.add_job(5, price=2**70)
    assert s.job(5).price == 2**70
