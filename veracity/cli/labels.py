"""``veracity label ...``: labelling tasks with consensus (``contracts/LabelTasks.vy``).

    veracity label post items.jsonl --classes 3 --labellers 5 --reward 50 --stake 10
    veracity label commit 0 labels.json --account 2     # stakes, commits; keeps the salt locally
    veracity label reveal 0 --account 2                 # after the commit deadline
    veracity label aggregate labels/*.json --classes 3  # the consensus anyone derives, off chain
    veracity label finalize 0                           # after the reveal deadline: pays and slashes
    veracity label show 0
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from veracity.chain.devnet import find_deployment, home
from veracity.cli.app import account_key, app
from veracity.errors import InputError

if TYPE_CHECKING:
    from veracity.chain.devnet import Deployment

TOKEN = 10**18
label_app = typer.Typer(help="Labelling tasks: staked labellers, commit-reveal, Dawid-Skene consensus.",
                        no_args_is_help=True)



def _labels(path: Path, classes: int | None = None) -> list[int]:
    """A labeller's labels: a JSON list of class numbers, one per item."""
    if not path.is_file():
        raise InputError(f"{path} not found")
    try:
        labels = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{path} is not JSON: write the labels as a list of class numbers, e.g. [0, 2, 1]") from None
    if not (isinstance(labels, list) and labels and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                         for x in labels)):
        raise InputError(f"{path} must be a non-empty JSON list of class numbers (0, 1, ...)")
    if classes is not None and max(labels) >= classes:
        raise InputError(f"{path} has a label {max(labels)}; the task's classes are 0..{classes - 1}")
    return labels


def _secret(dep: "Deployment", task: int, who: str) -> Path:
    return home() / "labels" / f"{dep.chain_id}-{dep.label_tasks}-{task}-{who}.json"


@label_app.command("post")
def post(items: Path = typer.Argument(..., help="the items to label (any file: its CID is posted)"),
         n_items: Optional[int] = typer.Option(None, "--items", help="how many items (default: the file's lines)"),
         classes: int = typer.Option(..., min=2, max=4), labellers: int = typer.Option(5, min=3, max=8),
         reward: float = typer.Option(..., min=0.000001, help="VRC shared by the labellers by accuracy"),
         stake: float = typer.Option(..., min=0.000001, help="VRC each labeller stakes"),
         commit_for: int = typer.Option(600, min=1, help="seconds to commit"),
         reveal_for: int = typer.Option(600, min=1, help="seconds to reveal, after the commit deadline"),
         threshold: float = typer.Option(0.6, min=0, max=1, help="accuracy under which a labeller is slashed"),
         slash: float = typer.Option(0.5, min=0, max=1, help="share of its stake it loses"),
         account: int = typer.Option(0), deployment: Optional[Path] = typer.Option(None)) -> None:
    """Post a task: escrows the reward."""
    import hashlib

    dep = find_deployment(deployment)
    key = account_key(dep, account)
    if not items.is_file():
        raise InputError(f"{items} not found")
    data = items.read_bytes()
    count = n_items if n_items is not None else len([ln for ln in data.splitlines() if ln.strip()])
    client = dep.label_tasks_client(key)
    now = client.chain.now()
    task = client.post_task(hashlib.sha256(data).digest(), count, classes, labellers, int(reward * TOKEN),
                            int(stake * TOKEN), now + commit_for, now + commit_for + reveal_for,
                            round(threshold * 10_000), round(slash * 10_000))
    print(f"task {task}: {count} items, {classes} classes, {labellers} labellers; commits until +{commit_for} s")


@label_app.command("commit")
def commit(task: int, labels: Path = typer.Argument(..., help="a JSON list of class numbers, one per item"),
           account: int = typer.Option(1), deployment: Optional[Path] = typer.Option(None)) -> None:
    """Stake and commit to labels (the labels and salt are kept in ~/.veracity/labels for the reveal)."""
    from veracity.chain.devnet import write_private
    from veracity.chain.labels import new_salt

    dep = find_deployment(deployment)
    key = account_key(dep, account)
    client = dep.label_tasks_client(key)
    info = client.task(task)
    mine = _labels(labels, info.classes)
    if len(mine) != info.n_items:
        raise InputError(f"task {task} has {info.n_items} items; {labels} labels {len(mine)}")
    salt = new_salt()
    secret = _secret(dep, task, client.chain.address)
    write_private(secret, json.dumps({"labels": mine, "salt": salt.hex()}))
    client.commit_labels(task, mine, salt)
    print(f"task {task}: committed (reveal after the commit deadline: `veracity label reveal {task}`)")


@label_app.command("reveal")
def reveal(task: int, account: int = typer.Option(1), deployment: Optional[Path] = typer.Option(None)) -> None:
    """Reveal the labels committed from this machine."""
    dep = find_deployment(deployment)
    key = account_key(dep, account)
    client = dep.label_tasks_client(key)
    secret = _secret(dep, task, client.chain.address)
    if not secret.is_file():
        raise InputError(f"no labels committed to task {task} from this machine by {client.chain.address}")
    kept = json.loads(secret.read_text())
    client.reveal(task, kept["labels"], bytes.fromhex(kept["salt"]))
    print(f"task {task}: revealed")


@label_app.command("aggregate")
def aggregate(files: list[Path] = typer.Argument(..., help="each labeller's labels (JSON lists)"),
              classes: int = typer.Option(..., min=2, max=4)) -> None:
    """The consensus and accuracies the contract will derive, computed here (exact integers)."""
    from veracity.data.consensus import dawid_skene

    sets = [_labels(f, classes) for f in files]
    if len({len(s) for s in sets}) != 1:
        raise InputError("every labeller must label the same items (the files differ in length)")
    result = dawid_skene([list(row) for row in zip(*sets)], classes)
    print("consensus:", json.dumps(list(result.labels)))
    for f, acc in zip(files, result.accuracy_bps):
        print(f"  {f}: accuracy {acc / 100:.2f}%")


@label_app.command("finalize")
def finalize(task: int, account: int = typer.Option(0), deployment: Optional[Path] = typer.Option(None)) -> None:
    """Aggregate on chain and settle (anyone, after the reveal deadline)."""
    dep = find_deployment(deployment)
    done = dep.label_tasks_client(account_key(dep, account)).finalize(task)
    print(f"task {task}: {done.revealed} label sets; consensus {list(done.consensus)}")
    for who, (amount, stake, acc) in done.paid.items():
        print(f"  {who}: accuracy {acc / 100:.2f}%, paid {amount / TOKEN:.6f} VRC, stake back {stake / TOKEN:g} VRC")
    for who, amount in done.slashed.items():
        print(f"  {who}: slashed {amount / TOKEN:g} VRC")


@label_app.command("show")
def show(task: int, account: int = typer.Option(0), deployment: Optional[Path] = typer.Option(None)) -> None:
    """A task's terms, its labellers and (once final) its consensus."""
    dep = find_deployment(deployment)
    client = dep.label_tasks_client(account_key(dep, account))
    t = client.task(task)
    print(f"task {task}: {t.state_name}; {t.n_items} items, {t.classes} classes, reward {t.reward / TOKEN:g} VRC, "
          f"stake {t.min_stake / TOKEN:g} VRC; requester {t.requester}")
    for who in client.labellers(task):
        acc = client.accuracy(task, who) if t.state_name == "finalized" else None
        print(f"  {who}" + (f": accuracy {acc / 100:.2f}%" if acc is not None else ""))
    if t.state_name == "finalized":
        print("consensus:", list(client.consensus(task)))


app.add_typer(label_app, name="label")
