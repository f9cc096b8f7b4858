"""``veracity devnet up|down|status`` (anvil with the contracts deployed, and its daemons) and ``deploy``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from veracity.cli.app import app, err
from veracity.errors import UsageError, VeracityError

devnet_app = typer.Typer(help="The embedded devnet: anvil with Veracity's contracts deployed.",
                         no_args_is_help=True)


app.add_typer(devnet_app, name="devnet")


def _deployment_table(dep: Any, title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_row("RPC URL", dep.rpc_url)
    table.add_row("chain id", str(dep.chain_id))
    for name in ("token", "registry", "market"):
        table.add_row(name.capitalize(), getattr(dep, name))
    table.add_row("accounts", f"{len(dep.accounts)} funded (anvil's development keys; never use them elsewhere)")
    return table


@devnet_app.command("up")
def devnet_up(accounts: int = typer.Option(10, min=2, max=100, help="funded accounts"),
              port: Optional[int] = typer.Option(None, help="RPC port (default: a free one)"),
              providers: int = typer.Option(0, min=0, max=20, help="provider daemons to start"),
              validators: int = typer.Option(0, min=0, max=20, help="validator daemons to start"),
              explorer: bool = typer.Option(True, help="start the network explorer (a web page) on it")) -> None:
    """Start anvil on 127.0.0.1, deploy the contracts, fund accounts, start provider/validator daemons."""
    from veracity.chain import devnet
    from veracity.node import launcher

    accounts = max(accounts, launcher.accounts_needed(providers, validators))
    with err.status("starting anvil and deploying the contracts"):
        dep, started = devnet.up(accounts, port)
    if started and (providers or validators):
        with err.status(f"starting {providers} providers and {validators} validators"):
            launcher.launch(dep, providers, validators)
    if started and explorer:
        with err.status("starting the explorer"):
            launcher.launch_explorer()
    Console().print(_deployment_table(dep, "devnet up" if started else "devnet already running"))
    table = Table("daemon", "address", "serves at", "pid")
    for d in launcher.daemons():
        if d["kind"] != "explorer":
            table.add_row(d["kind"], d["address"], d["url"], str(d["pid"]))
    if any(d["kind"] != "explorer" for d in launcher.daemons()):
        Console().print(table)
    Console().print(f"deployment file: {devnet.home() / 'deployment.json'}")
    for d in launcher.daemons():
        if d["kind"] == "explorer":
            Console().print(f"explorer: {d['url']}", highlight=False)


@devnet_app.command("down")
def devnet_down() -> None:
    """Stop the devnet started by `veracity devnet up`."""
    from veracity.chain import devnet
    from veracity.node import launcher

    n = launcher.stop_all()
    print(("devnet stopped" if devnet.down() else "no devnet was running") + (f" ({n} daemons stopped)" if n else ""))


@devnet_app.command("status")
def devnet_status() -> None:
    """Show whether the devnet runs, where, and its latest block."""
    from veracity.chain import devnet
    from veracity.chain.client import Chain, TokenClient

    dep = devnet.running()
    if dep is None:
        raise VeracityError("no devnet is running: start one with `veracity devnet up`")
    chain = Chain(dep.rpc_url)
    table = _deployment_table(dep, "devnet running")
    table.add_row("latest block", str(chain._rpc(lambda: chain.w3.eth.block_number)))
    table.add_row("token supply", f"{TokenClient(chain, dep.token).total_supply() / 10**18:,.0f} VRC")
    Console().print(table)


@app.command()
def deploy(rpc_url: str = typer.Option(..., help="any EVM JSON-RPC URL"),
           key: str = typer.Option(..., envvar="VERACITY_DEPLOYER_KEY", help="deployer's private key"),
           out: Path = typer.Option(Path("deployment.json"), help="where to write the deployment file")) -> None:
    """Deploy Veracity's contracts to any EVM chain (no faucet) and write a deployment file."""
    from eth_account import Account

    from veracity.chain import devnet

    try:
        acct = Account.from_key(key)
    except Exception:
        raise UsageError("--key is not a valid private key (64 hex digits)") from None
    me = devnet.AccountInfo(address=acct.address, key=key)
    with err.status(f"deploying to {rpc_url}"):
        dep = devnet.deploy(rpc_url, me, [me], devnet=False)
    dep.write(out)
    Console().print(_deployment_table(dep, f"deployed; wrote {out}"))

