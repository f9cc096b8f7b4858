"""``veracity demo``: the network end to end on a throwaway devnet, told as a story.

It starts anvil with the contracts, three provider daemons and a validator as separate processes
on 127.0.0.1 (in a temporary folder, so a devnet you run yourself is left alone), then:

* one ``infer`` job per model: bids, match, run, commit, the validator's re-execution, settlement,
  and the output compared bit for bit with a local run of the int64 NumPy reference; the SmolLM2
  one is a chat question, whose answer and receipt (the committed output and trace root) it prints;
* a training job (the digits MLP, exactly, 120 optimizer steps), and the same job split into two
  work units on two providers, the second resuming from the first's committed checkpoint: it ends
  at the unsplit job's checkpoint, bit for bit;
* a LoRA fine-tune of MiniLM on the shipped reviews, settled the same way (its steps judged op by op,
  like every job's);
* a job whose client picks a provider that turns out to be late: the client reclaims after the
  deadline, gets its escrow back, and the provider's collateral is slashed to it;
* a job whose client picks a cheater (``corrupt-op``: one element of one op altered half-way, the
  rest computed consistently from it): the validator's re-execution differs, it challenges with a
  bond, the dispute game runs to one element that the OneStep contract recomputes, and the cheater
  loses its collateral and a fifth of its stake (half to the validator, half burnt); the client is refunded.

It prints the story and every balance before and after, and returns True only when every step
happened and every balance moved exactly as the protocol says.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
from rich.console import Console
from rich.table import Column, Table

from veracity.errors import VeracityError
from veracity.verify.sampling import challenger_reward

JOBS = Path(__file__).resolve().parent.parent / "examples" / "jobs"  # shipped in the package
TOKEN = 10**18
BEHAVIOURS = ["honest", "honest", "late", "corrupt-op"]
MARKUPS = [1000, 500, 0, 0]  # provider-0 bids 10% under the max price, provider-1 5%, the others at the max
CHEAT_WINDOW = 40  # seconds of challenge window on the cheater's job: the validator re-runs it and challenges
WINDOW = 3  # seconds of challenge window (60 in the example specs; short so the demo is quick)
LATE_DEADLINE = 35  # seconds the late job allows (the providers' minimum is 30)
CHAT_QUESTION = "What is the capital of France?"


@dataclass
class Story:
    """What happened to one job, filled in as it goes."""

    job: str
    client: str
    order_id: int = 0
    bids: str = "-"
    matched: str = "-"
    run: str = "-"
    commit: str = "-"
    check: str = "-"
    settle: str = "-"
    output: str = "-"
    ok: list[bool] = field(default_factory=list)
    provider: str = ""
    price: int = 0
    fee: int = 0
    slashed: int = 0  # what a cheater lost to the validator (collateral and stake share)


def vrc(amount: int) -> str:
    return f"{amount / TOKEN:,.4f}".rstrip("0").rstrip(".")


def short(addr: str) -> str:
    return addr[:6] + ".." + addr[-4:]


@contextmanager
def throwaway_home() -> Iterator[Path]:
    """Point VERACITY_HOME at a temporary folder for the demo's devnet, then restore it."""
    old = os.environ.get("VERACITY_HOME")
    with tempfile.TemporaryDirectory(prefix="veracity-demo-") as tmp:
        os.environ["VERACITY_HOME"] = tmp
        try:
            yield Path(tmp)
        finally:
            if old is None:
                os.environ.pop("VERACITY_HOME", None)
            else:
                os.environ["VERACITY_HOME"] = old


def run_demo(console: Console, keep: bool = False) -> bool:
    from veracity.chain import devnet
    from veracity.node import launcher

    if console.width < 132 and not console.is_terminal:
        console.width = 132
    console.rule("[bold]Veracity devnet demo[/]: jobs, bids, exact runs, spot checks, settlement, slashing")
    with throwaway_home():
        try:
            with console.status("starting anvil and deploying Token, Registry and Market"):
                dep, _ = devnet.up(accounts=launcher.accounts_needed(len(BEHAVIOURS), 1))
            with console.status(f"starting {len(BEHAVIOURS)} provider daemons and 1 validator (separate processes)"):
                daemons = launcher.launch(dep, len(BEHAVIOURS), 1, behaviours=BEHAVIOURS, rate=1.0, markups=MARKUPS)
            with console.status("starting the explorer"):
                explorer = launcher.launch_explorer()
            console.print(f"explorer: {explorer['url']} (the story as it happens, in a browser)", highlight=False)
            ok = _story(console, dep, daemons, explorer["url"])
            if keep:
                console.print(f"kept: the devnet and its explorer at {explorer['url']} stay up; Ctrl-C stops them",
                              highlight=False)
                try:
                    while True:
                        time.sleep(1)
                except KeyboardInterrupt:
                    pass
            return ok
        finally:
            launcher.stop_all()
            devnet.down()


