"""``veracity data ...``: data pools with proof of contribution (``contracts/DataPool.vy``).

    veracity data create --topic "a short review of a film" --reward 90 --budget 30 --epochs 2 --deposit 1
    veracity data contribute 0 review.jsonl --account 2 [--device-key 0x..]
    veracity data curate 0                # score every contribution, settle the scores
    veracity data show 0
    veracity data pay 0 --epoch 0
    veracity data buy 0 --amount 40 --out pool.jsonl   # the accepted items, to fine-tune on
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from veracity.chain.devnet import find_deployment
from veracity.cli.app import account_key, app, err
from veracity.errors import InputError, UsageError

if TYPE_CHECKING:
    from veracity.chain.devnet import Deployment

TOKEN = 10**18
data_app = typer.Typer(help="Data pools: signed contributions, exact scores, rewards by score.", no_args_is_help=True)



def _pool(dep: "Deployment", key: str, pool: int) -> None:
    if not 0 <= pool < dep.data_pool_client(key).fn.pool_count().call():
        raise UsageError(f"there is no pool {pool}: `veracity data create` opens one")


@data_app.command("create")
def create(topic: str = typer.Option(..., help="what the pool wants: an item's quality is its cosine with this text"),
           reward: float = typer.Option(..., min=0, help="VRC each epoch pays its contributors"),
           budget: float = typer.Option(10, min=0, help="VRC the pool's score orders may spend"),
           epochs: int = typer.Option(1, min=1, max=1000), epoch_length: int = typer.Option(3600, min=1, help="seconds"),
           threshold: float = typer.Option(0.9, min=0.0001, max=1, help="a cosine with an accepted item at or above "
                                                                        "this makes a near-copy (score 0)"),
           deposit: float = typer.Option(0, min=0, help="VRC each contribution puts down: back when it is accepted, "
                                                        "else to the treasury (what spam costs)"),
           devices: bool = typer.Option(False, "--devices", help="contributions need a registered device's signature"),
           schema: Optional[Path] = typer.Option(None, help="a document describing the items wanted (its CID is kept)"),
           account: int = typer.Option(0, help="the deployment account that owns, funds and curates the pool"),
           deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)")) -> None:
    """Open a pool: funds its epochs' rewards and its scoring budget."""
    import hashlib

    from veracity.data.pools import embed

    dep = find_deployment(deployment)
    key = account_key(dep, account)
    if schema is not None and not schema.is_file():
        raise InputError(f"schema {schema} not found")
    schema_cid = hashlib.sha256(schema.read_bytes()).digest() if schema else bytes(32)
    pool = dep.data_pool_client(key).create_pool(schema_cid, embed(topic), round(threshold * 10_000), devices,
                                                 epoch_length, epochs, int(reward * TOKEN), int(budget * TOKEN),
                                                 int(deposit * TOKEN))
    print(f"pool {pool}: {epochs} epoch(s) of {epoch_length} s, {reward:g} VRC each; curate it with "
          f"`veracity data curate {pool}`")


@data_app.command("device")
def device(pool: int, device: str = typer.Argument(..., help="the device key's address"),
           contributor: str = typer.Argument(..., help="whose device it is"),
           account: int = typer.Option(0, help="the pool's owner or curator"),
           deployment: Optional[Path] = typer.Option(None)) -> None:
    """Register a contributor's device key in a pool of device data."""
    from web3 import Web3

    dep = find_deployment(deployment)
    key = account_key(dep, account)
    _pool(dep, key, pool)
    for what, addr in (("device", device), ("contributor", contributor)):
        if not Web3.is_address(addr):
            raise UsageError(f"the {what} must be an address (0x and 40 hex digits), not {addr!r}")
    dep.data_pool_client(key).register_device(pool, device, contributor)
    print(f"pool {pool}: device {device} registered to {contributor}")


