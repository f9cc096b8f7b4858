"""The data layer: data pools and proof of contribution, labelling with consensus, synthetic data."""
