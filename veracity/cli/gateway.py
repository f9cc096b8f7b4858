"""``veracity gateway run``, ``veracity chat``, ``veracity receipt verify`` and ``veracity oracle program``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from veracity.chain.devnet import find_deployment
from veracity.cli.app import account_key, app, err
from veracity.errors import InputError, UsageError

gateway_app = typer.Typer(help="The OpenAI-compatible gateway over standing leases.", no_args_is_help=True)


receipt_app = typer.Typer(help="Check answers' receipts against the chain.", no_args_is_help=True)


@gateway_app.command("run")
def gateway_run(port: int = typer.Option(8400, help="port on 127.0.0.1"),
                deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)"),
                account: int = typer.Option(1, help="which deployment account pays for leases (devnet)"),
                window_requests: int = typer.Option(64, min=1, help="requests per lease window"),
                window_s: float = typer.Option(60, min=1, help="seconds a lease window stays open"),
                price: float = typer.Option(1.0, min=0.000001, help="VRC escrowed per lease window"),
                challenge_window: int = typer.Option(30, min=0, help="seconds validators have to challenge a window")
                ) -> None:
    """Serve /v1/models, /v1/embeddings, /v1/completions and /v1/chat/completions; every answer
    runs on a provider under a standing lease and carries a receipt."""
    import uvicorn

    from veracity.gateway.app import create_app
    from veracity.gateway.leases import LeasePool, WindowTerms
    from veracity.logs import log

    dep = find_deployment(deployment)
    key = account_key(dep, account)
    terms = WindowTerms(window_requests=window_requests, window_s=window_s, price=price,
                        challenge_window=challenge_window)
    pool = LeasePool(dep, key, terms, lambda m: log("gateway", m))
    err.print(f"gateway on http://127.0.0.1:{port}/v1 (leases paid by {pool.chain.address})")
    uvicorn.run(create_app(pool), host="127.0.0.1", port=port, log_level="warning")


def _chat_stream(url: str, model: str, history: list[dict[str, str]], max_tokens: int) -> tuple[str, dict[str, Any]]:
    """One streamed answer from the gateway, printed as it arrives: its text and its ``veracity``."""
    import httpx

    body = {"model": model, "messages": history, "max_tokens": max_tokens, "stream": True}
    text, meta = "", dict[str, Any]()
    try:
        with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=600) as resp:
            if resp.status_code != 200:
                resp.read()
                try:
                    why = resp.json()["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    why = resp.text[:200]
                raise InputError(f"the gateway refused: {why}")
            for line in resp.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices", []):
                    piece = choice.get("delta", {}).get("content") or ""
                    text += piece
                    print(piece, end="", flush=True)
                meta = chunk.get("veracity", meta)
    except httpx.HTTPError as exc:
        raise UsageError(f"no gateway answered at {url} ({type(exc).__name__}): start one with "
                         "`veracity gateway run`") from None
    print()
    return text, meta


@app.command("chat")
def chat(url: str = typer.Option("http://127.0.0.1:8400/v1", help="the gateway's /v1 URL"),
         model: str = typer.Option("smollm2", help="the model (or auto)"),
         max_tokens: int = typer.Option(64, min=1, max=1024, help="the longest answer, in tokens"),
         system: Optional[str] = typer.Option(None, help="a system message that starts the chat"),
         message: Optional[list[str]] = typer.Option(None, "--message", "-m",
                                                    help="say this (repeatable) and exit, instead of reading stdin"),
         wait: float = typer.Option(0, min=0, help="at the end, wait up to this many seconds for each answer's window "
                                                  "to be committed on chain, and verify its receipt"),
         deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)")) -> None:
    """A terminal chat over the gateway: each answer streams as it is generated, then its receipt's
    verdict (signed by the lease's provider; verified once its window is committed on chain)."""
    import time

    from veracity.gateway.receipts import verify
    from veracity.market.receipts import Receipt

    try:
        dep = find_deployment(deployment)
    except UsageError:
        dep = None  # answers still stream; receipts are shown but not checked
    history = [{"role": "system", "content": system}] if system else []
    receipts: list[Receipt] = []

    def verdict(rec: Receipt) -> str:
        if dep is None:
            return "not checked (no deployment file)"
        check = verify(dep, dep.accounts[0].key, rec)
        return f"{check.verdict}: {check.reason}"

    said = iter(message) if message else None
    while True:
        if said is not None:
            line = next(said, None)
            if line is not None:
                print(f"you> {line}")
        else:
            try:
                line = input("you> ")
            except EOFError:
                line = None
        if line is None or line.strip() in ("/quit", "/exit"):
            break
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        print(f"{model}> ", end="", flush=True)
        text, meta = _chat_stream(url, model, history, max_tokens)
        history.append({"role": "assistant", "content": text})
        if "receipt" in meta:
            rec = Receipt.model_validate(meta["receipt"])
            receipts.append(rec)
            err.print(f"  receipt: lease {rec.lease} request {rec.index}, provider {rec.provider}: {verdict(rec)}")
    end = time.monotonic() + wait
    for rec in receipts if wait > 0 else []:
        shown = verdict(rec)
        while shown.startswith("pending") and time.monotonic() < end:
            time.sleep(1)
            shown = verdict(rec)
        print(f"receipt lease {rec.lease} request {rec.index}: {shown}")


@receipt_app.command("verify")
def receipt_verify(receipt: Path = typer.Argument(..., help="a receipt (JSON: the x-veracity-receipt header, "
                                                            "a response's veracity.receipt, or a response), - for stdin"),
                   deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)"),
                   account: int = typer.Option(0, help="which deployment account reads the chain")) -> None:
    """Check a receipt against the chain: the lease's provider signed it, and its answer is the
    committed window's line. Exit 0 verified, 1 failed, 3 pending (not committed yet)."""
    from veracity.gateway.receipts import read_receipt, verify

    text = sys.stdin.read() if str(receipt) == "-" else receipt.read_text() if receipt.is_file() else None
    if text is None:
        raise UsageError(f"no receipt file at {receipt}")
    try:
        rec = read_receipt(text)
    except ValueError as exc:
        raise UsageError(f"{receipt} is {exc}") from None
    dep = find_deployment(deployment)
    check = verify(dep, dep.accounts[account].key, rec)
    table = Table(title=f"receipt: {check.verdict}", show_header=False)
    table.add_row("verdict", check.verdict)
    table.add_row("why", check.reason)
    for k, v in check.facts.items():
        table.add_row(k, str(v))
    Console().print(table)
    raise typer.Exit(0 if check.ok else 3 if check.verdict == "pending" else 1)


