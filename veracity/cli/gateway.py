"""``veracity gateway run``, ``veracity receipt verify`` and ``veracity oracle program``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from veracity.chain.devnet import find_deployment
from veracity.cli.app import app, err
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
    if not 0 <= account < len(dep.accounts):
        raise UsageError(f"--account must be between 0 and {len(dep.accounts) - 1}")
    terms = WindowTerms(window_requests=window_requests, window_s=window_s, price=price,
                        challenge_window=challenge_window)
    pool = LeasePool(dep, dep.accounts[account].key, terms, lambda m: log("gateway", m))
    err.print(f"gateway on http://127.0.0.1:{port}/v1 (leases paid by {pool.chain.address})")
    uvicorn.run(create_app(pool), host="127.0.0.1", port=port, log_level="warning")


@receipt_app.command("verify")
def receipt_verify(receipt: Path = typer.Argument(..., help="a receipt (JSON: the x-veracity-receipt header, "
                                                            "a response's veracity.receipt, or a response), - for stdin"),
                   deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)"),
                   account: int = typer.Option(0, help="which deployment account reads the chain")) -> None:
    """Check a receipt against the chain: the lease's provider signed it, and its answer is the
    committed window's line. Exit 0 verified, 1 failed, 3 pending (not committed yet)."""
    from veracity.gateway.receipts import verify
    from veracity.market.receipts import Receipt

    text = sys.stdin.read() if str(receipt) == "-" else receipt.read_text() if receipt.is_file() else None
    if text is None:
        raise UsageError(f"no receipt file at {receipt}")
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and "veracity" in doc:  # a whole response
            doc = doc["veracity"]["receipt"]
        elif isinstance(doc, dict) and "receipt" in doc:
            doc = doc["receipt"]
        if isinstance(doc, list):
            doc = doc[0]
        rec = Receipt.model_validate(doc)
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{receipt} is not a Veracity receipt ({str(exc).splitlines()[0]})") from None
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
    from veracity.exact.program import program_root
    from veracity.models.registry import names
    from veracity.workloads.infer import job_program

    if model not in names():
        raise UsageError(f"unknown model {model!r}: choose one of {', '.join(names())}")
    if "\n" in input or input.startswith(" "):
        raise InputError("the input must be one JSON line that does not start with a space")
    program = job_program(model, input.encode())
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
