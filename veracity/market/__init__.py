"""The market layer: orders, EIP-712 bids, matching and pricing policy, lease lifecycle."""
