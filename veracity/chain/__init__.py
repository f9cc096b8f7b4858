"""The chain layer: contract build and deploy, typed clients, event streams, the anvil devnet."""
