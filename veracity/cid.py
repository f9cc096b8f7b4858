"""Content identifiers: CIDv1, raw codec, sha2-256 multihash, base32 ("bafkrei..."), as IPFS uses.

A blob's CID is a pure function of its bytes, so it can later be pinned to IPFS unchanged, and its
32-byte digest is what the contracts store (``Market.spec_cid``, ``output_cid``).
"""

from __future__ import annotations

import base64
import hashlib

from veracity.errors import InputError

_PREFIX = bytes([0x01, 0x55, 0x12, 0x20])  # CIDv1, raw codec, sha2-256, 32-byte digest


def cid_of(data: bytes) -> str:
    return cid_from_digest(hashlib.sha256(data).digest())


def cid_from_digest(digest: bytes) -> str:
    if len(digest) != 32:
        raise InputError("a sha2-256 digest has 32 bytes")
    return "b" + base64.b32encode(_PREFIX + digest).decode().lower().rstrip("=")


def digest_of(cid: str) -> bytes:
    """The sha2-256 digest inside ``cid``; a clear error for anything that is not such a CID."""
    if not isinstance(cid, str) or not cid.startswith("b") or len(cid) != 59:
        raise InputError(f"{cid!r} is not a CIDv1 (raw, sha2-256, base32 'bafkrei...')")
    body = cid[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError:
        raise InputError(f"{cid!r} is not valid base32") from None
    if raw[:4] != _PREFIX:
        raise InputError(f"{cid!r} is not a raw sha2-256 CIDv1")
    return raw[4:]
