"""Verification: one-step recomputation of a disputed element, tensor commitments, the dispute
game's rules, and the spot-check rate. Pure: integers and hashes in, verdicts out; no I/O."""