def _story(console: Console, dep: Any, daemons: list[dict[str, Any]], explorer: str = "") -> bool:
    from veracity.client.jobs import MissedDeadlineError, submit
    from veracity.workloads.spec import Verification, load_spec

    provs = [d for d in daemons if d["kind"] == "provider"]
    validator = next(d for d in daemons if d["kind"] == "validator")
    names = {d["address"]: f"p{i}" for i, d in enumerate(provs)}
    names[validator["address"]] = "validator"
    table = Table("node", "address", "serves at", "behaviour", "bids", title="the devnet")
    for i, d in enumerate(provs):
        table.add_row(names[d["address"]], d["address"], d["url"], BEHAVIOURS[i],
                      f"{MARKUPS[i] / 100:g}% under the max price")
    table.add_row("validator", validator["address"], validator["url"], "re-executes every result", "-")
    console.print(table)

    clients = {"client-1": dep.accounts[1], "client-2": dep.accounts[2]}
    names.update({a.address: n for n, a in clients.items()})
    _, token, registry, market = dep.clients(dep.deployer.key)
    prov_accounts = [next(a for a in dep.accounts if a.address == d["address"]) for d in provs]
    val_account = next(a for a in dep.accounts if a.address == validator["address"])
    parties = [*clients.values(), *prov_accounts, val_account]
    before = _balances(token, registry, market, parties)

    # the late job runs alongside the others: its client picks provider-2, which never delivers
    late = Story("digits-mlp", "client-2")
    late_spec = load_spec(JOBS / "digits-mlp.yaml").model_copy(update={"deadline": LATE_DEADLINE})
    late_result: dict[str, Any] = {}

    def run_late() -> None:
        try:
            submit(late_spec, dep, clients["client-2"].key, bid_wait=20, result_timeout=120,
                   only={provs[2]["address"]})
        except MissedDeadlineError as exc:
            late_result["missed"] = exc
        except VeracityError as exc:
            late_result["error"] = exc

    late_thread = threading.Thread(target=run_late, daemon=True)
    late_thread.start()

    stories: list[Story] = []
    chat_inputs = Path(tempfile.mkdtemp(prefix="veracity-demo-")) / "chat.jsonl"
    chat_inputs.write_text(json.dumps({"messages": [{"role": "user", "content": CHAT_QUESTION}], "max_tokens": 8}) + "\n")
    for model in ("digits-mlp", "minilm", "tiny-gpt", "smollm2"):
        story = Story(model, "client-1")
        stories.append(story)
        spec = load_spec(JOBS / f"{model}.yaml").model_copy(update={
            "deadline": 120, "verification": Verification(challenge_window=WINDOW, spot_check_rate=1.0)})
        if model == "smollm2":  # a chat job: one question, short enough for the demo's local NumPy check
            spec = spec.model_copy(update={"inputs": spec.inputs.model_copy(update={"path": str(chat_inputs)})})
        with console.status(f"{model}: uploading inputs and opening the order") as status:
            labels = {"order": "collecting bids", "match": "provider running the job",
                      "run": "fetching the output", "commit": "waiting out the challenge window", "settle": "settled"}
            try:
                out = submit(spec, dep, clients["client-1"].key, bid_wait=20, result_timeout=120,
                             on_phase=lambda name: status.update(f"{model}: {labels[name]}"))
            except VeracityError as exc:
                story.settle, story.ok = f"[red]failed: {exc}[/]", [False]
                continue
        _settled(story, out, names, dep.fee_bps)
        story.output = _compare_local(model, spec.inputs.path, out)
        story.ok = [len(out.bids) >= 2, story.output.startswith("[green]")]
        console.print(f"[bold]{model}[/]: order {out.order_id} settled with {story.matched} VRC", highlight=False)
        if model == "smollm2":
            answer = json.loads(out.outputs.decode().splitlines()[0])["output"]
            console.print(f"  chat: {CHAT_QUESTION!r} -> {answer['text']!r} ({answer['finish_reason']}); receipt: "
                          f"order {out.order_id}, output {out.output_cid}, trace root 0x{out.trace_root.hex()[:16]}.., "
                          "committed on chain, re-executed by the validator", highlight=False)

    stories += _training(console, dep, clients["client-1"], provs[:2], names)

    with console.status("waiting for the late provider's deadline to pass (the client then reclaims)"):
        late_thread.join(LATE_DEADLINE + 90)
    missed = late_result.get("missed")
    if missed is not None and missed.bid is not None:
        late.order_id, bid = missed.order_id, missed.bid
        late.bids = " ".join(f"{names.get(b.provider)}:{vrc(b.price)}" for b in missed.bids) + " (only p2 asked)"
        late.matched = f"{names.get(bid.provider)} @ {vrc(bid.price)}"
        late.run, late.commit, late.check = "[red]late[/]", "[red]missed[/]", "-"
        late.settle = f"refund {vrc(bid.price)} + slashed {vrc(bid.collateral)}"
        late.output = "client reclaimed"
        late.ok = [True]
    else:
        late.settle, late.ok = f"[red]{late_result.get('error', 'the late job did not end as expected')}[/]", [False]
    done = list(stories)
    stories.append(late)

    cheat = _cheater(console, dep, market, clients["client-1"], provs[3]["address"], names)
    stories.append(cheat)
    if explorer and cheat.order_id:
        console.print(f"the cheater's dispute, round by round: {explorer}order/{cheat.order_id}", highlight=False)

    _fill_checks(console, validator["url"], done)
    _fill_checks(console, validator["url"], [cheat], want_verdict="overturned")
    ok = all(all(s.ok) and s.ok for s in stories)
    story_table = Table("job", "client", "order", "bids (VRC)", "matched", "run", "commit", Column("check", min_width=10),
                        "settle (VRC)", Column("output", min_width=14), title="the story (p = provider; output compared with a local int64 NumPy run; acc: the "
                        "checkpoint's accuracy on held-out digits or reviews)")
    for s in stories:
        story_table.add_row(s.job, s.client, str(s.order_id or "-"), s.bids, s.matched, s.run, s.commit, s.check,
                            s.settle, s.output)
    console.print(story_table)

    after = _balances(token, registry, market, parties)
    expected = _expected(before, done, missed, clients)
    if cheat.price:  # the client is refunded; of the cheater's collateral and stake share, half is burnt
        expected[f"stake:{cheat.provider}"] -= cheat.slashed  # and half goes to the validator
        expected[validator["address"]] += challenger_reward(cheat.slashed)
    ok &= _print_balances(console, names, before, after, expected)
    escrow = market.escrow_total()
    ok &= escrow == 0
    console.print(f"escrow left in the Market: {vrc(escrow)} VRC" + (" [green]ok[/]" if escrow == 0 else " [red]![/]"))
    console.print("[bold green]every step happened as the protocol says[/]" if ok
                  else "[bold red]some step did not happen as expected (see above)[/]")
    return ok


