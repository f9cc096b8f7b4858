"""The daemons: provider and validator, their worker pool and SQLite state, a provider's dispute
defence, settlement, Oracle desk and lease sessions, and the devnet launcher."""
