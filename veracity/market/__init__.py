"""The market layer: EIP-712 bids, a provider's pricing policy, a client's choice among bids, and
the signed requests and receipts of standing leases."""