@data_app.command("contribute")
def contribute(pool: int, file: Path = typer.Argument(..., help="one JSON line: {\"text\": ..., \"label\": k}"),
               account: int = typer.Option(1, help="the contributing deployment account"),
               device_key: Optional[str] = typer.Option(None, help="the device's private key (a device pool)"),
               deployment: Optional[Path] = typer.Option(None)) -> None:
    """Commit to a contribution, reveal its signed CID and score program, then push it to the nodes."""
    from veracity.data.curator import contribute as send

    dep = find_deployment(deployment)
    key = account_key(dep, account)
    _pool(dep, key, pool)
    if not file.is_file():
        raise InputError(f"{file} not found")
    index, cid = send(dep, key, pool, file.read_bytes(), device_key)
    print(f"pool {pool}: item {index} ({cid}) submitted; its score comes once the curator's order settles")


@data_app.command("curate")
def curate(pool: int, account: int = typer.Option(0, help="the pool's curator"),
           max_price: float = typer.Option(5, min=0.000001, help="VRC a score order escrows"),
           timeout: float = typer.Option(900, min=1, help="seconds to wait for every contribution to settle"),
           deployment: Optional[Path] = typer.Option(None)) -> None:
    """Score every contribution in order (a score order each) and settle the scores on chain."""
    from veracity.data.curator import Curator

    dep = find_deployment(deployment)
    key = account_key(dep, account)
    _pool(dep, key, pool)
    Curator(dep, key, pool, max_price=int(max_price * TOKEN), log=lambda m: err.print(m)).run(timeout)
    show(pool, account, deployment)


@data_app.command("show")
def show(pool: int, account: int = typer.Option(0), deployment: Optional[Path] = typer.Option(None)) -> None:
    """A pool's terms and its contributions with their scores."""
    from veracity.cid import cid_from_digest

    dep = find_deployment(deployment)
    key = account_key(dep, account)
    _pool(dep, key, pool)
    client = dep.data_pool_client(key)
    p = client.pool(pool)
    print(f"pool {pool}: owner {p.owner}, curator {p.curator}; {p.epochs} epoch(s) of {p.epoch_length} s, "
          f"{p.epoch_reward / TOKEN:g} VRC each; near-copy at {p.threshold_bps / 100:g}% similarity; "
          f"deposit {p.deposit / TOKEN:g} VRC; "
          f"{p.accepted} accepted of {p.contributions}; scoring budget {p.score_budget / TOKEN:g} VRC")
    for i in range(p.contributions):
        it = client.item(pool, i)
        score = f"score {it.score}" if it.state_name == "scored" else it.state_name
        order = f", order {it.order_id}" if it.order_id else ""
        print(f"  item {i}: {it.contributor} {cid_from_digest(it.cid)} epoch {it.epoch}: {score}{order}")


@data_app.command("pay")
def pay(pool: int, epoch: int = typer.Option(..., min=0), account: int = typer.Option(0),
        deployment: Optional[Path] = typer.Option(None)) -> None:
    """Pay an ended epoch's reward to its contributors by score (anyone may)."""
    dep = find_deployment(deployment)
    key = account_key(dep, account)
    _pool(dep, key, pool)
    client = dep.data_pool_client(key)
    client.pay_epoch(pool, epoch)
    for e in client.events(pool):
        if e.name == "Paid" and e.args["why"] == 1 and e.args["epoch"] == epoch:
            print(f"  {e.args['contributor']}: {e.args['amount'] / TOKEN:.6f} VRC")
    print(f"pool {pool}: epoch {epoch} paid")


@data_app.command("buy")
def buy(pool: int, amount: float = typer.Option(..., min=0.000001, help="VRC, split among contributors by score"),
        out: Path = typer.Option(Path("pool.jsonl"), help="where the dataset (the accepted items) goes"),
        account: int = typer.Option(1), deployment: Optional[Path] = typer.Option(None)) -> None:
    """Pay for a pool's data and write its accepted items (JSONL, to fine-tune on: `veracity job submit`)."""
    from veracity.data.curator import buy as pay_for

    dep = find_deployment(deployment)
    key = account_key(dep, account)
    _pool(dep, key, pool)
    data = pay_for(dep, key, pool, int(amount * TOKEN))
    out.write_bytes(data)
    print(f"pool {pool}: {len(data.splitlines())} items bought for {amount:g} VRC, written to {out}")


app.add_typer(data_app, name="data")
