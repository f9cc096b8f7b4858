"""An agent run exported as OpenTelemetry traces (``export_run``): the run's record (``agents.record``)
turned into spans after the run, so any tracing backend shows what the agent did and every model
call's receipt next to it.

The spans follow the OpenTelemetry GenAI semantic conventions (semantic-conventions-genai v0.1.0,
the GenAI spans moved out of semantic-conventions v1.41):

* the root ``invoke_agent {agent}`` (kind INTERNAL: the agent runs in this process), with the
  run's model and total token counts, and ``veracity.run_id``, ``veracity.answer_sha256``,
  ``veracity.stop_reason``;
* one ``chat {model}`` child per model call (kind CLIENT: the call goes to the gateway), with its
  token counts and its receipt (``veracity.receipt``, ``veracity.receipt.lease``,
  ``veracity.receipt.index``);
* one ``execute_tool {name}`` child per tool call (kind INTERNAL), in error when the tool failed,
  with the receipts of the model calls the tool made itself (``veracity.receipts``).

Times are the record's, so a run is exported whenever one likes. The ids are the run's too: the
trace id is the first 16 bytes of SHA-256 of the run id, each span id from it and the span's
place, so exporting a run twice gives the same trace and a trace is found from its record.

Spans go to a file as OTLP/JSON (one ``ExportTraceServiceRequest`` a line, hex ids, integer
enums, camelCase keys: what the OTLP file exporter writes and a collector's ``otlpjsonfile``
receiver reads), and to a collector over OTLP/HTTP (protobuf, ``/v1/traces``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode

from veracity.agents.record import RunRecord, sha256_text
from veracity.errors import InputError, UsageError, VeracityError
from veracity.market.receipts import Receipt

SERVICE = "veracity-agent"
PROVIDER = "veracity"  # gen_ai.provider.name: the gateway serves every model call
SCOPE = "veracity.agents.telemetry"
TRACES_PATH = "/v1/traces"
TRACES_ENDPOINT_VAR, ENDPOINT_VAR = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
OTHER_ERROR = "_OTHER"  # error.type's value when there is no error class to name (the conventions')

Attributes = dict[str, str | int]


@dataclass(frozen=True)
class SpanSpec:
    """One span to emit: what the record says about it, before the SDK makes it a span."""

    name: str
    kind: SpanKind
    start: int  # Unix nanoseconds
    end: int
    attributes: Attributes
    error: str | None = None  # the status description when the operation failed


def export_run(record: RunRecord, file: Path | None = None, endpoint: str | None = None) -> int:
    """Export a run's record as OpenTelemetry spans: to ``file`` as OTLP/JSON, and to the OTLP/HTTP
    collector at ``endpoint`` (its base URL, e.g. ``http://localhost:4318``; ``/v1/traces`` is
    added unless given), or at ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``/``OTEL_EXPORTER_OTLP_ENDPOINT``
    when no endpoint is given. Returns how many spans were exported."""
    url = traces_url(endpoint)
    if file is None and url is None:
        raise UsageError("nowhere to export the run's spans to: give a file, an OTLP endpoint, "
                         "or set OTEL_EXPORTER_OTLP_ENDPOINT")
    spans = run_spans(record)
    if file is not None:
        write_otlp_json(spans, file)
    if url is not None:
        send_otlp_http(spans, url)
    return len(spans)


def traces_url(endpoint: str | None) -> str | None:
    """Where spans are POSTed: ``endpoint``, a collector's base URL as ``OTEL_EXPORTER_OTLP_ENDPOINT``
    is (``/v1/traces`` added unless there); else ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as it is;
    else ``OTEL_EXPORTER_OTLP_ENDPOINT`` plus ``/v1/traces``; else None (no collector)."""
    if endpoint is None:
        if os.environ.get(TRACES_ENDPOINT_VAR):
            return os.environ[TRACES_ENDPOINT_VAR]
        endpoint = os.environ.get(ENDPOINT_VAR) or None
        if endpoint is None:
            return None
    if not endpoint.startswith(("http://", "https://")):
        raise UsageError(f"OTLP endpoint {endpoint!r} is not an http:// or https:// URL "
                         "(e.g. http://localhost:4318)")
    base = endpoint.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


# the record, as span specs (pure) -------------------------------------------------------------

def _field(event: dict[str, Any], key: str, n: int) -> Any:
    """An event's required field; InputError naming the event when it is missing."""
    if key not in event:
        raise InputError(f"run record event {n} (`{event.get('event')}`) has no `{key}`: "
                         "not a record an agent run wrote")
    return event[key]


