"""A run's record checked against the chain (``veracity agent trace``): every model call's receipt
(the agent's own, and those its tools made) verified as ``veracity receipt verify`` does. A run
is ``verified`` only if every call is; ``pending`` while some window is not committed yet;
``failed`` if any receipt is refused (a forged or altered receipt, or a committed window that
does not hold its answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from veracity.agents.record import RunRecord
from veracity.chain.devnet import Deployment
from veracity.errors import VeracityError
from veracity.gateway.receipts import ReceiptCheck, verify
from veracity.market.receipts import Receipt


@dataclass(frozen=True)
class RunCheck:
    verdict: str  # verified, pending, failed
    checks: list[ReceiptCheck]

    @property
    def ok(self) -> bool:
        return self.verdict == "verified"


def check_receipt(dep: Deployment, key: str, receipt: Any) -> ReceiptCheck:
    try:
        parsed = Receipt.model_validate(receipt)
    except (ValueError, TypeError) as exc:
        return ReceiptCheck("failed", f"not a receipt ({str(exc).splitlines()[0]})")
    try:
        return verify(dep, key, parsed)
    except VeracityError as exc:  # the chain could not be read
        return ReceiptCheck("pending", f"could not be checked yet: {exc}")


def check_run(record: RunRecord, dep: Deployment, key: str) -> RunCheck:
    """Every receipt of the run, checked; the run's verdict from them (no receipt: failed)."""
    checks = [check_receipt(dep, key, r) for r in record.receipts]
    verdicts = {c.verdict for c in checks}
    if not checks or "failed" in verdicts:
        return RunCheck("failed", checks)
    return RunCheck("pending" if "pending" in verdicts else "verified", checks)


def run_tree(record: RunRecord, check: RunCheck | None = None) -> Any:
    """The run as a rich Tree: the task, each model call (with its receipt's verdict) and tool
    call, and the answer."""
    from rich.markup import escape
    from rich.tree import Tree

    run = record.of("run")[0]
    head = f"[bold]{escape(run['agent'])}[/] ({escape(run['model'])}): {escape(run['task'])}"
    if check is not None:
        colour = {"verified": "green", "pending": "yellow", "failed": "red"}[check.verdict]
        head += f"  [{colour}]{check.verdict}[/]"
    tree = Tree(head)
    verdicts = iter(check.checks if check is not None else [])
    for e in record.events:
        if e["event"] == "chat":
            v = next(verdicts, None)
            mark = "" if v is None else f"  [{'green' if v.ok else 'yellow' if v.verdict == 'pending' else 'red'}]" \
                                        f"{v.verdict}[/]"
            r = e["receipt"]
            tree.add(f"chat {escape(e['model'])} ({e['purpose']}): {escape(repr(e['output'][:60]))} "
                     f"[dim]{e['input_tokens']}+{e['output_tokens']} tokens, lease {r.get('lease')} #{r.get('index')}[/]"
                     + mark)
        elif e["event"] == "tool":
            node = tree.add(f"execute_tool {escape(e['name'])}({escape(repr(e['input'][:60]))}) -> "
                            f"{escape(repr((e['error'] or e['output'])[:80]))}" + ("  [red]error[/]" if e["error"] else ""))
            for r in e.get("receipts") or []:
                v = next(verdicts, None)
                node.add(f"embeddings receipt: lease {r.get('lease')} #{r.get('index')}"
                         + ("" if v is None else f"  {v.verdict}"))
        elif e["event"] == "end":
            tree.add(f"[bold]answer[/] ({e['reason']}, {e['steps']} tool calls, {e['output_tokens']} tokens): "
                     f"{escape(e['answer'])}")
    return tree
