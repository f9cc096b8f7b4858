"""A content-addressed blob store on disk.

Blobs are files named by their CID. ``put`` writes atomically; ``get`` re-checks the digest, so
a corrupted disk is caught, not served as truth.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from veracity.cid import cid_of, digest_of
from veracity.errors import VeracityError

DEFAULT_MAX_BYTES = 64 << 20


class BlobError(VeracityError):
    """A blob is missing, too large, or its bytes do not match its CID."""


class BlobNotFound(BlobError):
    """This store (or this peer) does not hold the blob."""


class BlobStore:
    def __init__(self, root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes

    def _path(self, cid: str) -> Path:
        digest_of(cid)  # validates the CID before it touches the file system
        return self.root / cid

    def put(self, data: bytes) -> str:
        if len(data) > self.max_bytes:
            raise BlobError(f"blob of {len(data)} bytes exceeds this store's limit of {self.max_bytes}")
        cid = cid_of(data)
        path = self._path(cid)
        if not path.exists() or not self._intact(path, cid):  # a damaged copy heals when the bytes come again
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return cid

    @staticmethod
    def _intact(path: Path, cid: str) -> bool:
        try:
            return hashlib.sha256(path.read_bytes()).digest() == digest_of(cid)
        except OSError:
            return False

    def has(self, cid: str) -> bool:
        return self._path(cid).is_file()

    def get(self, cid: str) -> bytes:
        path = self._path(cid)
        if not path.is_file():
            raise BlobNotFound(f"blob {cid} is not in this store")
        data = path.read_bytes()
        if hashlib.sha256(data).digest() != digest_of(cid):
            raise BlobError(f"blob {cid} is corrupted on disk (its bytes no longer match the CID)")
        return data


