"""``veracity job submit|estimate|status|list``: jobs on the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from veracity.chain.devnet import find_deployment
from veracity.cli.app import account_key, app, err
from veracity.errors import UsageError

job_app = typer.Typer(help="Submit jobs and follow them.", no_args_is_help=True)


app.add_typer(job_app, name="job")


@job_app.command("submit")
def job_submit(spec: Path = typer.Argument(..., help="job spec (YAML)"),
               deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)"),
               account: int = typer.Option(1, help="which deployment account pays (devnet)"),
               bid_wait: float = typer.Option(15, help="seconds to wait for bids"),
               provider: Optional[list[str]] = typer.Option(None, "--provider",
                                                            help="only take bids from this provider address (repeatable)"),
               output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                     help="where to write the outputs (default order-N.out.jsonl, "
                                                          "or order-N.ckpt for a train job)"),
               units: int = typer.Option(1, min=1, help="a train job: split it into this many work units, each an "
                                                        "order that resumes from the unit before's checkpoint"),
               accept_unjudged: bool = typer.Option(False, "--accept-unjudged",
                                                    help="order a job no referee judges on chain yet (a fine-tune, "
                                                         "tiny-GPT training): re-executed and compared, but a wrong "
                                                         "result could not be overturned")) -> None:
    """Upload inputs, open the order, pick a bid, wait, fetch and verify the output, settle."""
    from veracity.client.jobs import check_orderable, submit, submit_units, unit_specs
    from veracity.workloads.spec import load_spec

    job = load_spec(spec)
    check_orderable(job, accept_unjudged)
    dep = find_deployment(deployment)
    key = account_key(dep, account)
    if units > 1:
        unit_specs(job, units)  # a spec that cannot split says why before anything is posted
    with err.status("uploading inputs and opening the order") as status:
        labels = {"order": "collecting bids", "match": "provider running the job", "run": "fetching the output",
                  "commit": "waiting out the challenge window", "settle": "settled"}
        only = set(provider) if provider else None
        if units > 1:
            outs = submit_units(job, dep, key, units, bid_wait=bid_wait, only=only,
                                accept_unjudged=accept_unjudged,
                                on_unit=lambda i, o: err.print(f"work unit {i + 1}/{units}: order {o.order_id} "
                                                               f"settled with {o.provider}, checkpoint {o.output_cid}"),
                                on_phase=lambda name: status.update(labels[name]))
        else:
            outs = [submit(job, dep, key, bid_wait=bid_wait,
                           on_phase=lambda name: status.update(labels[name]), only=only,
                           accept_unjudged=accept_unjudged)]
    out = outs[-1]
    table = Table(title=f"order {out.order_id} settled" if units == 1 else
                  f"{units} work units settled (orders {', '.join(str(o.order_id) for o in outs)})", show_header=False)
    table.add_row("provider", out.provider)
    table.add_row("price", f"{out.price / 10**18:g} VRC")
    table.add_row("output", out.output_cid)
    table.add_row("trace root", out.trace_root.hex())
    table.add_row("phases", ", ".join(f"{k} {v:.1f}s" for k, v in out.phases.items()))
    target = output or Path(f"order-{out.order_id}." + ("ckpt" if job.kind == "train" else "out.jsonl"))
    target.write_bytes(out.outputs)
    what = "checkpoint" if job.kind == "train" else "outputs"
    table.add_row(what, f"{target} (bytes verified against the committed CID and trace)")
    Console().print(table)


@job_app.command("estimate")
def job_estimate(spec: Path = typer.Argument(..., help="job spec (YAML)"),
                 devices: list[str] = typer.Option(["1xCPU"], "--devices",
                                                   help="COUNTxNAME to estimate for (repeatable), e.g. 8xH100"),
                 mfu: float = typer.Option(0.05, help="share of peak the exact run reaches (CPU NumPy: a few %)")) -> None:
    """What a job costs before you post it: FLOPs, memory and time on each set of devices (the
    planner, from the job's own shapes; providers run the same estimate before they bid)."""
    from veracity.workloads.jobs import Job
    from veracity.workloads.planner import duration, estimate_job, human
    from veracity.workloads.spec import load_spec

    job_spec = load_spec(spec)
    if job_spec.inputs.path is None:
        raise UsageError("estimate reads the inputs from a local path (inputs.path), not a CID")
    if job_spec.training is not None and job_spec.training.start is not None:
        raise UsageError("estimate a work unit from its own steps: drop training.start (the estimate does not "
                         "depend on it)")
    est = estimate_job(Job(job_spec, Path(job_spec.inputs.path).read_bytes()))
    table = Table("devices", "FLOPs", "memory", "fits", f"time at {mfu:.0%} of peak",
                  title=f"{job_spec.kind} {job_spec.model}: {est.detail}")
    for d in devices:
        table.add_row(d, human(est.flops), human(est.memory_bytes, "B"), "yes" if est.fits(d) else "no",
                      duration(est.seconds(d, mfu)))
    Console().print(table)


def _order_row(o: Any) -> list[str]:
    provider = o.provider if int(o.provider, 16) else "-"
    return [str(o.order_id), o.state_name, f"{o.max_price / 10**18:g}", f"{o.price / 10**18:g}" if o.price else "-",
            provider, ("0x" + o.trace_root.hex()[:16]) if any(o.trace_root) else "-"]


@job_app.command("status")
def job_status(order_id: int = typer.Argument(..., help="the order id `job submit` printed"),
               deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)")) -> None:
    """Show one order's state on-chain."""
    dep = find_deployment(deployment)
    _, _, _, market = dep.clients(dep.deployer.key)
    if not 1 <= order_id <= market.fn.order_count().call():
        raise UsageError(f"there is no order {order_id} on this chain")
    table = Table("order", "state", "max price", "price", "provider", "trace root")
    table.add_row(*_order_row(market.order(order_id)))
    Console().print(table)


@job_app.command("list")
def job_list(deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)"),
             account: Optional[int] = typer.Option(None, help="only this deployment account's orders")) -> None:
    """List the orders on-chain (newest first)."""
    dep = find_deployment(deployment)
    _, _, _, market = dep.clients(dep.deployer.key)
    who = dep.accounts[account].address if account is not None else None
    table = Table("order", "state", "max price", "price", "provider", "trace root")
    for oid in range(market.fn.order_count().call(), 0, -1):
        o = market.order(oid)
        if who is None or o.client == who:
            table.add_row(*_order_row(o))
    Console().print(table if table.row_count else "no orders yet")