oracle_app = typer.Typer(help="Contract-callable inference: what a consumer contract needs.", no_args_is_help=True)


@oracle_app.command("program")
def oracle_program(model: str = typer.Option(..., help="the model a consumer asks for: digits-mlp, minilm, tiny-gpt"),
                   input: str = typer.Option(..., "--input", help="the request's input line (one JSON object)"),
                   as_json: bool = typer.Option(False, "--json", help="print JSON for machines")) -> None:
    """The program root and length to pass to Oracle.request for this input (providers check it),
    and the spec CID the Oracle will build for it."""
    import hashlib

    from veracity.cid import cid_from_digest
    from veracity.exact.levels import Levels
    from veracity.exact.program import program_root
    from veracity.models.registry import names
    from veracity.workloads.infer import job_program

    if model not in names():
        raise UsageError(f"unknown model {model!r}: choose one of {', '.join(names())}")
    if "\n" in input or input.startswith(" "):
        raise InputError("the input must be one JSON line that does not start with a space")
    program = Levels.of(job_program(model, input.encode())).coarse_program()
    spec = (f"kind: infer\nmodel: {model}\nmax_price: 1\ndeadline: 3600\ninputs:\n  inline: |-\n    {input}\n").encode()
    out = {"program_root": "0x" + program_root(program).hex(), "program_length": len(program),
           "spec_cid": cid_from_digest(hashlib.sha256(spec).digest())}
    if as_json:
        print(json.dumps(out))
        return
    table = Table(title=f"Oracle request for {model}", show_header=False)
    table.add_column()
    table.add_column(overflow="fold")
    for k, v in out.items():
        table.add_row(k, str(v))
    Console().print(table)



app.add_typer(gateway_app, name="gateway")
app.add_typer(receipt_app, name="receipt")
app.add_typer(oracle_app, name="oracle")
