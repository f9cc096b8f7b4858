"""The middleware layer: an OpenAI-compatible gateway over standing leases, model cards and
``auto`` routing, receipts checked against the chain."""
