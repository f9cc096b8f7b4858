"""The model registry: names a job or a CLI user can ask for, each with its loader."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

from veracity.errors import UsageError


def _mlp() -> Any:
    from veracity.models import mlp

    return mlp.load()


def _minilm() -> Any:
    from veracity.models.encoder import ExactEncoder

    return ExactEncoder.load()


def _gpt() -> Any:
    from veracity.models.gpt import ExactGPT

    return ExactGPT.load()


def _smollm2() -> Any:
    from veracity.models.gguf import smollm2_path
    from veracity.models.llama import ExactLlama

    return ExactLlama.from_gguf(smollm2_path())


MODELS: dict[str, tuple[Callable[[], Any], str]] = {
    "digits-mlp": (_mlp, 'classify an 8x8 digit; input {"pixels": [64 ints 0..16]}'),
    "minilm": (_minilm, 'sentence embedding (all-MiniLM-L6-v2, 384 dims); input {"text": ...}'),
    "tiny-gpt": (_gpt, 'greedy text generation (char-level); input {"text": ..., "max_tokens": n}'),
    "smollm2": (_smollm2, 'chat LLM (SmolLM2-135M-Instruct from its GGUF); input {"messages": [...]} or '
                          '{"prompt": ...}, "max_tokens": n (exactly n tokens are generated)'),
}


def names() -> list[str]:
    return list(MODELS)


def describe(name: str) -> str:
    return MODELS[name][1]


def load(name: str) -> Any:
    """Load an exact model by registry name."""
    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    return MODELS[name][0]()


@lru_cache(maxsize=None)
def loaded(name: str) -> Any:
    """``load(name)``, once per process: the daemons' models are read-only and shared."""
    return load(name)
