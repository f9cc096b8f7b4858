"""Foundry's anvil as the embedded devnet: found on PATH or installed from npm into a cache."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from veracity.errors import ChainError

ANVIL_PACKAGE = "@foundry-rs/anvil-linux-amd64@1.7.1"
MNEMONIC = "test test test test test test test test test test test junk"  # anvil's well-known dev keys


def cache_dir() -> Path:
    return Path(os.environ.get("VERACITY_CACHE", Path.home() / ".cache" / "veracity")) / "anvil"


def _cached(folder: Path) -> Path:
    return folder / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"


def install_anvil(folder: Path, offline: bool = False) -> Path:
    """Install anvil from the npm registry into ``folder``; returns the binary. ``offline``: from
    npm's local cache only (what an earlier install left), with no network."""
    npm = shutil.which("npm")
    if npm is None:
        raise ChainError("anvil not found and npm is missing: install Node.js or put anvil on PATH")
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", *(["--offline"] if offline else []),
                           "--prefix", str(folder), ANVIL_PACKAGE], capture_output=True, text=True)
    binary = _cached(folder)
    if proc.returncode != 0 or not binary.is_file():
        raise ChainError(f"could not install anvil from npm ({ANVIL_PACKAGE}): {proc.stderr.strip()[-300:]}")
    return binary


def find_anvil(install: bool = True) -> Path:
    """The anvil binary: $VERACITY_ANVIL, PATH, the cache, or a fresh npm install into the cache."""
    if os.environ.get("VERACITY_ANVIL"):
        return Path(os.environ["VERACITY_ANVIL"])
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    if _cached(cache_dir()).is_file():
        return _cached(cache_dir())
    if not install:
        raise ChainError("anvil not found: put it on PATH or run `make install`")
    return install_anvil(cache_dir())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Anvil:
    """One anvil process on 127.0.0.1, stopped by ``stop``.

    Transactions are mined at once; with ``block_time`` an empty block also comes every so many
    seconds (mixed mining), so chain time moves like a real chain's while nobody transacts.
    """

    def __init__(self, port: int | None = None, accounts: int = 10, detach: bool = False,
                 log: Path | None = None, block_time: int | None = None) -> None:
        self.port = port or free_port()
        self.rpc_url = f"http://127.0.0.1:{self.port}"
        out = open(log, "ab") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [str(find_anvil()), "--host", "127.0.0.1", "--port", str(self.port), "--accounts", str(accounts),
             "--mnemonic", MNEMONIC, "--balance", "10000",
             "--max-persisted-states", "0",  # old states are dropped, never written under ~/.foundry
             *(["--block-time", str(block_time), "--mixed-mining"] if block_time else [])],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=detach)
        self._wait_ready()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_ready(self, timeout: float = 20) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise ChainError(f"anvil exited at start (code {self.proc.returncode}); is port {self.port} free?")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ChainError(f"anvil did not answer on port {self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
