"""The agent runtime's built-in tools: ``calculator``, ``chain``, ``retrieve`` and ``call_agent``.

Every tool takes one string (small models do best with one field) and gives back a short text
for the model's context (``OUTPUT_CHARS`` at most) and the receipts of the model calls it made
itself, which the run's record keeps next to the agent's own (``agents.record``). A tool refuses
bad input with a ``ToolError`` whose message says what is wrong and what to write instead: the
runtime hands that message back to the model as the tool's result, so it can try again.

* ``calculator``: arithmetic on numbers, parsed with ``ast`` (never ``eval``), exact on
  fractions: ``(40 - 2) * 0.95``.
* ``chain``: reads of the network's own chain data from a short query: ``orders``, ``order 3``,
  ``balance 0x...``, ``slashes``, ``disputes``, ``providers`` (``parse_chain_query`` says
  what else it takes). Amounts in VRC (1e18 wei), addresses in full.
* ``retrieve``: the passages of a folder of .md/.txt documents most similar to the input, by
  cosine similarity of exact MiniLM embeddings made through the gateway (each with a receipt).
* ``call_agent``: another agent's answer to a task (``veracity agent serve``'s protocol:
  ``POST {"task"}`` answered by ``{"answer", "run"}``), with the receipts of its whole run.

The parsing and formatting are pure functions (tested without a chain or a gateway); the tools
are thin shells that read the chain or call HTTP and hand the data to them.
"""

from __future__ import annotations

import ast
import json
import math
import re
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import httpx

from veracity.agents.spec import ToolSpec
from veracity.errors import ChainError, VeracityError

if TYPE_CHECKING:
    import numpy as np

    from veracity.chain.client import OrderInfo
    from veracity.chain.devnet import Deployment

OUTPUT_CHARS = 600  # a tool's output in the model's context, at most (about)


class ToolError(VeracityError):
    """A tool refused its input or could not run; the message (which goes back to the model as
    the tool's result) says what is wrong and what to write instead."""


@dataclass(frozen=True)
class ToolContext:
    deployment: Deployment | None  # chain reads (None: the chain tool says it needs one)
    gateway: str | None  # the gateway's base URL, e.g. http://127.0.0.1:8000 (retrieval's embeddings)
    key: str | None = None  # an account key for the chain reads (None: a signer-less connection)


@dataclass(frozen=True)
class ToolResult:
    output: str  # what goes back into the model's context (OUTPUT_CHARS at most, about)
    receipts: list[dict[str, Any]] = field(default_factory=list)  # receipts of model calls the tool made
    delegated: bool = False  # the receipts are another agent's work (``call_agent``), not this one's
    member: int | None = None  # that agent's id on the AgentRegistry, when its card names one


@dataclass(frozen=True)
class Tool:
    name: str  # what the model calls it
    description: str  # one line the model sees, with the input it takes
    run: Callable[[str], ToolResult]  # input text -> result; raises ToolError on bad input
    forms: tuple[str, ...] = ()  # the inputs the grammar chooses among (one ending in a space takes a value after it)


def build_tools(specs: list[ToolSpec], ctx: ToolContext) -> dict[str, Tool]:
    """The agent file's tools by the names the model calls them; a ToolError for a tool that
    cannot work as written (a retrieve without documents, a call_agent without a URL)."""
    builders: dict[str, Callable[[ToolSpec, ToolContext], Tool]] = {
        "calculator": lambda s, c: calculator_tool(), "chain": chain_tool, "retrieve": retrieve_tool,
        "call_agent": lambda s, c: call_agent_tool(s)}
    tools: dict[str, Tool] = {}
    for spec in specs:
        tool = builders[spec.name](spec, ctx)
        if tool.name in tools:
            raise ToolError(f"two tools are named `{tool.name}`: give each call_agent tool its own `agent:` name")
        tools[tool.name] = tool
    return tools


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters at a word boundary, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[:max(limit - 1, 1)]
    if " " in cut[limit // 2:]:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip() + "…"


def fit_lines(head: str, lines: list[str], more: Callable[[int], str], limit: int = OUTPUT_CHARS) -> str:
    """``head`` and as many of ``lines`` as fit in ``limit`` characters (at least one), then
    ``more(n)`` when the last ``n`` lines were left out: it tells the model how to ask for them."""
    out = [head] if head else []
    for i, line in enumerate(lines):
        left = len(lines) - i - 1  # after this one
        note = [more(left)] if left else []
        if i > 0 and len("\n".join([*out, line, *note])) > limit:
            return "\n".join([*out, more(len(lines) - i)])
        out.append(line)
    return "\n".join(out)


# the calculator ------------------------------------------------------------------------------

CALC_MAX_CHARS = 200  # an expression's length
CALC_MAX_DIGITS = 40  # a number's digits
CALC_MAX_EXPONENT = 1000  # |n| in x ** n
CALC_MAX_BITS = 4096  # a value's numerator and denominator (about 1230 decimal digits)
CALC_SHOWN = 12  # significant digits of a result that is not shown exactly
CALC_HOW = "use numbers, + - * / // % ** and parentheses"
_CALC_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
             ast.Pow: "**"}

Number = Fraction | float


