"""A soak with faults: a devnet with two providers, a validator and the gateway, several clients
submitting random jobs of every kind and the gateway under load, while daemons are killed with
``kill -9`` and restarted. At the end every order must reach a terminal state, tokens are
conserved, no job is lost or paid twice, and every validator verdict is right (the providers are
honest, so every verdict is a match).

    python bench/soak.py --minutes 10 --json bench/results/soak.json

How it ends: the load stops, every daemon is restarted, and the chain's clock jumps past every
deadline and challenge window; each order's client then does what a client does with an order
nobody settled (``reclaim`` an order nobody took or committed, ``finalize`` a committed one). A job
is *lost* if its order is not terminal after that, or was paid without a committed result.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _common import write_json  # bench/_common.py (the script folder is on sys.path)
from rich.console import Console
from rich.table import Table

TERMINAL = {"finalized", "refunded", "cancelled", "overturned"}
WRONG_VERDICTS = {"mismatch", "disputing", "overturned", "waiting", "upheld", "undecided"}  # for honest providers
WORDS = "the cat sat on a mat markets fell sharply exact arithmetic makes checking cheap quiet rain".split()
PROMPTS = ["the king ", "once upon a time ", "the lady said ", "in the morning "]


class Daemons:
    """The devnet's daemons and the gateway: killed and restarted as a fault injector would."""

    def __init__(self, listed: list[dict[str, Any]], gateway: list[str], folder: Path) -> None:
        self.folder = folder
        self.procs: dict[str, Any] = {}  # name -> a Popen, or a pid the launcher started
        self.commands: dict[str, list[str]] = {}
        for d in listed:
            name = f"{d['kind']}-{d['address'][:8]}"
            self.procs[name] = d["pid"]
            self.commands[name] = [sys.executable, "-m", "veracity.cli", d["kind"], "run", "--config",
                                   str(Path(d["home"]) / "config.json")]
        self.commands["gateway"] = gateway
        self.procs["gateway"] = self._start("gateway")

    def _start(self, name: str) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "ab")
        return subprocess.Popen(self.commands[name], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, name: str) -> None:
        p = self.procs[name]
        pid = p if isinstance(p, int) else p.pid
        try:
            os.killpg(pid, signal.SIGKILL)  # the daemon and its worker processes
        except ProcessLookupError:
            pass
        if not isinstance(p, int):
            p.wait()

    def restart(self, name: str) -> None:
        self.kill(name)
        self.procs[name] = self._start(name)

    def stop(self) -> None:
        for name in self.procs:
            self.kill(name)


def random_job(rng: random.Random, folder: Path, n: int) -> Any:
    """A small job of a random kind and model, its inputs written under ``folder``."""
    from veracity.workloads.spec import Inputs, JobSpec, Training, Verification

    kind = rng.choice(["digits-mlp", "minilm", "tiny-gpt", "train"])
    if kind == "digits-mlp":
        lines = [{"pixels": [rng.randrange(17) for _ in range(64)]} for _ in range(rng.randint(1, 4))]
    elif kind == "minilm":
        lines = [{"text": " ".join(rng.choices(WORDS, k=rng.randint(2, 9)))} for _ in range(rng.randint(1, 3))]
    elif kind == "tiny-gpt":
        lines = [{"text": rng.choice(PROMPTS), "max_tokens": rng.randint(2, 4)}]
    else:
        lines = [{"pixels": [rng.randrange(17) for _ in range(64)], "label": rng.randrange(10)} for _ in range(40)]
    path = folder / f"job-{n}.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    checks = Verification(challenge_window=5, spot_check_rate=0.5)
    if kind == "train":
        return JobSpec(kind="train", model="digits-mlp", inputs=Inputs(path=str(path)), max_price=2, deadline=240,
                       verification=checks, training=Training(steps=3, batch=8))
    return JobSpec(kind="infer", model=kind, inputs=Inputs(path=str(path)), max_price=1, deadline=180,
                   verification=checks)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--fault-every", type=float, default=25, help="seconds between kills (on average)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result = soak(args.minutes, args.clients, args.fault_every, args.seed)
    console = Console(width=120)
    table = Table("jobs submitted", "settled", "refunded", "gateway requests", "faults", "lost", "paid twice",
                  "wrong verdicts", "conserved", title=f"soak with faults, {args.minutes:g} minutes (this CPU)")
    table.add_row(*(str(result[k]) for k in ("jobs_submitted", "jobs_settled", "jobs_refunded", "gateway_requests",
                                              "faults", "lost", "paid_twice", "wrong_verdicts", "conserved")))
    console.print(table)
    write_json(args.json, result)
    return 0 if result["lost"] == 0 and result["conserved"] and result["paid_twice"] == 0 else 1


