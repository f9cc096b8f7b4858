"""Job kinds as pure functions: (spec, inputs) -> (outputs, trace)."""
