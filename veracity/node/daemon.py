"""What every daemon shares: serve its HTTP app on 127.0.0.1 in a thread and run its loop (or
loops), logging refusals and errors without ever stopping; and its logging set up."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any, Callable

from veracity.errors import VeracityError
from veracity.logs import log, setup


def serve_and_loop(name: str, app: Any, port: int, tick: Callable[[], None], interval: float,
                   ready: Callable[[], None] | None = None) -> None:
    """Serve ``app`` on 127.0.0.1:``port`` and run ``tick`` forever; ``ready`` (registering the
    node's endpoint on chain) runs once the server answers, so nobody is sent to a closed port."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit(f"{name}: cannot serve on 127.0.0.1:{port} (is the port taken?)")
        time.sleep(0.02)
    if ready is not None:
        ready()
    run_loop(name, tick, interval)


def run_loop(name: str, tick: Callable[[], None], interval: float) -> None:
    """Call ``tick`` every ``interval`` seconds forever; an error is logged and the loop goes on."""
    while True:
        try:
            tick()
        except VeracityError as exc:  # logged; the daemon keeps serving
            log(name, str(exc))
        except Exception:  # a bug, not bad input: logged with its traceback, and the daemon goes on
            log(name, "unexpected error, continuing:\n" + traceback.format_exc(), logging.ERROR)
        time.sleep(interval)


def start_logging(cfg: Any, level: str | None = None, json_lines: bool = False) -> None:
    """A daemon's logging: ``level`` if given, else its config's ``log_level`` (default info)."""
    setup(level or getattr(cfg, "log_level", None) or "info", json_lines or bool(getattr(cfg, "log_json", False)))
