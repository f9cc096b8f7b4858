"""The gateway's model registry: a card per model (what it is for, which endpoints serve it), and
``model: "auto"``, which picks the model whose card best matches the request's text by cosine
similarity of exact MiniLM embeddings (the same bits on every machine, so the pick is too)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from veracity.errors import InputError

AUTO_WORDS = 96  # the words of a request ``auto`` reads (MiniLM takes 256 tokens)


@dataclass(frozen=True)
class ModelCard:
    id: str
    task: str  # embeddings, chat, completion or classification
    endpoints: tuple[str, ...]
    description: str
    auto: bool = True  # ``model: "auto"`` may pick it
    max_input_bytes: int = 16 << 10  # a request's input line, checked before anything parses or runs it
    def public(self) -> dict[str, Any]:
        return {"task": self.task, "endpoints": list(self.endpoints), "description": self.description}


CARDS = (
    ModelCard("minilm", "embeddings", ("embeddings",),
              "Sentence embeddings for semantic search, similarity, retrieval and clustering of English text: "
              "all-MiniLM-L6-v2, 384 dimensions, exact int8 arithmetic.", max_input_bytes=16 << 10),
    ModelCard("smollm2", "chat", ("completions", "chat.completions"),
              "A chat assistant that answers questions, follows instructions, explains, writes stories, poems "
              "and code, and continues text: SmolLM2-135M-Instruct, a Llama-architecture language model, exact "
              "integer arithmetic on its 4-bit GGUF weights.", max_input_bytes=64 << 10),
    ModelCard("tiny-gpt", "completion", ("completions", "chat.completions"),
              "Text generation for tests: a small character-level GPT trained on a shipped corpus (lowercase "
              "letters and punctuation) that continues a prompt. Ask for it by name.", auto=False,
              max_input_bytes=4 << 10),
    ModelCard("digits-mlp", "classification", (),
              "Image classification of handwritten digits zero to nine from an 8 by 8 grayscale picture: "
              "recognise which number is drawn.", max_input_bytes=4 << 10),
)
BY_ID = {c.id: c for c in CARDS}


@lru_cache(maxsize=1)
def _card_vectors() -> np.ndarray:
    return _embed([c.description for c in CARDS])


def _embed(texts: list[str]) -> np.ndarray:
    from veracity.models.registry import loaded
    from veracity.workloads.infer import infer

    model = loaded("minilm")
    out = infer(model, [_fitting(model, t) for t in texts], backend="torch", trace=False).outputs
    return np.stack([np.asarray(o, dtype=np.float64) for o in out])


def _fitting(model: Any, text: str) -> Any:
    """``text`` parsed for MiniLM, cut to its first words until it fits the model's input (a long
    request's topic is in its start)."""
    words = text.split()[:AUTO_WORDS]
    while True:
        try:
            return model.parse({"text": " ".join(words)})
        except InputError:
            if len(words) <= 1:
                raise
            words = words[:len(words) // 2]


def pick(text: str, endpoint: str) -> tuple[str, dict[str, float]]:
    """The model ``auto`` stands for: the card most similar to ``text`` (its first words; the
    endpoint's name when it has none) among those that serve ``endpoint``, and every card's
    similarity (so the caller sees why)."""
    v = _embed([text if text.split() else endpoint])[0]
    cards = _card_vectors()
    sims = cards @ v / (np.linalg.norm(cards, axis=1) * np.linalg.norm(v) + 1e-12)
    scores = {c.id: round(float(s), 4) for c, s in zip(CARDS, sims)}
    able = [c.id for c in CARDS if endpoint in c.endpoints and c.auto]
    return max(able, key=lambda m: scores[m]), scores
