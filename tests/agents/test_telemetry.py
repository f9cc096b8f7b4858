"""An agent run's record exported as OpenTelemetry spans: to an OTLP/JSON file read back as a
collector would, and to a real OTLP/HTTP endpoint (a tiny collector on 127.0.0.1)."""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from veracity.agents.record import RunRecord, sha256_text
from veracity.agents.telemetry import export_run, run_trace_id
from veracity.errors import InputError, UsageError, VeracityError
from veracity.market.receipts import line_hash, sign_receipt

KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # a devnet account's
MARKET = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
T0 = 1_767_225_600_000_000_000  # 2026-01-01, Unix nanoseconds
MS = 1_000_000
HEX32, HEX16 = re.compile(r"^[0-9a-f]{32}$"), re.compile(r"^[0-9a-f]{16}$")
KIND_INTERNAL, KIND_CLIENT, STATUS_ERROR = 1, 3, 2  # OTLP's enum values


@pytest.fixture(autouse=True)
def plain_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No collector, compression or SDK switch from the environment unless a test sets one."""
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_COMPRESSION",
                "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


def receipt(lease: int, index: int, item: str, output: str) -> dict[str, Any]:
    """A gateway receipt as the record keeps it (``Receipt.model_dump()``), signed for real."""
    return sign_receipt(KEY, 31337, MARKET, lease, index, line_hash(item), line_hash(output)).model_dump()


def chat(record: RunRecord, step: int, purpose: str, at: int, prompt: str, output: str, tokens: tuple[int, int],
         index: int) -> None:
    record.add("chat", step=step, purpose=purpose, model="smollm2-135m", start=at, end=at + 40 * MS,
               prompt_sha256=sha256_text(prompt), output=output, output_sha256=sha256_text(output),
               input_tokens=tokens[0], output_tokens=tokens[1], receipt=receipt(7, index, prompt, output))


def sample_run(run_id: str = "5f1c2a9e7b3d4c10", finished: bool = True) -> RunRecord:
    """A researcher that picks retrieval (which embeds with its own receipted call), then a
    calculator that fails, then answers."""
    r = RunRecord()
    r.add("run", run_id=run_id, agent="researcher", model="smollm2-135m", task="How tall is the Eiffel tower?",
          start=T0, spec_sha256=sha256_text("agent: researcher"))
    chat(r, 0, "tool", T0 + 1 * MS, "p0", "retrieve", (120, 3), 0)
    chat(r, 0, "input", T0 + 50 * MS, "p1", "Eiffel tower height", (126, 5), 1)
    r.add("tool", step=1, name="retrieve", start=T0 + 100 * MS, end=T0 + 130 * MS, input="Eiffel tower height",
          input_sha256=sha256_text("Eiffel tower height"), output="330 m", output_sha256=sha256_text("330 m"),
          error=None, receipts=[receipt(8, 0, "Eiffel tower height", "[0.1, 0.2]")])
    chat(r, 1, "tool", T0 + 140 * MS, "p2", "calculator", (150, 3), 2)
    r.add("tool", step=2, name="calculator", start=T0 + 190 * MS, end=T0 + 191 * MS, input="330 m in feet",
          input_sha256=sha256_text("330 m in feet"), output="not an expression: 330 m in feet",
          output_sha256=sha256_text("not an expression: 330 m in feet"), error="not an expression: 330 m in feet",
          receipts=[])
    if finished:
        chat(r, 2, "answer", T0 + 200 * MS, "p3", "About 330 metres.", (170, 6), 3)
        r.add("end", answer="About 330 metres.", reason="answered", end=T0 + 250 * MS, steps=2, input_tokens=566,
              output_tokens=17)
    return r


def attrs(span: dict[str, Any]) -> dict[str, Any]:
    """An OTLP/JSON span's attributes as a plain dict (intValue is a decimal string in OTLP/JSON)."""
    out = {}
    for kv in span.get("attributes", []):
        (kind, value), = kv["value"].items()
        out[kv["key"]] = int(value) if kind == "intValue" else value
    return out


def spans_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]


