"""Float weight import: a torch state dict, or a safetensors file, as float64 NumPy arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from veracity.errors import ModelError

StateDict = Mapping[str, np.ndarray]


def from_torch(state: Mapping[str, object]) -> dict[str, np.ndarray]:
    """Convert a torch state dict (tensors) into float64 arrays keyed the same way."""
    out = {}
    for key, value in state.items():
        arr = value.detach().cpu().double().numpy() if hasattr(value, "detach") else np.asarray(value)
        out[key] = np.asarray(arr, dtype=np.float64)
    return out


def load_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Read a safetensors file into float64 arrays."""
    from safetensors.numpy import load_file

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file {p} not found: pass a .safetensors file that exists")
    try:
        raw = load_file(str(p))
    except Exception as exc:  # safetensors raises several unrelated types
        raise ModelError(f"{p} is not a readable safetensors file ({exc})") from None
    return {k: np.asarray(v, dtype=np.float64) for k, v in raw.items()}


def save_safetensors(state: Mapping[str, object], path: str | Path) -> None:
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in from_torch(state).items()}
    save_file(arrays, str(path))


def need(state: StateDict, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Fetch one weight, with a clear error when it is missing or misshapen."""
    if key not in state:
        raise ModelError(f"weight {key!r} missing from the state dict: is it the right model?")
    arr = state[key]
    if shape is not None and tuple(arr.shape) != shape:
        raise ModelError(f"weight {key!r} has shape {tuple(arr.shape)}, expected {shape}")
    return arr
