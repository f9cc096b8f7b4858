"""The explorer: how fast its index reads the chain, and how fast its pages answer with 1,000 orders.

A fresh anvil devnet gets ``--orders`` honest orders (opened, matched, committed, finalized:
``sim.traffic``); a fresh index then reads every event (``events_per_s``: events indexed per second,
block times included), and the explorer, served by uvicorn as its own process on 127.0.0.1, is asked
for its pages in turn (overview, providers, an order, an account, leases) ``--rounds`` times each:
``p95_page_ms`` is the 95th percentile of their times (the target: under 300 ms).

    python bench/explorer.py --json bench/results/explorer.json
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _common import write_json  # bench/_common.py (the script folder is on sys.path)
from rich.console import Console
from rich.table import Table

from veracity.chain.anvil import Anvil
from veracity.chain.devnet import deploy, dev_accounts
from veracity.explorer.index import Index
from veracity.node.launcher import spawn_explorer
from veracity.sim.traffic import anvil_advance, settled_orders


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--orders", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=40, help="requests of each page")
    args = ap.parse_args()
    console = Console()
    node = Anvil(accounts=4)
    folder = Path(tempfile.mkdtemp(prefix="veracity-bench-explorer-"))
    try:
        accounts = dev_accounts(4)
        dep = deploy(node.rpc_url, accounts[0], accounts)
        dep_file = folder / "deployment.json"
        dep.write(dep_file)
        t = time.perf_counter()
        with console.status(f"{args.orders} orders on the devnet") as status:
            ids = settled_orders(dep, accounts[1].key, accounts[2].key, args.orders, advance=anvil_advance(dep),
                                 progress=lambda i: status.update(f"{i} of {args.orders} orders"))
        made_s = time.perf_counter() - t
        index = Index(folder / "explorer.db", dep)
        t = time.perf_counter()
        events = index.sync()
        index_s = time.perf_counter() - t
        proc, url = spawn_explorer(dep_file, folder / "explorer.db", folder / "explorer.log")
        try:
            rng = random.Random(7)
            pages = {"overview": lambda: "", "providers": lambda: "providers",
                     "order": lambda: f"order/{rng.choice(ids)}", "account": lambda: f"address/{accounts[2].address}",
                     "leases": lambda: "leases"}
            times: dict[str, list[float]] = {name: [] for name in pages}
            with httpx.Client(timeout=30) as http:
                for name, path in pages.items():  # one each first: nothing cold is timed
                    http.get(url + path()).raise_for_status()
                for _ in range(args.rounds):
                    for name, path in pages.items():
                        t = time.perf_counter()
                        http.get(url + path()).raise_for_status()
                        times[name].append((time.perf_counter() - t) * 1000)
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        node.stop()
    every = sorted(x for v in times.values() for x in v)
    p95 = every[int(0.95 * (len(every) - 1))]
    result = {"orders": args.orders, "events": events, "events_per_s": round(events / index_s, 1),
              "index_s": round(index_s, 2), "orders_made_s": round(made_s, 1), "p95_page_ms": round(p95, 1),
              "median_page_ms": {k: round(statistics.median(v), 1) for k, v in times.items()},
              "p95_page_ms_by_page": {k: round(sorted(v)[int(0.95 * (len(v) - 1))], 1) for k, v in times.items()}}
    table = Table("measure", "value", title=f"the explorer with {args.orders} orders ({events} events)")
    table.add_row("events_per_s (a fresh index, block times included)", f"{result['events_per_s']:,}")
    table.add_row("p95_page_ms (all pages, 127.0.0.1)", f"{p95:.1f}")
    for k in times:
        table.add_row(f"  {k}: median / p95 ms", f"{result['median_page_ms'][k]} / {result['p95_page_ms_by_page'][k]}")
    console.print(table)
    write_json(args.json, result)
    return 0 if p95 < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