def _receipt(receipt: Any, where: str) -> Receipt:
    try:
        return Receipt.model_validate(receipt)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{where}: its receipt is not a Veracity receipt ({str(exc).splitlines()[0]})") from None


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def chat_spec(event: dict[str, Any], n: int) -> SpanSpec:
    """A model call's span: ``chat {model}``, its tokens and its receipt (none for a call run in
    the agent's own process, ``agent run --local``: ``veracity.receipt.none``)."""
    model = _field(event, "model", n)
    raw = _field(event, "receipt", n)
    attributes: Attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": int(_field(event, "input_tokens", n)),
        "gen_ai.usage.output_tokens": int(_field(event, "output_tokens", n)),
        "veracity.purpose": str(_field(event, "purpose", n)),
        "veracity.output_sha256": _field(event, "output_sha256", n),
    }
    if raw == {}:
        attributes["veracity.receipt.none"] = "local"
    else:
        receipt = _receipt(raw, f"run record event {n} (chat, step {event.get('step')})")
        attributes.update({"veracity.receipt": compact_json(raw), "veracity.receipt.lease": receipt.lease,
                           "veracity.receipt.index": receipt.index})
    if "step" in event:
        attributes["veracity.step"] = int(event["step"])
    if "prompt_sha256" in event:
        attributes["veracity.prompt_sha256"] = event["prompt_sha256"]
    return SpanSpec(f"chat {model}", SpanKind.CLIENT, int(_field(event, "start", n)), int(_field(event, "end", n)),
                    attributes)


def tool_spec(event: dict[str, Any], n: int) -> SpanSpec:
    """A tool call's span: ``execute_tool {name}``, in error when the tool failed, with the
    receipts of the model calls the tool made."""
    name = _field(event, "name", n)
    receipts = event.get("receipts") or []
    for r in receipts:
        _receipt(r, f"run record event {n} (tool `{name}`, step {event.get('step')})")
    error = event.get("error")
    attributes: Attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "veracity.tool.input_sha256": _field(event, "input_sha256", n),
        "veracity.tool.output_sha256": _field(event, "output_sha256", n),
        "veracity.receipts": compact_json(receipts),
    }
    if "step" in event:
        attributes["veracity.step"] = int(event["step"])
    if error:
        attributes["error.type"] = OTHER_ERROR
    return SpanSpec(f"execute_tool {name}", SpanKind.INTERNAL, int(_field(event, "start", n)),
                    int(_field(event, "end", n)), attributes, str(error) if error else None)


def agent_spec(record: RunRecord) -> SpanSpec:
    """The run's root span: ``invoke_agent {agent}``, the run's totals and how it ended. A run with
    no ``end`` event (it crashed) ends at its last event, in error, its tokens summed from its
    model calls."""
    runs = record.of("run")
    if not runs:
        raise InputError("the record has no `run` event: not an agent run's record")
    n = record.events.index(runs[0])
    run = runs[0]
    agent = _field(run, "agent", n)
    start = int(_field(run, "start", n))
    attributes: Attributes = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.agent.name": agent,
        "gen_ai.request.model": _field(run, "model", n),
        "veracity.run_id": str(_field(run, "run_id", n)),
    }
    if run.get("spec_sha256"):
        attributes["veracity.spec_sha256"] = run["spec_sha256"]
    ends = record.of("end")
    if ends:
        end = ends[-1]
        m = record.events.index(end)
        attributes.update({
            "gen_ai.usage.input_tokens": int(_field(end, "input_tokens", m)),
            "gen_ai.usage.output_tokens": int(_field(end, "output_tokens", m)),
            "veracity.answer_sha256": sha256_text(_field(end, "answer", m)),
            "veracity.stop_reason": _field(end, "reason", m),
            "veracity.steps": int(end.get("steps", len(record.of("tool")))),
        })
        return SpanSpec(f"invoke_agent {agent}", SpanKind.INTERNAL, start, int(_field(end, "end", m)), attributes)
    chats = record.of("chat")
    attributes["gen_ai.usage.input_tokens"] = sum(int(c.get("input_tokens", 0)) for c in chats)
    attributes["gen_ai.usage.output_tokens"] = sum(int(c.get("output_tokens", 0)) for c in chats)
    attributes["error.type"] = OTHER_ERROR
    last = max([start, *(int(e["end"]) for e in record.events if isinstance(e.get("end"), int))])
    return SpanSpec(f"invoke_agent {agent}", SpanKind.INTERNAL, start, last, attributes,
                    "the run did not finish: its record has no `end` event")


def child_specs(record: RunRecord) -> list[SpanSpec]:
    """The root's children, in the record's order: one per model call and one per tool call."""
    out = []
    for n, event in enumerate(record.events):
        if event["event"] == "chat":
            out.append(chat_spec(event, n))
        elif event["event"] == "tool":
            out.append(tool_spec(event, n))
    return out


# spans, by the SDK ----------------------------------------------------------------------------

