"""The soak with faults, 45 s of it (``bench/soak.py`` runs it for ten minutes): clients submit random
jobs of every kind and the gateway serves requests while daemons are killed with ``kill -9`` (every
7.5 s on average: the same chance of no fault at all as two minutes at every 20 s) and restarted; at
the end every order is terminal, tokens are conserved, nothing is lost or paid twice, and every
validator verdict on the honest providers' results is a match."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent.parent / "bench"


def test_faults_lose_nothing(tmp_path):
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, str(BENCH / "soak.py"), "--minutes", "0.75", "--fault-every", "7.5",
                           "--clients", "2", "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(out.read_text())
    print(json.dumps(got, indent=1))  # the seed replays it (--seed)
    assert got["faults"] >= 1 and got["jobs_submitted"] >= 2 and got["jobs_settled"] >= 1
    assert got["lost"] == 0 and got["paid_twice"] == 0 and got["conserved"] is True, got
    assert got["wrong_verdicts"] == 0 and got["verdicts"] >= 1, got
    assert set(got["orders_by_state"]) <= {"finalized", "refunded", "cancelled"}, got  # honest: none overturned
    assert proc.returncode == 0, proc.stderr[-3000:]
