"""The protocol's client side: submitting jobs (``jobs``), checking served outputs (``outputs``),
and playing dispute games (``player``, ``disputer``), which providers and validators reuse."""