def calculate(text: str) -> str:
    """``text``, an arithmetic expression, and its value: ``"(40 - 2) * 0.95 = 36.1"``. Exact on
    fractions (``0.1 + 0.2 = 0.3``); a value without a short exact decimal is shown to 12
    significant digits, marked ``(rounded)``; a fractional power is computed in floating point."""
    expr = " ".join(text.strip().rstrip("=?").split())
    expr = expr.replace("^", "**").replace("×", "*").replace("÷", "/").replace("−", "-")
    if not expr:
        raise ToolError(f"calculator: give an arithmetic expression, such as `(40 - 2) * 0.95`: {CALC_HOW}")
    if len(expr) > CALC_MAX_CHARS:
        raise ToolError(f"calculator: the expression is {len(expr)} characters; at most {CALC_MAX_CHARS}: "
                        "split it into steps")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise ToolError(f"calculator: `{expr}` is not an expression: {CALC_HOW}") from None
    value = _calc(tree.body, expr)
    return f"{expr} = {show_number(value)}"


def _calc(node: ast.AST, src: str) -> Number:
    """The value of one node of the expression; ToolError for anything but arithmetic on numbers."""
    if isinstance(node, ast.Constant):
        return _literal(node, src)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _calc(node.operand, src)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _CALC_OPS:
        a, b = _calc(node.left, src), _calc(node.right, src)
        return _binop(node.op, a, b, ast.get_source_segment(src, node) or src)
    if isinstance(node, ast.Tuple):
        raise ToolError("calculator: write numbers without commas (1000, not 1,000) and one expression at a time")
    what = ast.get_source_segment(src, node) or type(node).__name__
    if isinstance(node, (ast.Name, ast.Call, ast.Attribute)):
        raise ToolError(f"calculator: `{what}` is not a number: {CALC_HOW} (no names or functions)")
    raise ToolError(f"calculator: `{what}` is not arithmetic: {CALC_HOW}")


def _literal(node: ast.Constant, src: str) -> Number:
    seg = ast.get_source_segment(src, node) or repr(node.value)
    if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
        raise ToolError(f"calculator: `{seg}` is not a number: {CALC_HOW}")
    if sum(ch.isdigit() for ch in seg) > CALC_MAX_DIGITS:
        raise ToolError(f"calculator: `{clip(seg, 24)}` has more than {CALC_MAX_DIGITS} digits")
    if isinstance(node.value, int):
        return _sized(Fraction(node.value), seg)
    try:  # the decimal as written (0.1 is one tenth, not the nearest binary float)
        written = Decimal(seg.replace("_", ""))
    except InvalidOperation:
        written = Decimal(repr(node.value))
    if not written.is_finite() or abs(written.adjusted()) > CALC_MAX_BITS // 3:  # before 10**n is built
        raise ToolError(f"calculator: `{clip(seg, 24)}` is too large or too small to compute")
    return _sized(Fraction(written), seg)


def _sized(v: Number, what: str) -> Number:
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ToolError(f"calculator: `{clip(what, 60)}` is too large to compute")
        return v
    if max(v.numerator.bit_length(), v.denominator.bit_length()) > CALC_MAX_BITS:
        raise ToolError(f"calculator: `{clip(what, 60)}` is too large to compute (over about 1200 digits)")
    return v


def _binop(op: ast.operator, a: Number, b: Number, what: str) -> Number:
    try:
        if isinstance(op, ast.Pow):
            return _power(a, b, what)
        if isinstance(op, ast.Add):
            return _sized(a + b, what)
        if isinstance(op, ast.Sub):
            return _sized(a - b, what)
        if isinstance(op, ast.Mult):
            return _sized(a * b, what)
        if isinstance(op, ast.Div):
            return _sized(a / b, what)
        if isinstance(op, ast.FloorDiv):
            q = a // b
            return _sized(Fraction(q) if isinstance(q, int) else q, what)
        return _sized(a % b, what)
    except ZeroDivisionError:
        raise ToolError(f"calculator: `{clip(what, 60)}` divides by zero") from None
    except OverflowError:
        raise ToolError(f"calculator: `{clip(what, 60)}` is too large to compute") from None


def _power(a: Number, b: Number, what: str) -> Number:
    if isinstance(b, Fraction) and b.denominator == 1:
        n = int(b)
        if abs(n) > CALC_MAX_EXPONENT:
            raise ToolError(f"calculator: the exponent in `{clip(what, 60)}` is above {CALC_MAX_EXPONENT}")
        if isinstance(a, Fraction) and (max(a.numerator.bit_length(), a.denominator.bit_length()) - 1) * abs(n) \
                > CALC_MAX_BITS:  # a lower bound of the result's size: refused before it is computed
            raise ToolError(f"calculator: `{clip(what, 60)}` is too large to compute (over about 1200 digits)")
        return _sized(a ** n, what)
    if a < 0:
        raise ToolError(f"calculator: `{clip(what, 60)}` raises a negative number to a fractional power, "
                        "which has no real value")
    return _sized(float(a) ** float(b), what)


