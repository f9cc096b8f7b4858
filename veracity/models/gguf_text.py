"""Text in and out of a GGUF model: its tokenizer, built with ``tokenizers`` from the file's own
tokens and merges, and its chat template, the file's own Jinja template rendered in a sandbox.

Byte-level BPE (``tokenizer.ggml.model`` "gpt2", SmolLM2's): the tokens are spelled in GPT-2's
byte alphabet, the pre-tokenizer is GPT-2's split and byte mapping, and the tokens the file marks
as control (type 3, such as ``<|im_start|>``) are special: matched whole in text, never merged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from veracity.errors import InputError, ModelError
from veracity.models.gguf import GGUFFile

CONTROL = 3  # llama.cpp's token type for control tokens


@dataclass
class GGUFTokenizer:
    tokenizer: Any  # tokenizers.Tokenizer
    tokens: list[str]
    specials: dict[str, int]  # control tokens by text
    bos: int | None
    eos: int

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> "GGUFTokenizer":
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        kind = f.need("tokenizer.ggml.model")
        if kind != "gpt2":
            raise ModelError(f"{f.path.name} has a {kind!r} tokenizer; Veracity builds byte-level BPE ('gpt2') ones")
        tokens: list[str] = f.need("tokenizer.ggml.tokens")
        merges = [tuple(m.split(" ", 1)) for m in f.need("tokenizer.ggml.merges")]
        types = f.meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
        bpe = models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False)
        tok = Tokenizer(bpe)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        specials = {t: i for i, (t, kind_) in enumerate(zip(tokens, types)) if kind_ == CONTROL}
        tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
        bos = f.meta.get("tokenizer.ggml.bos_token_id")
        return cls(tok, tokens, specials, bos if f.meta.get("tokenizer.ggml.add_bos_token") else None,
                   int(f.need("tokenizer.ggml.eos_token_id")))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; control tokens written in it (``<|im_start|>``) are matched whole."""
        ids = list(self.tokenizer.encode(text, add_special_tokens=False).ids)
        return ([self.bos] if self.bos is not None else []) + ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=skip_special))

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class ChatTemplate:
    """The file's chat template (Jinja), rendered in a sandbox: messages in, the prompt text out."""

    source: str
    bos_token: str
    eos_token: str

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> "ChatTemplate":
        tokens = f.need("tokenizer.ggml.tokens")
        bos = f.meta.get("tokenizer.ggml.bos_token_id")
        return cls(f.need("tokenizer.chat_template"), tokens[bos] if bos is not None else "",
                   tokens[f.need("tokenizer.ggml.eos_token_id")])

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The prompt for ``messages`` (each ``{"role": ..., "content": str}``), ending where the
        assistant's answer starts."""
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        for n, m in enumerate(messages):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise InputError(f'message {n}: give {{"role": "system" | "user" | "assistant", "content": text}}')
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message: str) -> None:
            raise InputError(f"the chat template refuses these messages: {message}")

        env.globals["raise_exception"] = raise_exception
        try:
            return env.from_string(self.source).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                                       bos_token=self.bos_token, eos_token=self.eos_token)
        except TemplateError as exc:
            raise ModelError(f"the file's chat template cannot be rendered: {exc}") from None
