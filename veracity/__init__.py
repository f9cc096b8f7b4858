"""Veracity: verifiable AI compute on exact arithmetic."""

__version__ = "0.1.0"
