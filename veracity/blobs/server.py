"""The blob store over HTTP (FastAPI): every node serves its blobs at /blobs/{cid}.

    python -m veracity.blobs.server --root DIR --port 8700

``withheld`` (tests and the demo: ``sim.adversary``) names blobs a node holds and answers
404 for, as a provider hiding data from validators would.
"""

from __future__ import annotations

import argparse
from typing import Callable

from fastapi import FastAPI, HTTPException, Request, Response

from veracity.blobs.store import DEFAULT_MAX_BYTES, BlobError, BlobNotFound, BlobStore
from veracity.errors import InputError


def create_app(store: BlobStore, withheld: Callable[[str], bool] | None = None,
               title: str = "Veracity blob store") -> FastAPI:
    app = FastAPI(title=title)

    @app.put("/blobs")
    async def put_blob(request: Request) -> dict[str, str]:
        declared = int(request.headers.get("content-length", "0") or 0)
        if declared > store.max_bytes:
            raise HTTPException(413, f"blob of {declared} bytes exceeds the limit of {store.max_bytes}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > store.max_bytes:
                raise HTTPException(413, f"blob exceeds the limit of {store.max_bytes} bytes")
        return {"cid": store.put(bytes(body))}

    @app.get("/blobs/{cid}")
    def get_blob(cid: str) -> Response:
        try:
            if withheld is not None and withheld(cid):
                raise BlobNotFound(f"blob {cid} is not in this store")
            return Response(store.get(cid), media_type="application/octet-stream")
        except InputError as exc:
            raise HTTPException(400, str(exc)) from None
        except BlobNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except BlobError as exc:  # corrupted on disk
            raise HTTPException(500, str(exc)) from None

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description="Serve a Veracity blob store over HTTP")
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, default=8700)
    ap.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    args = ap.parse_args()
    app = create_app(BlobStore(args.root, args.max_bytes))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