def test_a_run_exports_to_an_otlp_json_file_as_one_tree_with_the_conventions_attributes(tmp_path: Path) -> None:
    record = sample_run()
    out = tmp_path / "run.otlp.json"
    assert export_run(record, file=out) == 7

    lines = out.read_text().splitlines()
    assert len(lines) == 1  # the OTLP file format: one request a line
    doc = json.loads(lines[0])
    resource = {kv["key"]: kv["value"]["stringValue"] for kv in doc["resourceSpans"][0]["resource"]["attributes"]}
    assert resource["service.name"] == "veracity-agent"
    spans = spans_of(doc)
    assert [s["name"] for s in spans] == ["invoke_agent researcher", "chat smollm2-135m", "chat smollm2-135m",
                                          "execute_tool retrieve", "chat smollm2-135m", "execute_tool calculator",
                                          "chat smollm2-135m"]
    root, children = spans[0], spans[1:]
    assert "parentSpanId" not in root
    assert all(HEX32.match(s["traceId"]) and HEX16.match(s["spanId"]) for s in spans)
    assert {s["traceId"] for s in spans} == {run_trace_id("5f1c2a9e7b3d4c10")}
    assert all(c["parentSpanId"] == root["spanId"] for c in children)
    assert len({s["spanId"] for s in spans}) == len(spans)

    assert root["kind"] == KIND_INTERNAL
    assert (int(root["startTimeUnixNano"]), int(root["endTimeUnixNano"])) == (T0, T0 + 250 * MS)
    assert attrs(root) == {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "veracity",
        "gen_ai.agent.name": "researcher", "gen_ai.request.model": "smollm2-135m",
        "gen_ai.usage.input_tokens": 566, "gen_ai.usage.output_tokens": 17,
        "veracity.run_id": "5f1c2a9e7b3d4c10", "veracity.answer_sha256": sha256_text("About 330 metres."),
        "veracity.stop_reason": "answered", "veracity.steps": 2,
        "veracity.spec_sha256": sha256_text("agent: researcher"),
    }
    assert root["status"] == {}

    first = children[0]
    assert first["kind"] == KIND_CLIENT
    assert (int(first["startTimeUnixNano"]), int(first["endTimeUnixNano"])) == (T0 + 1 * MS, T0 + 41 * MS)
    chat_attrs = attrs(first)
    assert json.loads(chat_attrs.pop("veracity.receipt")) == record.events[1]["receipt"]
    assert chat_attrs == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "veracity", "gen_ai.request.model": "smollm2-135m",
        "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 3,
        "veracity.receipt.lease": 7, "veracity.receipt.index": 0, "veracity.purpose": "tool",
        "veracity.output_sha256": sha256_text("retrieve"), "veracity.prompt_sha256": sha256_text("p0"),
        "veracity.step": 0,
    }
    assert [attrs(c)["veracity.receipt.index"] for c in children if c["name"].startswith("chat")] == [0, 1, 2, 3]
    assert attrs(first)["veracity.receipt"] == json.dumps(record.events[1]["receipt"], separators=(",", ":"))

    retrieve = children[2]
    assert retrieve["kind"] == KIND_INTERNAL and retrieve["status"] == {}
    tool_attrs = attrs(retrieve)
    assert json.loads(tool_attrs.pop("veracity.receipts")) == record.events[3]["receipts"]
    assert tool_attrs == {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "retrieve",
        "veracity.tool.input_sha256": sha256_text("Eiffel tower height"),
        "veracity.tool.output_sha256": sha256_text("330 m"), "veracity.step": 1,
    }

    calculator = children[4]
    assert calculator["status"] == {"code": STATUS_ERROR, "message": "not an expression: 330 m in feet"}
    assert attrs(calculator)["error.type"] == "_OTHER"
    assert json.loads(attrs(calculator)["veracity.receipts"]) == []


