"""Compile the Vyper contracts with the ``vyper`` package, caching artifacts by source hash."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from veracity.errors import ChainError

CONTRACTS = Path(__file__).resolve().parent.parent / "contracts"  # shipped in the package (``contracts/`` links here)


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str


def cache_dir() -> Path:
    return Path(os.environ.get("VERACITY_CACHE", Path.home() / ".cache" / "veracity")) / "contracts"


def _fingerprint(source: Path) -> str:
    """Hash of the source, every contract it may import from here, and the compiler version."""
    import vyper

    h = hashlib.sha256(vyper.__version__.encode())
    for path in sorted(CONTRACTS.rglob("*.vy*")):
        h.update(path.relative_to(CONTRACTS).as_posix().encode() + path.read_bytes())
    try:
        from importlib.metadata import version

        h.update(version("snekmate").encode())
    except Exception:  # not installed: vyper will say so when it compiles
        pass
    h.update(source.name.encode() + source.read_bytes())
    return h.hexdigest()[:24]


@lru_cache(maxsize=None)
def compile_contract(name: str) -> Artifact:
    """ABI and bytecode of ``veracity/contracts/<name>.vy`` (or of the file ``name``, a path ending in
    ``.vy``: an example consumer contract); compiled once per source hash."""
    source = Path(name) if name.endswith(".vy") else CONTRACTS / f"{name}.vy"
    if not source.is_file():
        raise ChainError(f"no contract {name}: expected {source}")
    cached = cache_dir() / f"{source.stem}-{_fingerprint(source)}.json"
    if cached.is_file():
        data = json.loads(cached.read_text())
        return Artifact(name, data["abi"], data["bytecode"])
    # -p: `contracts/` is on the search path, so `from interfaces import IFoo` and `import tensors`
    # resolve for an example contract outside it too
    proc = subprocess.run([sys.executable, "-m", "vyper", "-p", str(CONTRACTS), "-f", "abi,bytecode", str(source)],
                          capture_output=True, text=True, cwd=source.parent)
    if proc.returncode != 0:
        raise ChainError(f"vyper could not compile {source.name}:\n{proc.stderr.strip()}")
    abi_line, bytecode = proc.stdout.strip().splitlines()
    art = Artifact(name, json.loads(abi_line), bytecode)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"abi": art.abi, "bytecode": art.bytecode}))
    os.replace(tmp, cached)
    return art
