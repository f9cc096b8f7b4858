"""Rows as the contracts read them: big-endian two's complement, a fixed width per element.

One encoding for everything a referee reads (activation rows, weights, masks, table entries), so
a row hashed off-chain and a row read by a contract are the same bytes. ``padded`` appends the 32
zero bytes that let a contract read any element with one ``extract32``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WIDTHS = {1: ">i1", 2: ">i2", 4: ">i4", 8: ">i8"}
UNSIGNED = {1: ">u1", 2: ">u2", 4: ">u4", 8: ">u8"}


def pack(values: Sequence[int] | np.ndarray, width: int, signed: bool = True) -> bytes:
    """The row's bytes; refuses values that do not fit ``width`` bytes."""
    dt = np.dtype((WIDTHS if signed else UNSIGNED)[width])
    a = np.asarray(values, dtype=np.int64)
    info = np.iinfo(dt)
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise ValueError(f"values outside the {width}-byte {'signed' if signed else 'unsigned'} range")
    return a.astype(dt).tobytes()


def padded(values: Sequence[int] | np.ndarray, width: int, signed: bool = True) -> bytes:
    return pack(values, width, signed) + bytes(32)