def _id(run_id: str, what: str, size: int) -> int:
    """An id of ``size`` bytes from SHA-256 of the run id and what it names (never the invalid 0)."""
    return int.from_bytes(hashlib.sha256(f"{run_id}\x00{what}".encode()).digest()[:size], "big") or 1


class RunIds(IdGenerator):
    """The run's ids: its trace id from its run id, its span ids from the run id and each span's
    place, so the same record always gives the same trace."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.spans = 0

    def generate_trace_id(self) -> int:
        return _id(self.run_id, "trace", 16)

    def generate_span_id(self) -> int:
        self.spans += 1
        return _id(self.run_id, f"span {self.spans}", 8)


def run_trace_id(run_id: str) -> str:
    """The trace id (hex) a run's spans carry."""
    return f"{RunIds(run_id).generate_trace_id():032x}"


def _emit(tracer: trace.Tracer, spec: SpanSpec, parent: trace.Span | None = None) -> trace.Span:
    context = trace.set_span_in_context(parent) if parent is not None else None
    span = tracer.start_span(spec.name, context=context, kind=spec.kind, attributes=spec.attributes,
                             start_time=spec.start)
    if spec.error is not None:
        span.set_status(Status(StatusCode.ERROR, spec.error))
    return span


def run_spans(record: RunRecord) -> list[ReadableSpan]:
    """The run's spans (the root first, then its children in the record's order), made by the
    OpenTelemetry SDK with the record's times and the run's ids; resource ``service.name`` =
    ``veracity-agent``."""
    root_spec = agent_spec(record)
    children = child_specs(record)
    provider = TracerProvider(sampler=ALWAYS_ON, resource=Resource.create({SERVICE_NAME: SERVICE}),
                              shutdown_on_exit=False, id_generator=RunIds(str(root_spec.attributes["veracity.run_id"])))
    collected = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(collected))
    tracer = provider.get_tracer(SCOPE, _version())
    root = _emit(tracer, root_spec)
    for spec in children:
        _emit(tracer, spec, root).end(end_time=spec.end)
    root.end(end_time=root_spec.end)
    provider.shutdown()
    spans = list(collected.get_finished_spans())
    if len(spans) != 1 + len(children):
        raise UsageError("the OpenTelemetry SDK made no spans: is OTEL_SDK_DISABLED set? Unset it to export")
    return [spans[-1], *spans[:-1]]


# OTLP: JSON to a file, protobuf over HTTP -----------------------------------------------------

ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(node: Any) -> Any:
    """Protobuf's JSON mapping writes bytes as base64; OTLP/JSON wants trace and span ids as hex."""
    if isinstance(node, dict):
        return {k: base64.b64decode(v).hex() if k in ID_KEYS and isinstance(v, str) else _hex_ids(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


def otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """The spans as an OTLP/JSON ``ExportTraceServiceRequest``: camelCase keys, integer enums,
    hex ids (64-bit integers as decimal strings, as the protobuf JSON mapping writes them)."""
    doc = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    return _hex_ids(doc)


def write_otlp_json(spans: Sequence[ReadableSpan], file: Path) -> None:
    """Write the spans to ``file`` as one OTLP/JSON request on one line (the OTLP file format:
    JSON lines), replacing what was there."""
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(compact_json(otlp_json(spans)) + "\n", encoding="utf-8")


@contextmanager
def _exporter_log() -> Iterator[list[str]]:
    """What the OTLP exporter logs meanwhile (why an export failed), kept for the error message."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger, handler = logging.getLogger(EXPORTER_LOGGER), Keep(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def _why(log: list[str]) -> str:
    """The exporter's reason for a failed export: the first transient error it retried (a refused
    connection), then its last word."""
    causes = [m.removeprefix("Transient error ").split(" encountered while")[0]
              for m in log if m.startswith("Transient error ")]
    return "; ".join([*causes[:1], log[-1]]) if log else "no reason given"


def send_otlp_http(spans: Sequence[ReadableSpan], url: str) -> None:
    """POST the spans to the collector's traces URL as one OTLP/HTTP protobuf request (headers,
    timeout and compression from the OTEL_EXPORTER_OTLP_* variables, as the exporter reads them:
    it retries a refused connection or a 429/5xx until OTEL_EXPORTER_OTLP_TIMEOUT, 10 s by default);
    VeracityError when the collector does not take them."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=url)
    try:
        with _exporter_log() as log:
            result = exporter.export(spans)
    finally:
        exporter.shutdown()
    if result is not SpanExportResult.SUCCESS:
        raise VeracityError(f"the OTLP collector at {url} did not take the run's spans ({_why(log)}): "
                            "is a collector listening there, with OTLP/HTTP on?")


def _version() -> str:
    """The installed package's version (the instrumentation scope's)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("veracity")
    except PackageNotFoundError:
        return "0"