def _settled(story: Story, out: Any, names: dict[str, str], fee_bps: int) -> None:
    story.order_id = out.order_id
    story.bids = " ".join(f"{names.get(b.provider, short(b.provider))}:{vrc(b.price)}"
                          for b in sorted(out.bids, key=lambda b: b.price))
    story.matched = f"{names.get(out.provider)} @ {vrc(out.price)}"
    story.run = f"{out.phases['run']:.1f}s"
    story.commit = f"{out.output_cid[:12]}.."
    story.provider, story.price, story.fee = out.provider, out.price, out.price * fee_bps // 10_000
    story.settle = f"paid {vrc(out.price - story.fee)} + fee {vrc(story.fee)}"


def _training(console: Console, dep: Any, client: Any, provs: list[dict[str, Any]], names: dict[str, str]) -> list[Story]:
    """A train job, then the same job as two work units on p0 and p1: one checkpoint at the end."""
    from veracity.client.jobs import submit, submit_units
    from veracity.workloads.jobs import Job
    from veracity.workloads.spec import Verification, load_spec
    from veracity.workloads.train import accuracy

    spec = load_spec(JOBS / "digits-train.yaml").model_copy(update={
        "deadline": 120, "verification": Verification(challenge_window=WINDOW, spot_check_rate=1.0)})
    steps = spec.training.steps  # type: ignore[union-attr]
    whole = Story(f"digits-train ({steps} steps)", "client-1")
    units = [Story(f"  work unit {i + 1}/2", "client-1") for i in range(2)]
    data = Path(spec.inputs.path or "").read_bytes()
    try:
        with console.status(f"digits-train: {steps} exact optimizer steps on one provider"):
            out = submit(spec, dep, client.key, bid_wait=20, result_timeout=180)
        _settled(whole, out, names, dep.fee_bps)
        local = Job(spec, data).run("numpy")
        held_out = accuracy(out.outputs, (JOBS.parent / "inputs" / "digits-heldout.jsonl").read_bytes())
        same = out.outputs == local.outputs and out.trace_root == local.trace_root
        whole.output = f"[green]bit-identical[/]; acc {held_out:.3f}" if same else "[red]DIFFERENT[/]"
        whole.ok = [same]
        with console.status("digits-train as two work units: p0 trains the first half, p1 resumes from its "
                            "committed checkpoint"):
            outs = submit_units(spec, dep, client.key, 2, rotate=[p["address"] for p in provs], bid_wait=20,
                                result_timeout=180)
        for story, o in zip(units, outs):
            _settled(story, o, names, dep.fee_bps)
            story.ok = [True]
        units[0].output = f"step {steps // 2}: unit 2 starts here"
        one = outs[-1].output_cid == out.output_cid
        units[1].output = f"[green]= order {out.order_id}'s[/]" if one else "[red]another checkpoint[/]"
        units[1].ok = [one, [o.provider for o in outs] == [p["address"] for p in provs]]
        console.print(f"[bold]digits-train[/]: order {out.order_id} and its work units (orders "
                      f"{', '.join(str(o.order_id) for o in outs)}) ended at checkpoint {out.output_cid[:16]}..",
                      highlight=False)
    except VeracityError as exc:
        whole.settle, whole.ok = f"[red]failed: {exc}[/]", [False]
    return [whole, *(u for u in units if u.order_id), _finetune(console, dep, client, names)]


