"""Agents: on-chain identities, reputation and validation (after ERC-8004) and the agent runtime."""
