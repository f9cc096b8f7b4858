"""Start provider and validator daemons as separate OS processes for the devnet, and stop them.

Account layout on the devnet: 0 deploys, 1 and 2 are clients, then providers, then validators.
Each daemon gets a config file, a home folder and a log in the devnet's state folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from veracity.chain.anvil import free_port
from veracity.chain.devnet import Deployment, home, write_private
from veracity.errors import VeracityError
from veracity.models.registry import names

FIRST_PROVIDER = 3
TOKEN = 10**18


def accounts_needed(providers: int, validators: int) -> int:
    return FIRST_PROVIDER + providers + validators


def _spawn(kind: str, cfg: dict[str, Any], folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    cfg_file = folder / "config.json"
    write_private(cfg_file, json.dumps(cfg, indent=2))  # it holds the node's key
    log = open(folder / "daemon.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "veracity.cli", kind, "run", "--config", str(cfg_file)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return {"kind": kind, "pid": proc.pid, "url": f"http://127.0.0.1:{cfg['port']}", "address": cfg["address"],
            "home": str(folder)}


def launch(dep: Deployment, providers: int, validators: int, behaviours: list[str] | None = None,
           rate: float = 0.0, timeout: float = 90, markups: list[int] | None = None) -> list[dict[str, Any]]:
    """Start the daemons and wait until each is registered on-chain.

    Provider i bids ``markups[i]`` basis points below a client's max price (default 5% more
    for each provider: 5%, 10%, 15%...) and behaves as ``behaviours[i]`` (default honest).
    """
    if len(dep.accounts) < accounts_needed(providers, validators):
        raise VeracityError(f"{providers} providers and {validators} validators need "
                            f"{accounts_needed(providers, validators)} accounts")
    state = home()
    dep_file = str(state / "deployment.json")
    daemons = []
    for i in range(providers):
        acct = dep.accounts[FIRST_PROVIDER + i]
        behaviour = (behaviours or [])[i] if i < len(behaviours or []) else "honest"
        markup = (markups or [])[i] if i < len(markups or []) else 500 * (i + 1)
        daemons.append(_spawn("provider", {
            "deployment": dep_file, "key": acct.key, "address": acct.address, "home": str(state / f"provider-{i}"),
            "port": free_port(), "behaviour": behaviour,
            "policy": {"models": names(), "price_floor": TOKEN // 10, "markup_bps": markup,
                       "min_deadline_s": 30},
        }, state / f"provider-{i}"))
    for j in range(validators):
        acct = dep.accounts[FIRST_PROVIDER + providers + j]
        daemons.append(_spawn("validator", {
            "deployment": dep_file, "key": acct.key, "address": acct.address, "home": str(state / f"validator-{j}"),
            "port": free_port(), "rate": rate}, state / f"validator-{j}"))
    (state / "daemons.json").write_text(json.dumps(daemons, indent=2))
    _, _, registry, _ = dep.clients(dep.deployer.key)
    end = time.monotonic() + timeout
    for d in daemons:
        while registry.node(d["address"]).role == 0:
            if time.monotonic() > end:
                raise VeracityError(f"{d['kind']} {d['address']} did not register within {timeout:.0f} s; "
                                    f"see {d['home']}/daemon.log")
            time.sleep(0.2)
    return daemons


def spawn_explorer(dep_file: Path, index: Path, log: Path, port: int | None = None, timeout: float = 60,
                   own_session: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """``veracity explorer`` on deployment ``dep_file`` as its own process on 127.0.0.1 (its index
    at ``index``, its output appended to ``log``), once it answers; returns the process and its URL.
    VeracityError (the process stopped) when it does not answer within ``timeout``."""
    import httpx

    port = port or free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "veracity.cli", "explorer", "--deployment", str(dep_file),
                                 "--port", str(port), "--index", str(index)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=own_session)
    url = f"http://127.0.0.1:{port}/"
    end = time.monotonic() + timeout
    try:
        while True:
            try:
                if httpx.get(url + "health", timeout=2).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > end:
                raise VeracityError(f"the explorer did not start; see {log}")
            time.sleep(0.2)
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise


def launch_explorer(port: int | None = None, timeout: float = 60) -> dict[str, Any]:
    """Start the explorer (``veracity explorer``) on the devnet as a daemon like the others (stopped
    by ``stop_all``), and wait until it answers; returns its entry (its ``url``)."""
    state = home()
    folder = state / "explorer"
    folder.mkdir(parents=True, exist_ok=True)
    proc, url = spawn_explorer(state / "deployment.json", folder / "index.db", folder / "daemon.log", port, timeout,
                               own_session=True)
    entry: dict[str, Any] = {"kind": "explorer", "pid": proc.pid, "url": url, "address": "-", "home": str(folder)}
    (state / "daemons.json").write_text(json.dumps([*daemons(), entry], indent=2))
    return entry


def daemons() -> list[dict[str, Any]]:
    path = home() / "daemons.json"
    return json.loads(path.read_text()) if path.is_file() else []


def stop_all() -> int:
    """Stop every daemon the devnet started; returns how many were running."""
    stopped = 0
    for d in daemons():
        try:
            os.kill(d["pid"], signal.SIGTERM)
            stopped += 1
        except OSError:
            pass
    (home() / "daemons.json").unlink(missing_ok=True)
    return stopped
