"""Job kinds behind one ``Workload`` protocol, registered by (kind, model): (spec, inputs) ->
(outputs, commitments, trace); job specs; the planner."""