def _finetune(console: Console, dep: Any, client: Any, names: dict[str, str]) -> Story:
    """A LoRA fine-tune of MiniLM on the shipped reviews, settled like any job."""
    from veracity.client.jobs import submit
    from veracity.workloads.finetune import accuracy
    from veracity.workloads.jobs import Job
    from veracity.workloads.spec import Verification, load_spec

    spec = load_spec(JOBS / "reviews-finetune.yaml").model_copy(update={
        "deadline": 120, "verification": Verification(challenge_window=WINDOW, spot_check_rate=1.0)})
    story = Story(f"minilm LoRA ({spec.training.steps} steps)", "client-1")  # type: ignore[union-attr]
    try:
        with console.status("reviews-finetune: the exact encoder's features, then LoRA and head steps"):
            out = submit(spec, dep, client.key, bid_wait=60, result_timeout=180)  # providers run the encoder to price it
    except VeracityError as exc:
        story.settle, story.ok = f"[red]failed: {exc}[/]", [False]
        return story
    _settled(story, out, names, dep.fee_bps)
    same = out.outputs == Job(spec, Path(spec.inputs.path or "").read_bytes()).run("numpy").outputs
    acc = accuracy(out.outputs, (JOBS.parent / "inputs" / "reviews-heldout.jsonl").read_bytes())
    story.output = f"[green]bit-identical[/]; acc {acc:.3f}" if same else "[red]DIFFERENT[/]"
    story.ok = [same]
    console.print(f"[bold]reviews-finetune[/]: order {out.order_id} settled with {story.matched} VRC", highlight=False)
    return story


