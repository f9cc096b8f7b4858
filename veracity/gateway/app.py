"""The OpenAI-compatible HTTP API (``veracity gateway run``): ``GET /v1/models``,
``POST /v1/embeddings`` (minilm), ``POST /v1/completions`` and ``POST /v1/chat/completions``
(smollm2, the chat LLM, and tiny-gpt; ``stream: true`` as server-sent events, one event per token;
``stop`` sequences; ``usage`` in the model's tokens), errors in OpenAI's shape.

Every answer runs on a provider under a standing lease (``gateway.leases``) and carries its
receipt: header ``x-veracity-receipt`` (the receipts as compact JSON) and a ``veracity`` field
(the model, the lease, the request index, the output hash, the receipt). ``GET
/v1/receipts/{lease}/{index}`` gives a receipt again with its window's commitment once it is on
chain, and ``veracity receipt verify`` checks one against the chain.

Generation is greedy (exact arithmetic gives one answer; ``temperature`` and ``top_p`` are
accepted and ignored, and the response says so in ``veracity.sampling``). A chat with smollm2 is the
whole conversation through the model file's chat template; the answer ends at its end-of-turn
token (or ``max_tokens``, 64 unless asked), then at the first ``stop`` sequence, if any. tiny-gpt
knows lowercase letters, spaces and ``.,:;'-``: a chat's prompt is its last user message, lowercased.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from veracity.gateway import cards
from veracity.gateway.leases import GatewayError, LeasePool
from veracity.market.receipts import Receipt
from veracity.workloads.infer import is_text

CREATED = 1764115200  # the models' "created" field (2025-11-26)


class TextRequest(BaseModel):
    """A request whose every string is text: a lone surrogate (``"\\ud800"``, valid JSON) is refused."""

    @model_validator(mode="after")
    def only_text(self) -> "TextRequest":
        if not is_text(self.model_dump()):
            raise ValueError("a string holds a lone surrogate (such as \\ud800), which is not text: send UTF-8 text")
        return self


class EmbeddingRequest(TextRequest):
    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[str]
    encoding_format: str = "float"


Stop = str | list[str] | None


class CompletionRequest(TextRequest):
    model_config = ConfigDict(extra="allow")
    model: str
    prompt: str
    max_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stop: Stop = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | None = None


class ChatRequest(TextRequest):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stop: Stop = None


SAMPLING = "greedy (exact): temperature and top_p are ignored"
DEFAULT_MAX_TOKENS = 64  # a chat model's answer when the request names no limit


@dataclass
class Generation:
    text: str
    reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int
    pieces: list[str]  # the text per generated token (what a stream sends)
    receipt: Receipt
    retried: bool

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


def token_pieces(tokenizer: Any, tokens: list[int]) -> list[str]:
    """The text each token adds (a token that ends inside a UTF-8 character adds nothing until the
    character is whole), so the pieces join to the decoded text."""
    pieces, shown = [], ""
    for i in range(len(tokens)):
        now = tokenizer.decode(tokens[:i + 1])
        if now.endswith("\ufffd") and i + 1 < len(tokens):
            pieces.append("")
            continue
        pieces.append(now[len(shown):] if now.startswith(shown) else now)
        shown = now
    return pieces


def cut_at_stop(text: str, stop: str | list[str] | None) -> tuple[str, bool]:
    """``text`` up to the first of the request's stop sequences (at most 4, as OpenAI allows)."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4 or any(not s for s in stops):
        raise GatewayError("`stop` must be up to 4 non-empty strings", 400)
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


def pieces_upto(pieces: list[str], n: int) -> list[str]:
    out, have = [], 0
    for p in pieces:
        if have >= n:
            break
        out.append(p[:n - have])
        have += len(out[-1])
    return out


