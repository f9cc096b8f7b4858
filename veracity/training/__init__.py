"""Exact trainers, one module per model: the digits MLP (``mlp``), the MiniLM LoRA fine-tune
(``lora``) and the tiny GPT (``gpt``), over ``exact.integer``'s primitives."""
