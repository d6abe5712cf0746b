"""Fairvisor engine: all policy logic and all limiter state, served to the nginx shim."""

__version__ = "0.1.0"