def error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
          code: str | None = None) -> JSONResponse:
    """An error in OpenAI's shape."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


MAX_BATCH = 64  # embedding inputs per request


def check_input(model: str, item: dict[str, Any]) -> None:
    """Refuse, before anything runs, an input the model cannot take: longer than its card's byte
    limit (nothing parses it), or one its own parser refuses (too many tokens, an unknown word)."""
    from veracity.errors import InputError
    from veracity.models.registry import loaded

    size, limit = len(json.dumps(item).encode("utf-8")), cards.BY_ID[model].max_input_bytes
    if size > limit:
        raise GatewayError(f"the input is {size:,} bytes; {model} takes at most {limit:,}: shorten it", 400,
                           code="input_too_long")
    try:
        loaded(model).parse(item)
    except InputError as exc:
        raise GatewayError(str(exc), 400) from None


class Gateway:
    def __init__(self, pool: LeasePool) -> None:
        self.pool = pool
        self.receipts: dict[tuple[int, int], Receipt] = {}

    # helpers --------------------------------------------------------------------------------
    def _model(self, asked: str, endpoint: str, text: str) -> tuple[str, dict[str, Any]]:
        if asked == "auto":
            picked, scores = cards.pick(text, endpoint)
            return picked, {"auto": {"picked": picked, "similarity": scores}}
        card = cards.BY_ID.get(asked)
        if card is None:
            raise GatewayError(f"The model `{asked}` does not exist: use one of "
                               f"{', '.join(c.id for c in cards.CARDS)} or auto", 404, code="model_not_found")
        if endpoint not in card.endpoints:
            able = [c.id for c in cards.CARDS if endpoint in c.endpoints]
            raise GatewayError(f"model `{asked}` does not serve /v1/{endpoint.replace('.', '/')} "
                               f"(it is a {card.task} model): use {', '.join(able)} or auto", 400)
        return asked, {}

    def _run(self, model: str, item: dict[str, Any], checked: bool = False) -> tuple[Any, Receipt, bool]:
        if not checked:
            check_input(model, item)
        out = self.pool.call(model, item)
        receipt: Receipt = out["receipt"]
        self.receipts[(receipt.lease, receipt.index)] = receipt
        return out["output"], receipt, out["retried"]

    @staticmethod
    def _veracity(model: str, receipts: list[Receipt], extra: dict[str, Any], retried: bool) -> dict[str, Any]:
        first = receipts[0]
        return {"model": model, "lease": first.lease, "index": first.index, "output_hash": first.output_hash,
                "receipt": first.model_dump(), "receipts": [r.model_dump() for r in receipts[1:]],
                "retried": retried, **extra}

    @staticmethod
    def _headers(receipts: list[Receipt], model: str) -> dict[str, str]:
        body = [r.model_dump(exclude_none=True) for r in receipts]
        return {"x-veracity-receipt": json.dumps(body[0] if len(body) == 1 else body, separators=(",", ":")),
                "x-veracity-model": model}

    # endpoints ------------------------------------------------------------------------------
    def models(self) -> dict[str, Any]:
        data = [{"id": c.id, "object": "model", "created": CREATED, "owned_by": "veracity", "card": c.public()}
                for c in cards.CARDS]
        data.append({"id": "auto", "object": "model", "created": CREATED, "owned_by": "veracity",
                     "card": {"task": "any", "description": "the model whose card best matches the request"}})
        return {"object": "list", "data": data}

    def embeddings(self, req: EmbeddingRequest) -> JSONResponse:
        texts = [req.input] if isinstance(req.input, str) else req.input
        if not texts:
            raise GatewayError("`input` must be a string or a non-empty list of strings", 400)
        if len(texts) > MAX_BATCH:
            raise GatewayError(f"`input` holds {len(texts)} texts; at most {MAX_BATCH} per request", 400)
        if req.encoding_format not in ("float", "base64"):
            raise GatewayError("`encoding_format` must be float or base64", 400)
        model, extra = self._model(req.model, "embeddings", texts[0])
        data, receipts, retried, tokens = [], [], False, 0
        for text in texts:  # every input, before any runs
            check_input(model, {"text": text})
        for i, text in enumerate(texts):
            vec, receipt, again = self._run(model, {"text": text}, checked=True)
            receipts.append(receipt)
            retried |= again
            tokens += len(text.split())
            emb: Any = vec
            if req.encoding_format == "base64":  # float32 holds k / 2**15 exactly
                emb = base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        body = {"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "veracity": self._veracity(model, receipts, extra, retried)}
        return JSONResponse(body, headers=self._headers(receipts, model))

    def _generate(self, model: str, item: dict[str, Any], stop: str | list[str] | None) -> Generation:
        """Run one generation request: its text, finish reason, token counts and per-token pieces."""
        out, receipt, retried = self._run(model, item)
        if cards.BY_ID[model].task != "chat":  # tiny-gpt: one token per character, no stop token
            text = str(out)
            prompt = len(item["text"])
            return Generation(text, "length", prompt, len(text), list(text), receipt, retried)
        from veracity.models.registry import loaded

        m = loaded(model)
        kept, reason = m.answer([int(t) for t in out["tokens"]])
        pieces = token_pieces(m.tokenizer, kept)
        made = len(kept) + (reason == "stop")  # the stop token was generated too
        text, cut = cut_at_stop("".join(pieces), stop)
        if cut:
            pieces, reason = pieces_upto(pieces, len(text)), "stop"
        return Generation(text, reason, len(m.parse(item)[0]), made, pieces, receipt, retried)

    def completion(self, req: CompletionRequest) -> Any:
        model, extra = self._model(req.model, "completions", req.prompt)
        chat = cards.BY_ID[model].task == "chat"
        n = req.max_tokens or (DEFAULT_MAX_TOKENS if chat else 16)
        item = {"prompt": req.prompt, "max_tokens": n} if chat else {"text": req.prompt, "max_tokens": n}
        g = self._generate(model, item, req.stop)
        cid, v = f"cmpl-{uuid.uuid4().hex[:24]}", self._veracity(model, [g.receipt], extra, g.retried)
        v["sampling"] = SAMPLING
        base = {"id": cid, "object": "text_completion", "created": int(time.time()), "model": model}
        if req.stream:
            def chunks() -> Iterator[dict[str, Any]]:
                for piece in g.pieces:
                    yield {**base, "choices": [{"index": 0, "text": piece, "finish_reason": None, "logprobs": None}]}
                yield {**base, "choices": [{"index": 0, "text": "", "finish_reason": g.reason, "logprobs": None}],
                       "usage": g.usage(), "veracity": v}
            return self._stream(chunks(), [g.receipt], model)
        body = {**base, "choices": [{"index": 0, "text": g.text, "finish_reason": g.reason, "logprobs": None}],
                "usage": g.usage(), "veracity": v}
        return JSONResponse(body, headers=self._headers([g.receipt], model))

    def chat(self, req: ChatRequest) -> Any:
        users = [m.content for m in req.messages if m.role == "user" and m.content]
        if not users:
            raise GatewayError("`messages` needs a user message with text content", 400)
        model, extra = self._model(req.model, "chat.completions", users[-1])
        chat = cards.BY_ID[model].task == "chat"
        n = req.max_completion_tokens or req.max_tokens or (DEFAULT_MAX_TOKENS if chat else 16)
        if chat:  # the whole conversation, through the model's own chat template
            item = {"messages": [{"role": m.role, "content": m.content or ""} for m in req.messages], "max_tokens": n}
        else:  # tiny-gpt continues the last user message, lowercased
            item = {"text": users[-1].lower(), "max_tokens": n}
        g = self._generate(model, item, req.stop)
        cid, v = f"chatcmpl-{uuid.uuid4().hex[:24]}", self._veracity(model, [g.receipt], extra, g.retried)
        v["sampling"] = SAMPLING
        now = int(time.time())
        if req.stream:
            def chunks() -> Iterator[dict[str, Any]]:
                base = {"id": cid, "object": "chat.completion.chunk", "created": now, "model": model}
                yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                            "finish_reason": None}]}
                for piece in g.pieces:
                    yield {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": g.reason}], "usage": g.usage(),
                       "veracity": v}
            return self._stream(chunks(), [g.receipt], model)
        body = {"id": cid, "object": "chat.completion", "created": now, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                             "finish_reason": g.reason}],
                "usage": g.usage(), "veracity": v}
        return JSONResponse(body, headers=self._headers([g.receipt], model))

    def _stream(self, chunks: Iterator[dict[str, Any]], receipts: list[Receipt], model: str) -> StreamingResponse:
        def sse() -> Iterator[bytes]:
            for c in chunks:
                yield f"data: {json.dumps(c)}\n\n".encode()
            yield b"data: [DONE]\n\n"
        return StreamingResponse(sse(), media_type="text/event-stream", headers=self._headers(receipts, model))

    def receipt(self, lease: int, index: int) -> JSONResponse:
        from veracity.gateway.receipts import window_of

        r = self.receipts.get((lease, index))
        if r is None:
            raise GatewayError(f"this gateway issued no receipt for request {index} of lease {lease}", 404)
        with self.pool.chain_lock:
            order = self.pool.market.order(lease)
        return JSONResponse(r.model_copy(update={"window": window_of(order)}).model_dump())


def create_app(pool: LeasePool, close_every: float = 1.0) -> FastAPI:
    """The FastAPI app; a background thread posts windows that are full or old every ``close_every`` s."""
    gw = Gateway(pool)
    stop = threading.Event()

    def closer() -> None:
        while not stop.wait(close_every):
            try:
                pool.close_due()
            except Exception as exc:  # logged; the gateway keeps serving
                pool.log(f"closing windows: {exc}")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=closer, daemon=True, name="windows").start()
        yield
        stop.set()
        pool.close_all()

    app = FastAPI(title="Veracity gateway", version="1", lifespan=lifespan)

    @app.exception_handler(GatewayError)
    def _gateway_error(_req: Request, exc: GatewayError) -> JSONResponse:
        return error(exc.status, str(exc), exc.kind, code=exc.code)

    @app.exception_handler(RequestValidationError)
    def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error(400, f"invalid request: {where or 'body'}: {first.get('msg', 'malformed')}", param=where)

    @app.exception_handler(StarletteHTTPException)
    def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), "invalid_request_error" if exc.status_code < 500 else "api_error")

    app.get("/v1/models")(gw.models)
    app.post("/v1/embeddings")(gw.embeddings)
    app.post("/v1/completions")(gw.completion)
    app.post("/v1/chat/completions")(gw.chat)
    app.get("/v1/receipts/{lease}/{index}")(gw.receipt)
    app.state.gateway = gw
    return app