def _cheater(console: Console, dep: Any, market: Any, client: Any, cheater: str, names: dict[str, str]) -> Story:
    """A job sent only to the corrupt-op provider: caught by the validator, judged, slashed."""
    from veracity.client.jobs import submit
    from veracity.workloads.spec import Verification, load_spec

    story = Story("digits-mlp", "client-1")
    spec = load_spec(JOBS / "digits-mlp.yaml").model_copy(update={
        "deadline": 120, "verification": Verification(challenge_window=CHEAT_WINDOW, spot_check_rate=1.0)})
    _, _, registry, _ = dep.clients(dep.deployer.key)
    stake0 = registry.node(cheater).stake
    with console.status("a job for the cheater (p3, corrupt-op): the validator re-executes, challenges, "
                        "and the dispute game runs to one element"):
        try:
            submit(spec, dep, client.key, bid_wait=20, result_timeout=300, only={cheater})
            story.settle, story.ok = "[red]the cheater was paid[/]", [False]
            return story
        except VeracityError as exc:
            refused = "a dispute found provider" in str(exc)
    oid = next((i for i in range(market.fn.order_count().call(), 0, -1)
                if market.order(i).provider.lower() == cheater.lower()), 0)
    if not oid or not refused:
        story.settle, story.ok = "[red]the cheater's job did not end in a dispute[/]", [False]
        return story
    order = market.order(oid)
    slashed = stake0 - registry.node(cheater).stake
    share = (stake0 - order.collateral) * 2000 // 10_000
    story.order_id, story.provider, story.price = oid, cheater, order.price
    story.slashed = order.collateral + share  # what the protocol takes: checked against the stake it lost
    story.bids = "(only p3 asked)"
    story.matched = f"{names.get(cheater)} @ {vrc(order.price)}"
    story.run, story.commit = "[red]corrupt-op[/]", f"{order.output_cid.hex()[:12]}.."
    story.settle = (f"refund {vrc(order.price)}; slashed {vrc(slashed)}: "
                    f"{vrc(challenger_reward(slashed))} to the validator, the rest burnt")
    story.output = "discarded"
    story.ok = [order.state_name == "overturned", slashed == story.slashed]
    return story


def _compare_local(model: str, inputs_path: str | None, out: Any) -> str:
    from veracity.workloads.infer import run_infer_job

    local = run_infer_job(model, Path(inputs_path or "").read_bytes(), backend="numpy")
    same = local.outputs == out.outputs and local.trace_root == out.trace_root
    return "[green]bit-identical[/]" if same else "[red]DIFFERENT[/]"


def _fill_checks(console: Console, url: str, stories: list[Story], timeout: float = 90, want_verdict: str = "match") -> None:
    """The validator's verdicts for these orders (it re-executes every result at rate 1.0)."""
    want = {s.order_id for s in stories if s.order_id}
    verdicts: dict[int, str] = {}
    end = time.monotonic() + timeout
    with console.status("waiting for the validator's re-executions"):
        while any(verdicts.get(o) != want_verdict for o in want) and time.monotonic() < end:
            try:
                verdicts = {c["order_id"]: c["verdict"] for c in httpx.get(f"{url}/checks", timeout=5).json()}
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    for s in stories:
        v = verdicts.get(s.order_id, "no verdict")
        s.check = f"[green]{v}[/]" if v == want_verdict else f"[red]{v}[/]"
        s.ok.append(v == want_verdict)


def _balances(token: Any, registry: Any, market: Any, parties: list[Any]) -> dict[str, int]:
    out = {a.address: token.balance_of(a.address) for a in parties}
    out.update({f"stake:{a.address}": registry.node(a.address).stake for a in parties[2:-1]})
    out["fee pool"] = market.fee_pool()
    return out


def _expected(before: dict[str, int], done: list[Story], missed: Any, clients: dict[str, Any]) -> dict[str, int]:
    """Every balance after the demo, from the protocol's rules and the prices agreed."""
    exp = dict(before)
    for s in done:
        if s.price:
            exp[clients["client-1"].address] -= s.price
            exp[s.provider] += s.price - s.fee
            exp["fee pool"] += s.fee
    if missed is not None and missed.bid is not None:
        exp[clients["client-2"].address] += missed.bid.collateral  # escrow back, plus the slashed collateral
        exp[f"stake:{missed.bid.provider}"] -= missed.bid.collateral
    return exp


def _print_balances(console: Console, names: dict[str, str], before: dict[str, int], after: dict[str, int],
                    expected: dict[str, int]) -> bool:
    table = Table("account", "before (VRC)", "after (VRC)", "change", "as the protocol says", title="balances")
    ok = True
    for key in before:
        who = key.removeprefix("stake:")
        label = key if key == "fee pool" else names.get(who, short(who)) + (" stake" if key.startswith("stake:") else "")
        change = after[key] - before[key]
        good = after[key] == expected[key]
        ok &= good
        table.add_row(label, vrc(before[key]), vrc(after[key]), ("+" if change > 0 else "") + vrc(change) if change else "0",
                      "[green]yes[/]" if good else f"[red]no, expected {vrc(expected[key])}[/]")
    console.print(table)
    return ok