def soak(minutes: float, clients: int, fault_every: float, seed: int | None = None) -> dict[str, Any]:
    """Run the soak (its own devnet under a fresh VERACITY_HOME) and return its figures."""
    seed = random.randrange(2**32) if seed is None else seed
    rng = random.Random(seed)
    folder = Path(tempfile.mkdtemp(prefix="veracity-soak-"))
    os.environ["VERACITY_HOME"] = str(folder)
    from veracity.chain import devnet
    from veracity.chain.anvil import free_port
    from veracity.client.jobs import submit
    from veracity.node import launcher

    providers, validators = 2, 1
    first_client = launcher.accounts_needed(providers, validators)
    dep, _ = devnet.up(first_client + clients + 1)
    daemons: Daemons | None = None
    try:
        launcher.launch(dep, providers, validators, rate=0.5)
        gateway_account = first_client + clients
        port = free_port()
        daemons = Daemons(launcher.daemons(), [sys.executable, "-m", "veracity.cli", "gateway", "run", "--port",
                                               str(port), "--deployment", str(devnet.home() / "deployment.json"),
                                               "--account", str(gateway_account), "--window-requests", "16",
                                               "--window-s", "20", "--challenge-window", "5"], folder)
        keys = {a.address.lower(): a.key for a in dep.accounts}
        validator_url = next(d["url"] for d in launcher.daemons() if d["kind"] == "validator")
        stop = threading.Event()
        counts = {"submitted": 0, "client_errors": 0, "gateway_ok": 0, "gateway_errors": 0, "faults": 0}
        errors: list[str] = []
        lock = threading.Lock()

        def client(k: int) -> None:
            crng = random.Random(seed + k)
            key = dep.accounts[first_client + k].key
            n = 0
            while not stop.is_set():
                n += 1
                with lock:
                    counts["submitted"] += 1
                try:
                    submit(random_job(crng, folder, k * 10_000 + n), dep, key, bid_wait=15, result_timeout=300)
                except Exception as exc:  # a fault's effect on one job; the money is checked at the end
                    with lock:
                        counts["client_errors"] += 1
                        errors.append(f"client {k}: {str(exc)[:400]}")
                    time.sleep(2)  # as a person would before trying again

        def gateway_load() -> None:
            http = httpx.Client(timeout=120)
            i = 0
            while not stop.is_set():
                i += 1
                body = ({"model": "minilm", "input": " ".join(WORDS[i % 7:i % 7 + 4])} if i % 2 else
                        {"model": "tiny-gpt", "prompt": PROMPTS[i % 4], "max_tokens": 3})
                path = "embeddings" if i % 2 else "completions"
                try:
                    ok = http.post(f"http://127.0.0.1:{port}/v1/{path}", json=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    counts["gateway_ok" if ok else "gateway_errors"] += 1
                if not ok:
                    time.sleep(1)

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
        threads.append(threading.Thread(target=gateway_load, daemon=True))
        for t in threads:
            t.start()
        end = time.monotonic() + minutes * 60
        while time.monotonic() < end:
            time.sleep(min(rng.expovariate(1 / fault_every), max(0.0, end - time.monotonic())))
            if time.monotonic() >= end:
                break
            victim = rng.choice(sorted(daemons.procs))
            daemons.kill(victim)
            counts["faults"] += 1
            time.sleep(rng.uniform(1, 5))
            daemons.restart(victim)
        stop.set()
        for t in threads:
            t.join(420)
        for name in list(daemons.procs):  # every daemon up again: they settle what they hold
            daemons.restart(name)
        return settle(dep, keys, validator_url, counts, errors, seed)
    finally:
        if daemons is not None:
            daemons.stop()
        launcher.stop_all()
        devnet.down()


def settle(dep: Any, keys: dict[str, str], validator_url: str, counts: dict[str, int], errors: list[str],
           seed: int) -> dict[str, Any]:
    """Move the clock past every deadline, let every order's client settle it, and check the books."""
    from veracity.chain.events import EventStream

    chain, token, registry, market = dep.clients(dep.deployer.key)
    events = EventStream(chain, {"Market": dep.market}).poll()
    orders = sorted({int(e.args["order_id"]) for e in events if e.name == "OrderOpened"})
    time.sleep(8)  # the restarted daemons commit what they finished and resume their games
    chain.w3.provider.make_request("evm_increaseTime", [4000])  # past every deadline and challenge window
    chain.w3.provider.make_request("evm_mine", [])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        left = [oid for oid in orders if market.order(oid).state_name not in TERMINAL]
        for oid in left:
            o = market.order(oid)
            as_client = dep.clients(keys[o.client.lower()])[3]
            try:
                if o.state_name in ("open", "accepted"):
                    as_client.reclaim(oid)
                elif o.state_name == "committed":
                    as_client.finalize(oid)
            except Exception:  # a game still runs on it, or a daemon settled it first: look again
                pass
        if not left:
            break
        time.sleep(2)
    events = EventStream(chain, {"Market": dep.market}).poll()
    states = {oid: market.order(oid).state_name for oid in orders}
    committed = {int(e.args["order_id"]) for e in events if e.name == "ResultCommitted"}
    finalized = [int(e.args["order_id"]) for e in events if e.name == "Finalized"]
    lost = [oid for oid, s in states.items() if s not in TERMINAL or (s == "finalized" and oid not in committed)]
    paid_twice = len(finalized) - len(set(finalized))
    holders = {a.address for a in dep.accounts} | {dep.deployer.address} | {
        v for k, v in dep.model_dump().items() if isinstance(v, str) and v.startswith("0x") and len(v) == 42}
    held = sum(token.balance_of(a) for a in holders)
    conserved = (held == token.total_supply() and token.balance_of(dep.registry) == registry.total_stake()
                 and token.balance_of(dep.market) == market.escrow_total() + market.fee_pool())
    try:
        verdicts = [c["verdict"] for c in httpx.get(f"{validator_url}/checks", timeout=10).json()]
    except (httpx.HTTPError, ValueError):
        verdicts = []
    by_state = {s: sum(1 for v in states.values() if v == s) for s in sorted(set(states.values()))}
    return {"seed": seed, "jobs_submitted": counts["submitted"], "orders": len(orders),
            "jobs_settled": by_state.get("finalized", 0), "jobs_refunded": by_state.get("refunded", 0)
            + by_state.get("cancelled", 0), "orders_by_state": by_state, "faults": counts["faults"],
            "gateway_requests": counts["gateway_ok"] + counts["gateway_errors"],
            "gateway_errors": counts["gateway_errors"], "client_errors": counts["client_errors"],
            "lost": len(lost), "lost_orders": lost, "paid_twice": paid_twice, "conserved": conserved,
            "verdicts": len(verdicts), "wrong_verdicts": sum(v in WRONG_VERDICTS for v in verdicts),
            "client_error_samples": errors[:10]}


if __name__ == "__main__":
    sys.exit(main())