def test_the_same_record_gives_the_same_trace_and_another_run_another(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    export_run(sample_run(), file=a)
    export_run(sample_run(), file=b)
    export_run(sample_run(run_id="0d9e8f7a6b5c4d3e"), file=c)
    ids = [[(s["traceId"], s["spanId"]) for s in spans_of(json.loads(f.read_text()))] for f in (a, b, c)]
    assert ids[0] == ids[1]
    assert not set(ids[0]) & set(ids[2])


class Collector:
    """A tiny OTLP/HTTP collector on 127.0.0.1: keeps each POST, answers ``status``."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        self.status = 200
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                reply = ExportTraceServiceResponse().SerializeToString() if collector.status == 200 else b"bad spans"
                self.send_response(collector.status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def received(self) -> ExportTraceServiceRequest:
        assert len(self.posts) == 1
        path, headers, body = self.posts[0]
        assert path == "/v1/traces"
        assert headers["content-type"] == "application/x-protobuf"
        return ExportTraceServiceRequest.FromString(body)


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    thread = threading.Thread(target=c.server.serve_forever, daemon=True)
    thread.start()
    yield c
    c.server.shutdown()
    c.server.server_close()
    thread.join(5)


def test_a_run_exports_to_an_otlp_http_collector_the_same_spans_as_to_the_file(tmp_path: Path,
                                                                             collector: Collector) -> None:
    out = tmp_path / "run.otlp.json"
    assert export_run(sample_run(), file=out, endpoint=collector.url) == 7

    got = collector.received()
    spans = [s for rs in got.resource_spans for ss in rs.scope_spans for s in ss.spans]
    root = spans[0]
    assert [s.name for s in spans] == ["invoke_agent researcher", "chat smollm2-135m", "chat smollm2-135m",
                                       "execute_tool retrieve", "chat smollm2-135m", "execute_tool calculator",
                                       "chat smollm2-135m"]
    assert root.trace_id.hex() == run_trace_id("5f1c2a9e7b3d4c10") and not root.parent_span_id
    assert all(s.parent_span_id == root.span_id and s.trace_id == root.trace_id for s in spans[1:])
    receipt_of = {kv.key: kv.value for kv in spans[1].attributes}
    assert receipt_of["veracity.receipt.lease"].int_value == 7
    assert receipt_of["gen_ai.operation.name"].string_value == "chat"
    resource = {kv.key: kv.value.string_value for kv in got.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "veracity-agent"

    # what the collector got is what the file holds, byte for byte once both are OTLP/JSON
    as_json = MessageToDict(got, use_integers_for_enums=True)
    file_doc = json.loads(out.read_text())
    for sent, kept in zip(spans_of(as_json), spans_of(file_doc), strict=True):
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in kept:
                assert base64.b64decode(sent[key]).hex() == kept[key]  # base64 in protobuf's JSON, hex in OTLP's
        assert {k: v for k, v in sent.items() if k not in ("traceId", "spanId", "parentSpanId")} == \
            {k: v for k, v in kept.items() if k not in ("traceId", "spanId", "parentSpanId")}


def test_the_collector_comes_from_otel_exporter_otlp_endpoint_when_none_is_given(
        monkeypatch: pytest.MonkeyPatch, collector: Collector) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    assert export_run(sample_run()) == 7
    assert len([s for rs in collector.received().resource_spans for ss in rs.scope_spans for s in ss.spans]) == 7


def test_a_collector_that_refuses_the_spans_is_a_clear_error(collector: Collector) -> None:
    collector.status = 400
    with pytest.raises(VeracityError, match=rf"collector at {collector.url}/v1/traces did not take .*400"):
        export_run(sample_run(), endpoint=collector.url + "/v1/traces")


def test_nowhere_to_export_to_or_no_url_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nowhere to export"):
        export_run(sample_run())
    with pytest.raises(UsageError, match="not an http:// or https:// URL"):
        export_run(sample_run(), endpoint="localhost:4318")


def test_a_run_that_did_not_finish_exports_in_error_up_to_its_last_event(tmp_path: Path) -> None:
    out = tmp_path / "crashed.json"
    assert export_run(sample_run(finished=False), file=out) == 6
    root = spans_of(json.loads(out.read_text()))[0]
    assert int(root["endTimeUnixNano"]) == T0 + 191 * MS  # the calculator's end
    assert root["status"]["code"] == STATUS_ERROR and "no `end` event" in root["status"]["message"]
    a = attrs(root)
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (120 + 126 + 150, 3 + 5 + 3)
    assert "veracity.stop_reason" not in a and a["error.type"] == "_OTHER"


def test_a_record_with_a_malformed_receipt_is_refused_naming_the_event(tmp_path: Path) -> None:
    record = sample_run()
    del record.events[2]["receipt"]["signature"]
    with pytest.raises(InputError, match=r"event 2 \(chat, step 0\): its receipt is not a Veracity receipt"):
        export_run(record, file=tmp_path / "x.json")
    with pytest.raises(InputError, match="no `run` event"):
        export_run(RunRecord(), file=tmp_path / "x.json")
