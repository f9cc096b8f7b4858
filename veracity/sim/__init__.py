"""Simulated adversaries for tests and the demo: providers that cheat in the ways the protocol
must defeat."""