def show_number(v: Number) -> str:
    """A value as the calculator answers it: exact when it has a short decimal (integers of up
    to 40 digits, fractions of up to 20 decimals), else 12 significant digits and ``(rounded)``."""
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else _rounded(Decimal(repr(v)))
    if v.denominator == 1 and len(str(abs(v.numerator))) <= CALC_MAX_DIGITS:
        return str(v.numerator)
    twos, fives, d = 0, 0, v.denominator
    while d % 2 == 0:
        d, twos = d // 2, twos + 1
    while d % 5 == 0:
        d, fives = d // 5, fives + 1
    places = max(twos, fives)
    whole = len(str(abs(v.numerator) // v.denominator))
    with localcontext() as c:
        c.prec = whole + places + 60
        exact = Decimal(v.numerator) / Decimal(v.denominator)
        if d == 1 and places <= 20 and whole <= CALC_MAX_DIGITS:
            return format(exact, "f")
        return _rounded(exact)


def _rounded(x: Decimal) -> str:
    mantissa, e, exponent = format(x, f".{CALC_SHOWN}g").partition("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}{e}{exponent} (rounded)"


def calculator_tool() -> Tool:
    return Tool("calculator", "arithmetic on numbers; input: one expression such as (40 - 2) * 0.95 "
                              "(+ - * / // % ** and parentheses)",
                lambda text: ToolResult(calculate(text)))


# the chain -----------------------------------------------------------------------------------

WEI_PER_VRC = 10**18
ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}(?![0-9a-zA-Z])")
HEXISH = re.compile(r"0x[0-9a-zA-Z]*")
CHAIN_QUERIES = ("orders (the latest; `orders before 12`, `orders of 0x...`), order 3 (one order: its commit, "
                 "dispute and settlement), balance 0x... (tokens and stake), slashes, disputes, providers")
CHAIN_FORMS = ("slashes", "disputes", "providers", "orders", "order ", "balance ")  # the grammar's choices
ZERO_ADDRESS = "0x" + "0" * 40
ROLES = {0: "not registered", 1: "provider", 2: "validator"}
OUTCOMES = {1: "provider won", 2: "provider lost", 3: "undecided"}


@dataclass(frozen=True)
class ChainQuery:
    kind: str  # orders, order, balance, slashes, disputes, providers
    order: int | None = None  # order: its id; orders: list those before it
    address: str | None = None  # balance: whose; orders, slashes, disputes: only those it is part of


def parse_chain_query(text: str) -> ChainQuery:
    """What a short query asks, forgiving of case and extra words: ``orders``, ``latest orders``,
    ``orders before 12``, ``orders of 0x...``; ``order 3``, ``show order #3``, ``3``; ``balance
    0x...`` (or any query naming just an address); ``slashes`` (``who was slashed``,
    ``slashes of 0x...``); ``disputes`` (``challenges``, ``games``; ``dispute 3`` is order 3);
    ``providers`` (``nodes``, ``stakes``). ToolError for anything else, listing the queries."""
    addresses = ADDRESS.findall(text)
    rest = ADDRESS.sub(" ", text)
    bad = HEXISH.search(rest)
    if bad:
        raise ToolError(f"chain: `{clip(bad.group(0), 50)}` is not an address: an address is 0x and 40 hex digits")
    low = rest.lower()
    words = re.findall(r"[a-z]+", low)
    numbers = [int(n) for n in re.findall(r"\d+", low)]

    def has(*stems: str) -> bool:
        return any(w.startswith(s) for w in words for s in stems)

    address = addresses[0] if addresses else None
    number = numbers[0] if numbers else None
    if has("slash", "penal", "punish"):
        return ChainQuery("slashes", address=address)
    if has("disput", "challeng", "game") and number is None:
        return ChainQuery("disputes", address=address)
    if has("before", "older", "earlier") and number is not None:
        return ChainQuery("orders", order=number, address=address)
    if number is not None and not address and (has("order", "job", "lease", "disput", "challeng", "game") or
                                              not has("provider", "node", "validator", "balance", "stake")):
        return ChainQuery("order", order=number)
    if address and has("order", "job", "lease") and not has("balance", "stake"):
        return ChainQuery("orders", address=address)
    if address:
        return ChainQuery("balance", address=address)
    if has("provider", "node", "validator", "stake", "registered"):
        return ChainQuery("providers")
    if has("balance", "token", "fund"):
        raise ToolError("chain: a balance needs an address: write `balance 0x` and the account's 40 hex digits")
    if has("order", "job", "lease", "latest", "recent", "market"):
        return ChainQuery("orders")
    raise ToolError(f"chain: `{clip(text.strip(), 60)}` is not a query I know; ask one of: {CHAIN_QUERIES}")


def vrc(wei: int) -> str:
    """An amount in VRC with up to 4 decimals: ``38 VRC``, ``12.3457 VRC``, ``<0.0001 VRC``."""
    sign = "-" if wei < 0 else ""
    wei = abs(int(wei))
    if 0 < wei < 10**14 // 2:
        return f"{sign}<0.0001 VRC"
    units = (wei + 10**14 // 2) // 10**14  # ten-thousandths, rounded half up
    whole, frac = divmod(units, 10**4)
    text = f"{whole}.{frac:04d}".rstrip("0").rstrip(".")
    return f"{sign}{text} VRC"


def utc(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def hex32(b: bytes) -> str:
    return "0x" + bytes(b).hex()


@lru_cache(maxsize=1)
def model_names() -> dict[bytes, str]:
    """The Market's model ids (sha256 of the registry name) of the models Veracity knows."""
    from veracity.models.registry import names
    from veracity.workloads.spec import model_id

    return {model_id(n): n for n in names()}


def order_line(o: OrderInfo) -> str:
    """One order in a list: its id, model, state, client, provider and price."""
    model = model_names().get(bytes(o.model_id))
    head = f"order {o.order_id}{f' ({model})' if model else ''} {o.state_name}: client {o.client}"
    if o.provider == ZERO_ADDRESS:
        return f"{head}, no provider, max price {vrc(o.max_price)}"
    return f"{head}, provider {o.provider}, price {vrc(o.price)}"


@dataclass(frozen=True)
class OrderStory:
    """What the chain holds about one order, gathered by ``ChainReader.story``."""

    order: OrderInfo
    commit: dict[str, Any] | None  # the latest ResultCommitted event's args
    games: list[tuple[dict[str, Any], dict[str, Any] | None]]  # (Challenged args, its Settled args or None)
    open_game: tuple[str, int] | None  # a game in progress: (stage, its move's deadline)
    ending: tuple[str, dict[str, Any]] | None  # the Market event that settled it: (name, args)
    slashed: dict[str, Any] | None  # the Registry's Slashed event of that settlement


def order_text(s: OrderStory) -> str:
    """One order in full: who and how much, its commit, its dispute games, how it settled."""
    o = s.order
    model = model_names().get(bytes(o.model_id))
    lines = [f"order {o.order_id}{f' ({model})' if model else ''}: {o.state_name}; client {o.client}"]
    if o.provider != ZERO_ADDRESS:
        lines[0] += f", provider {o.provider}; price {vrc(o.price)}, collateral {vrc(o.collateral)}"
    else:
        lines[0] += f"; max price {vrc(o.max_price)}"
    if o.state_name == "accepted":
        lines.append(f"running: the result is due by {utc(o.deadline)}")
    if s.commit is not None:
        n = len(s.commit["outputs"])
        lines.append(f"commit: output root {hex32(s.commit['output_cid'])} ({n} output{'s' * (n != 1)}), "
                     f"trace root {hex32(s.commit['trace_root'])} ({s.commit['trace_length']} records)")
        if o.state_name == "committed" and s.open_game is None:
            lines.append(f"challenge window open until {utc(o.committed_at + o.challenge_window)}")
    for challenged, settled in s.games:
        text = f"dispute: challenged by {challenged['challenger']} (bond {vrc(challenged['bond'])})"
        if settled is not None:
            text += f"; {OUTCOMES.get(settled['outcome'], settled['outcome'])}: {settled['reason']}"
        elif s.open_game is not None:
            text += f"; in progress ({s.open_game[0]}), next move due by {utc(s.open_game[1])}"
        lines.append(text)
    if s.ending is not None:
        lines.append(settlement_text(*s.ending, s.slashed))
    return clip("\n".join(lines), OUTPUT_CHARS + 200)


def settlement_text(name: str, args: dict[str, Any], slashed: dict[str, Any] | None) -> str:
    burnt = f" ({vrc(slashed['burnt'])} burnt)" if slashed and slashed.get("burnt") else ""
    if name == "Finalized":
        return f"settled: finalized: the provider was paid {vrc(args['paid'])} (fee {vrc(args['fee'])})"
    if name == "OrderCancelled":
        return f"settled: cancelled before any bid was accepted: the client got {vrc(args['refund'])} back"
    if name == "TimedOut":
        if not args["slashed"]:
            return f"settled: refunded {vrc(args['refund'])} (a lease with no window: nobody slashed)"
        return (f"settled: the provider missed its deadline: the client got {vrc(args['refund'])} back and the "
                f"provider was slashed {vrc(args['slashed'])} to the client")
    if name == "Overturned":
        return (f"settled: overturned: the client got {vrc(args['refund'])} back and the provider was slashed "
                f"{vrc(args['slashed'])} to the challenger {args['challenger']}{burnt}")
    if name == "Undelivered":
        return (f"settled: not delivered: the client got {vrc(args['refund'])} back and the provider was slashed "
                f"{vrc(args['slashed'])} to the client")
    return f"settled: undecided dispute: the client got {vrc(args['refund'])} back; nobody was slashed"


SLASH_CAUSES = {"TimedOut": "missed its deadline", "Undelivered": "did not deliver its result",
                "Overturned": "lost a dispute"}


def slash_line(slashed: dict[str, Any], cause: tuple[str, dict[str, Any]] | None,
               settled: dict[str, Any] | None) -> str:
    """One slash: whom, how much, to whom, for which order and why."""
    burnt = f", {vrc(slashed['burnt'])} burnt" if slashed["burnt"] else ""
    head = f"{slashed['node']} slashed {vrc(slashed['amount'])} to {slashed['to']}{burnt}"
    if cause is None:
        return head
    name, args = cause
    why = SLASH_CAUSES.get(name, name)
    if name == "Overturned":
        why += f": {settled['reason']}" if settled else ": its output was proven wrong"
    return f"order {args['order_id']}: {head}: {why}"


def dispute_line(challenged: dict[str, Any], settled: dict[str, Any] | None, stage: str | None) -> str:
    head = f"order {challenged['order_id']}: challenged by {challenged['challenger']} (bond {vrc(challenged['bond'])})"
    if settled is not None:
        return f"{head}: {OUTCOMES.get(settled['outcome'], settled['outcome'])}: {settled['reason']}"
    return f"{head}: in progress ({stage or 'open'})"


def balance_text(address: str, tokens: int, node: Any, free: int) -> str:
    text = f"{address}: {vrc(tokens)} in tokens"
    if node.role == 0:
        return text + "; not registered (no stake)"
    text += (f"; {ROLES.get(node.role, f'role {node.role}')} stake {vrc(node.stake)} (locked {vrc(node.locked)}, "
             f"free {vrc(free)}")
    if node.unbonding:
        text += f", unbonding {vrc(node.unbonding)} until {utc(node.unbond_at)}"
    text += f"), reputation {node.reputation}"
    if node.role == 1:
        text += f", price floor {vrc(node.price_floor)}"
    return text


def provider_line(node: Any, won: int) -> str:
    models = [model_names().get(bytes(m), hex32(m)[:10]) for m in node.models]
    text = (f"{node.address}: stake {vrc(node.stake)} (locked {vrc(node.locked)}), floor {vrc(node.price_floor)}, "
            f"reputation {node.reputation}, {won} order{'s' * (won != 1)} won")
    return text + (f", serves {', '.join(models)}" if models else "")


class ChainReader:
    """Reads of a deployment's contracts (a thin shell: the formatting is the pure functions above)."""

    def __init__(self, dep: Deployment, key: str | None) -> None:
        from veracity.chain.client import Chain, DisputesClient, MarketClient, RegistryClient, TokenClient

        self.chain = Chain(dep.rpc_url, key)
        self.token = TokenClient(self.chain, dep.token)
        self.registry = RegistryClient(self.chain, dep.registry, self.token)
        self.market = MarketClient(self.chain, dep.market, self.token)
        self.disputes = DisputesClient(self.chain, dep.disputes, self.token) if dep.disputes else None

    def logs(self, contract: Any, event: str, **filters: Any) -> list[dict[str, Any]]:
        """An event's logs (oldest first): its args, with ``tx`` (the transaction's hash)."""
        got = getattr(contract.contract.events, event)().get_logs(from_block=0, argument_filters=filters or None)
        return [{**dict(e["args"]), "tx": bytes(e["transactionHash"]).hex()} for e in got]

    def order_count(self) -> int:
        return int(self.market.fn.order_count().call())

    def order(self, order_id: int) -> OrderInfo:
        n = self.order_count()
        if not 1 <= order_id <= n:
            have = f"orders 1 to {n}" if n else "no orders yet"
            raise ToolError(f"chain: order {order_id} does not exist: the market has {have}")
        return self.market.order(order_id)

    def orders(self, before: int | None, address: str | None) -> tuple[int, list[OrderInfo]]:
        """(all orders, the latest ones first, before ``before``, of ``address`` as client or provider)."""
        n = self.order_count()
        top = min(n, before - 1) if before else n
        out: list[OrderInfo] = []
        for oid in range(top, max(top - 200, 0), -1):  # the latest 200 at most
            o = self.market.order(oid)
            if address is None or address.lower() in (o.client.lower(), o.provider.lower()):
                out.append(o)
            if address is None and len(out) >= 12:
                break
        return n, out

    def story(self, order_id: int) -> OrderStory:
        o = self.order(order_id)
        commits = self.logs(self.market, "ResultCommitted", order_id=order_id)
        games: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        open_game = None
        if self.disputes is not None:
            challenged = self.logs(self.disputes, "Challenged", order_id=order_id)
            settled = self.logs(self.disputes, "Settled", order_id=order_id)
            games = [(c, settled[i] if i < len(settled) else None) for i, c in enumerate(challenged)]
            if games and games[-1][1] is None:
                g = self.disputes.game(order_id)
                open_game = (g.stage_name, g.deadline)
        ending = None
        for name in ("Finalized", "TimedOut", "Overturned", "Undecided", "OrderCancelled", "Undelivered"):
            hits = self.logs(self.market, name, order_id=order_id)
            if hits:
                ending = (name, hits[-1])
        slashed = None
        if ending is not None and ending[0] in SLASH_CAUSES and o.provider != ZERO_ADDRESS:
            same = [s for s in self.logs(self.registry, "Slashed", node=o.provider) if s["tx"] == ending[1]["tx"]]
            slashed = same[-1] if same else None
        return OrderStory(o, commits[-1] if commits else None, games, open_game, ending, slashed)

    def slashes(self) -> list[str]:
        """Every slash, latest first, with the order and the reason from the same transaction."""
        causes = {e["tx"]: (name, e) for name in SLASH_CAUSES for e in self.logs(self.market, name)}
        settled = {e["tx"]: e for e in self.logs(self.disputes, "Settled")} if self.disputes else {}
        return [slash_line(s, causes.get(s["tx"]), settled.get(s["tx"]))
                for s in reversed(self.logs(self.registry, "Slashed"))]

    def dispute_games(self) -> list[tuple[dict[str, Any], dict[str, Any] | None, str | None]]:
        """Every dispute game, latest first: (Challenged, its Settled or None, the stage of an open one)."""
        if self.disputes is None:
            raise ToolError("chain: this deployment has no Disputes contract, so there are no dispute games")
        settled: dict[int, list[dict[str, Any]]] = {}
        for s in self.logs(self.disputes, "Settled"):
            settled.setdefault(s["order_id"], []).append(s)
        seen: dict[int, int] = {}
        out = []
        for c in self.logs(self.disputes, "Challenged"):
            k = seen[c["order_id"]] = seen.get(c["order_id"], -1) + 1
            ends = settled.get(c["order_id"], [])
            end = ends[k] if k < len(ends) else None
            out.append((c, end, None if end else self.disputes.game(c["order_id"]).stage_name))
        return out[::-1]

    def providers(self) -> list[str]:
        won: dict[str, int] = {}
        for b in self.logs(self.market, "BidAccepted"):
            won[b["provider"]] = won.get(b["provider"], 0) + 1
        seen: list[str] = []
        for r in self.logs(self.registry, "Registered"):
            if r["role"] == 1 and r["node"] not in seen:
                seen.append(r["node"])
        nodes = [self.registry.node(a) for a in seen]
        return [provider_line(n, won.get(n.address, 0)) for n in sorted(nodes, key=lambda n: -n.stake)]

    def balance(self, address: str) -> str:
        node = self.registry.node(address)
        free = self.registry.free_stake(address) if node.role else 0
        return balance_text(node.address, self.token.balance_of(address), node, free)


def answer_chain(reader: ChainReader, q: ChainQuery) -> str:
    """The answer to a parsed query, from the chain."""
    if q.kind == "order":
        assert q.order is not None
        return order_text(reader.story(q.order))
    if q.kind == "orders":
        n, orders = reader.orders(q.order, q.address)
        if not orders:
            return "no orders yet" if not n else f"no orders {'of ' + q.address if q.address else 'before that'}"
        who = f" of {q.address}" if q.address else ""
        head = f"{n} orders in all; {'those' + who if who else 'the latest'}, newest first:"
        return fit_lines(head, [order_line(o) for o in orders],
                         lambda k: f"(older ones: ask `orders before {orders[-k - 1].order_id}`)")
    if q.kind == "balance":
        assert q.address is not None
        return reader.balance(q.address)
    if q.kind == "slashes":
        lines = reader.slashes()
        if q.address:
            lines = [ln for ln in lines if q.address.lower() in ln.lower()]
        if not lines:
            return "nobody has been slashed" + (f" with {q.address} involved" if q.address else "")
        return fit_lines(f"{len(lines)} slash{'es' * (len(lines) != 1)}, latest first:", lines,
                         lambda k: f"({k} more)")
    if q.kind == "disputes":
        games = reader.dispute_games()
        lines = [dispute_line(*g) for g in games]
        if q.address:
            lines = [ln for ln in lines if q.address.lower() in ln.lower()]
        if not lines:
            return "no dispute games yet" + (f" challenged by {q.address}" if q.address else "")
        return fit_lines(f"{len(lines)} dispute game{'s' * (len(lines) != 1)}, latest first "
                         "(`order N` tells one whole):", lines, lambda k: f"({k} more)")
    lines = reader.providers()
    if not lines:
        return "no providers are registered"
    return fit_lines(f"{len(lines)} provider{'s' * (len(lines) != 1)}, by stake:", lines, lambda k: f"({k} more)")


def chain_tool(spec: ToolSpec, ctx: ToolContext) -> Tool:
    readers: list[ChainReader] = []

    def run(text: str) -> ToolResult:
        q = parse_chain_query(text)
        if ctx.deployment is None:
            raise ToolError("chain: this agent runs without a deployment, so the chain cannot be read: start a "
                            "devnet (`veracity devnet up`) or pass --deployment")
        try:
            if not readers:
                readers.append(ChainReader(ctx.deployment, ctx.key))
            return ToolResult(answer_chain(readers[0], q))
        except ToolError:
            raise
        except ChainError as exc:
            raise ToolError(f"chain: {exc}") from None
        except Exception as exc:  # web3's and requests' errors: the node is down or not a Veracity chain
            raise ToolError(f"chain: cannot read the chain at {ctx.deployment.rpc_url} ({type(exc).__name__}: "
                            f"{clip(str(exc), 160)}): is the devnet running (`veracity devnet up`)?") from None

    return Tool("chain", f"reads this network's chain; input: one of {CHAIN_QUERIES}", run, CHAIN_FORMS)


# retrieval -----------------------------------------------------------------------------------

PASSAGE_CHARS = 800  # a passage's length, at most (longer paragraphs are split at word boundaries)
MINILM_TOKENS = 256  # the tokens MiniLM takes (``models.encoder.EncoderConfig.max_tokens``)
EMBED_BATCH = 64  # texts per embeddings request (the gateway's ``MAX_BATCH``)
MAX_PASSAGES = 2000  # a document folder's passages, at most (each is one embedding through the gateway)
DOC_SUFFIXES = (".md", ".txt")
EMBED_TIMEOUT_S = 600.0


def split_passages(text: str, limit: int = PASSAGE_CHARS) -> list[str]:
    """A document's passages: its paragraphs (split on blank lines, whitespace collapsed), a
    heading joined to the paragraph under it, and a paragraph longer than ``limit`` characters
    split at word boundaries."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    joined: list[str] = []
    heading = ""
    for p in paragraphs:
        if not p:
            continue
        if p.startswith("#") and len(p) < 120 and "\n" not in p:
            heading = f"{heading} {p}".strip()
            continue
        joined.append(f"{heading} {p}".strip())
        heading = ""
    if heading:
        joined.append(heading)
    out: list[str] = []
    for p in joined:
        while len(p) > limit:
            cut = p.rfind(" ", 0, limit + 1)
            cut = cut if cut > limit // 2 else limit
            out.append(p[:cut].strip())
            p = p[cut:].strip()
        if p:
            out.append(p)
    return out


def fit_tokens(text: str, count: Callable[[str], int], limit: int = MINILM_TOKENS) -> list[str]:
    """``text`` as pieces that each fit the model's ``limit`` tokens (split in halves by words
    until they do: text of code or hex holds far more tokens per character than prose)."""
    if count(text) <= limit:
        return [text]
    words = text.split()
    if len(words) < 2:
        return [text[:len(text) // 2], text[len(text) // 2:]] if len(text) > 1 else [text]
    half = len(words) // 2
    return fit_tokens(" ".join(words[:half]), count, limit) + fit_tokens(" ".join(words[half:]), count, limit)


def rank(query: np.ndarray, vectors: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` rows of ``vectors`` most similar to ``query`` by cosine similarity, best first
    (ties: the earlier row), as (row, similarity)."""
    import numpy as np

    norms = np.linalg.norm(vectors, axis=1) * float(np.linalg.norm(query))
    sims = vectors @ query / np.where(norms > 0, norms, 1.0)
    order = sorted(range(len(sims)), key=lambda i: (-float(sims[i]), i))
    return [(i, float(sims[i])) for i in order[:k]]


def read_docs(folder: Path) -> list[tuple[str, str]]:
    """The (file name relative to ``folder``, text) of the .md/.txt files under it, by name."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in DOC_SUFFIXES and p.is_file())
    return [(p.relative_to(folder).as_posix(), p.read_text(encoding="utf-8", errors="replace")) for p in files]


@lru_cache(maxsize=1)
def minilm_token_count() -> Callable[[str], int]:
    """MiniLM's token count of a text, as its parser counts it (with [CLS] and [SEP])."""
    from tokenizers import Tokenizer

    from veracity.models.encoder import minilm_dir

    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return lambda text: len(tok.encode(text).ids)


def receipts_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """An answer's receipts, one per input, from its ``veracity`` field (the first's in ``receipt``,
    the others' in ``receipts``)."""
    v = body.get("veracity") or {}
    return [v["receipt"], *v.get("receipts", [])] if v.get("receipt") else []


def embed(gateway: str, texts: list[str], client: httpx.Client | None = None) -> tuple[list[list[float]], list[dict]]:
    """MiniLM embeddings of ``texts`` through the gateway, in batches, with each one's receipt."""
    vectors: list[list[float]] = []
    receipts: list[dict[str, Any]] = []
    http = client or httpx.Client(timeout=EMBED_TIMEOUT_S)
    try:
        for lo in range(0, len(texts), EMBED_BATCH):
            batch = texts[lo:lo + EMBED_BATCH]
            try:
                resp = http.post(f"{gateway.rstrip('/')}/v1/embeddings", json={"model": "minilm", "input": batch})
            except httpx.HTTPError as exc:
                raise ToolError(f"retrieve: the gateway at {gateway} did not answer ({type(exc).__name__}): is it "
                                "running (`veracity gateway run`)?") from None
            if resp.status_code != 200:
                raise ToolError(f"retrieve: the gateway refused the embeddings ({resp.status_code}): {why(resp)}")
            body = resp.json()
            got = [d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])]
            rs = receipts_of(body)
            if len(got) != len(batch) or len(rs) != len(batch):
                raise ToolError(f"retrieve: the gateway answered {len(got)} embeddings and {len(rs)} receipts for "
                                f"{len(batch)} texts: is {gateway} a Veracity gateway?")
            vectors += got
            receipts += rs
    finally:
        if client is None:
            http.close()
    return vectors, receipts


def why(resp: httpx.Response) -> str:
    """The message of an error answer (OpenAI's shape, FastAPI's ``detail``, or its text)."""
    try:
        body = resp.json()
    except ValueError:
        return clip(resp.text.strip(), 200) or "no message"
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if body.get("detail"):
            return clip(str(body["detail"]), 200)
    return clip(json.dumps(body), 200)


@dataclass(frozen=True)
class DocIndex:
    """A document folder's passages, their embeddings and each embedding's receipt."""

    names: list[str]  # each passage's file
    passages: list[str]
    vectors: Any  # np.ndarray, one row per passage
    receipts: list[dict[str, Any]]


_INDEXES: dict[tuple[str, str, tuple[tuple[str, int, int], ...]], DocIndex] = {}
_INDEX_LOCK = threading.Lock()


def fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """The documents' names, sizes and modification times: a cached index is redone when they change."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in DOC_SUFFIXES and p.is_file())
    return tuple((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


def doc_index(gateway: str, folder: Path) -> tuple[DocIndex, list[dict[str, Any]]]:
    """The folder's index (cached in memory per gateway, folder and documents' state) and the
    receipts of the embeddings made now to build it (none when it was cached)."""
    import numpy as np

    key = (gateway, str(folder), fingerprint(folder))
    with _INDEX_LOCK:
        if key in _INDEXES:
            return _INDEXES[key], []
        count = minilm_token_count()
        names, passages = [], []
        for name, text in read_docs(folder):
            for p in split_passages(text):
                for piece in fit_tokens(p, count):
                    names.append(name)
                    passages.append(piece)
        if not passages:
            raise ToolError(f"retrieve: the documents in {folder} hold no text")
        if len(passages) > MAX_PASSAGES:
            raise ToolError(f"retrieve: the documents in {folder} make {len(passages)} passages; at most "
                            f"{MAX_PASSAGES}: point `docs:` at a smaller folder")
        vectors, receipts = embed(gateway, passages)
        index = DocIndex(names, passages, np.asarray(vectors, dtype=np.float64), receipts)
        for old in [k for k in _INDEXES if k[:2] == key[:2]]:
            del _INDEXES[old]  # the documents changed: the old index is stale
        _INDEXES[key] = index
        return index, receipts


def retrieval_text(hits: list[tuple[str, str, float]], limit: int = OUTPUT_CHARS) -> str:
    """The passages found, best first, each with its file and similarity, cut to share ``limit``."""
    each = max(80, limit // max(len(hits), 1) - 24)
    return "\n".join(f"[{name}, {score:.2f}] {clip(text, each)}" for name, text, score in hits)


def retrieve_tool(spec: ToolSpec, ctx: ToolContext) -> Tool:
    if not spec.docs:
        raise ToolError("the retrieve tool needs `docs:`, a folder of .md/.txt files (relative to the agent file)")
    folder = Path(spec.docs)
    if not folder.is_dir():
        raise ToolError(f"retrieve: the docs folder {folder} does not exist: fix `docs:` in the agent file")
    if not fingerprint(folder):
        raise ToolError(f"retrieve: {folder} holds no .md or .txt files: fix `docs:` in the agent file")

    def run(text: str) -> ToolResult:
        import numpy as np

        query = " ".join(text.split())
        if not query:
            raise ToolError("retrieve: give a question or keywords to search the documents for")
        if ctx.gateway is None:
            raise ToolError("retrieve: this agent runs without a gateway, so nothing can be embedded: pass --gateway")
        query = fit_tokens(query, minilm_token_count())[0]  # a long query's start
        index, made = doc_index(ctx.gateway, folder)
        (qvec,), (qreceipt,) = embed(ctx.gateway, [query])
        hits = rank(np.asarray(qvec, dtype=np.float64), index.vectors, spec.top_k)
        shown = [index.receipts[i] for i, _ in hits]  # the vectors the answer rests on, even from the cache
        receipts = unique([*made, *shown, qreceipt])
        return ToolResult(retrieval_text([(index.names[i], index.passages[i], s) for i, s in hits]), receipts)

    return Tool("retrieve", f"finds the passages most like the input in the documents of {folder.name}/; "
                            "input: a question or keywords", run)


def unique(receipts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for r in receipts:
        k = json.dumps(r, sort_keys=True)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


# another agent -------------------------------------------------------------------------------

AGENT_TIMEOUT_S = 600.0  # another agent's whole run (its own model calls and tools)


def run_receipts(events: list[Any]) -> list[dict[str, Any]]:
    """Every receipt of another agent's run record: its model calls' (``chat`` events) and those
    its tools made (``tool`` events' ``receipts``), in the record's order."""
    out: list[dict[str, Any]] = []
    for e in events:
        if not isinstance(e, dict):
            continue
        if e.get("event") == "chat" and isinstance(e.get("receipt"), dict):
            out.append(e["receipt"])
        elif e.get("event") == "tool":
            out += [r for r in e.get("receipts") or [] if isinstance(r, dict)]
    return out


def card_agent_id(url: str, timeout: float = 5.0) -> int | None:
    """The agent id another agent's card (``GET .../card`` beside its ``/tasks``) registers, or
    None (no card, not registered): whose work its receipts are, for the collective's split."""
    base = url.rstrip("/").removesuffix("/tasks")
    try:
        card = httpx.get(f"{base}/card", timeout=timeout).json()
        regs = card.get("registrations") or []
        agent_id = regs[0].get("agentId") if isinstance(regs[0], dict) else None
    except (httpx.HTTPError, ValueError, AttributeError, IndexError):
        return None
    return agent_id if isinstance(agent_id, int) and not isinstance(agent_id, bool) and 0 < agent_id < 2**256 else None


def ask_agent(url: str, task: str, timeout: float = AGENT_TIMEOUT_S) -> ToolResult:
    """``POST {"task": task}`` to another agent's endpoint: its answer, and its run's receipts."""
    if not task.strip():
        raise ToolError("call_agent: give the task to ask the other agent, in plain words")
    try:
        resp = httpx.post(url, json={"task": task}, timeout=timeout)
    except httpx.TimeoutException:
        raise ToolError(f"call_agent: the agent at {url} did not answer within {timeout:g} s: ask it something "
                        "smaller, or answer without it") from None
    except httpx.HTTPError as exc:
        raise ToolError(f"call_agent: cannot reach the agent at {url} ({type(exc).__name__}): is `veracity agent "
                        "serve` running there?") from None
    if resp.status_code != 200:
        raise ToolError(f"call_agent: the agent at {url} refused the task ({resp.status_code}): {why(resp)}")
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("answer"), str) or \
            not isinstance(body.get("run", []), list):
        raise ToolError(f"call_agent: {url} answered something that is not an agent's answer (a JSON object with "
                        "`answer`, a string, and `run`, its record's events): is it `veracity agent serve`?")
    return ToolResult(clip(body["answer"].strip(), OUTPUT_CHARS), run_receipts(body.get("run", [])), delegated=True)


def call_agent_tool(spec: ToolSpec, timeout: float = AGENT_TIMEOUT_S) -> Tool:
    name = spec.agent or "call_agent"
    if not spec.url:
        raise ToolError(f"the call_agent tool `{name}` needs `url:`, the other agent's endpoint "
                        "(`veracity agent serve` prints it)")
    url = spec.url
    who = f"the {spec.agent} agent" if spec.agent else "another agent"
    member: list[int | None] = []  # its agent id, read from its card at the first call

    def run(text: str) -> ToolResult:
        result = ask_agent(url, text, timeout)
        if not member:
            member.append(card_agent_id(url))
        return replace(result, member=member[0])

    return Tool(name, f"asks {who} to do a task and gives its answer; input: the task, in plain words", run)
