"""An agent over HTTP (``veracity agent serve``): the protocol ``tools.call_agent`` speaks, the
agent's registration file, and the records of the runs it served.

* ``POST /tasks`` with ``{"task": TEXT}``: the agent runs the task (its model calls through the
  gateway, each with a receipt) and answers ``{"answer", "reason", "run", "record",
  "request_hash"}``: the answer, why the run stopped (``answered``, ``steps``, ``tokens``), the
  run record's events (every receipt is in them), the record's URL and its keccak-256 (what a
  validation request commits to: ``agents.validate``). Bad input is a 400 (not a JSON object
  with one string ``task``, an empty task) or a 413 (a task over ``MAX_TASK_CHARS``, a body over
  ``MAX_BODY_BYTES``); a gateway that refuses or does not answer is a 502.
* **One task at a time**: a run takes the model's time (minutes on a CPU), and a second run
  would only share it. A task that comes while another runs is refused at once with a 429 and
  ``Retry-After``, rather than queued behind a run of unknown length (a queued caller would wait
  in silence up to its timeout); ``call_agent`` hands the 429's message back to its model.
  ``GET /status`` says whether a run is in progress.
* ``GET /card``: the registration file (ERC-8004 style: ``type``, ``name``, ``description``,
  ``endpoints``, ``model``, ``tools``, ``price``, ``registrations`` once on chain,
  ``supportedTrust``); its URL is the agent's ``agentURI``.
* ``GET /runs/NAME.jsonl``: a run record this agent wrote (a validation request's URI).

The app is thin: ``parse_task`` and ``agent_card`` are pure, and the run is a function handed in
(``run_agent`` with the gateway completer, in ``veracity agent serve``).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from veracity.agents.runtime import AgentError, Run
from veracity.agents.spec import AgentSpec
from veracity.errors import InputError, VeracityError

if TYPE_CHECKING:
    from veracity.chain.agents import AgentRegistryClient

MAX_TASK_CHARS = 2000  # a task, at most: it goes into the model's context with the system prompt and tool results
MAX_BODY_BYTES = 64 * 1024  # a POST /tasks body, at most (read before it is parsed)
RETRY_AFTER_S = 30  # what a 429 suggests
CARD_TYPE = "https://eips.ethereum.org/EIPS/eip-8004#registration-v1"
RECORD_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*\.jsonl$")


class TaskTooLong(InputError):
    """A task over MAX_TASK_CHARS (answered 413)."""


def parse_task(body: Any) -> str:
    """The task in a ``POST /tasks`` body (``{"task": TEXT}``); InputError that says what is wrong."""
    if not isinstance(body, dict):
        raise InputError('send a JSON object: {"task": "what the agent should do"}')
    unknown = sorted(set(body) - {"task"})
    if unknown:
        raise InputError(f'unknown field {unknown[0]!r}: send {{"task": "what the agent should do"}}')
    task = body.get("task")
    if not isinstance(task, str):
        raise InputError('`task` must be a string: {"task": "what the agent should do"}'
                         if "task" in body else 'no `task`: send {"task": "what the agent should do"}')
    if not task.strip():
        raise InputError("the task is empty: say what the agent should do")
    if len(task) > MAX_TASK_CHARS:
        raise TaskTooLong(f"the task is {len(task)} characters; at most {MAX_TASK_CHARS}: ask something shorter")
    return task.strip()


def register_agent(reg: AgentRegistryClient, uri: str) -> tuple[int, bool]:
    """The id of this account's agent whose URI is ``uri``, registering one if it has none; and
    whether it was registered now."""
    for agent_id in reg.agents_of(reg.chain.address):
        if reg.uri(agent_id) == uri:
            return agent_id, False
    return reg.register(uri), True


def agent_card(spec: AgentSpec, base_url: str, tools: list[str], price: str,
               registration: tuple[int, int, str] | None = None) -> dict[str, Any]:
    """The agent's registration file: what it is, where to reach it, what it runs on and with.
    ``registration``: (agent id, chain id, AgentRegistry address) once registered."""
    base = base_url.rstrip("/")
    card: dict[str, Any] = {
        "type": CARD_TYPE, "name": spec.name, "description": spec.description,
        "endpoints": [{"name": "tasks", "endpoint": f"{base}/tasks", "version": "1"}],
        "model": spec.model, "tools": tools, "price": price, "registrations": [],
        "supportedTrust": ["reputation", "validation"],
    }
    if registration is not None:
        agent_id, chain_id, registry = registration
        card["registrations"] = [{"agentId": agent_id, "agentRegistry": f"eip155:{chain_id}:{registry}"}]
    return card


def create_app(card: Callable[[], dict[str, Any]], run_task: Callable[[str], tuple[Run, Path | None]],
               base_url: str, records: Path | None = None, prefix: str = "") -> FastAPI:
    """The agent's FastAPI app: ``run_task`` runs one task (blocking) and returns the run and the
    path of its record (None when not kept); ``/runs`` serves the records in ``records`` whose
    names start with ``prefix`` (this agent's, when the folder is shared)."""
    from veracity.agents.validate import request_hash

    app = FastAPI(title="Veracity agent", docs_url=None, redoc_url=None, openapi_url=None)
    lock = asyncio.Lock()
    done = {"tasks": 0}

    def error(status: int, message: str, **headers: str) -> JSONResponse:
        return JSONResponse({"detail": message}, status, headers=headers or None)

    @app.post("/tasks")
    async def tasks(request: Request) -> Any:
        too_big = f"the body is over {MAX_BODY_BYTES} bytes: a task is at most {MAX_TASK_CHARS} characters"
        if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
            return error(413, too_big)
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return error(413, too_big)
        try:
            body = json.loads(raw)
        except ValueError:
            return error(400, 'the body is not JSON: send {"task": "what the agent should do"}')
        try:
            task = parse_task(body)
        except TaskTooLong as exc:
            return error(413, str(exc))
        except InputError as exc:
            return error(400, str(exc))
        if lock.locked():
            return error(429, "the agent is busy with another task (one at a time): try again later",
                         **{"Retry-After": str(RETRY_AFTER_S)})
        async with lock:
            try:
                run, path = await run_in_threadpool(run_task, task)
            except AgentError as exc:
                return error(502, str(exc))
            except VeracityError as exc:
                return error(500, f"the agent could not run the task: {exc}")
            done["tasks"] += 1
        out: dict[str, Any] = {"answer": run.answer, "reason": run.reason, "run": run.record.events}
        if path is not None:
            out["record"] = f"{base_url.rstrip('/')}/runs/{path.name}"
            out["request_hash"] = "0x" + request_hash(path.read_bytes()).hex()
        return out

    @app.get("/card")
    async def get_card() -> Any:
        return card()

    @app.get("/status")
    async def status() -> Any:
        return {"busy": lock.locked(), "tasks": done["tasks"]}

    @app.get("/runs/{name}")
    async def get_run(name: str) -> Any:
        ok = records is not None and RECORD_NAME.match(name) and name.startswith(prefix)
        path = records / name if records is not None and ok else None
        if path is None or not path.is_file():
            return error(404, f"no run record {name!r} here")
        return Response(path.read_bytes(), media_type="application/jsonl")

    return app
