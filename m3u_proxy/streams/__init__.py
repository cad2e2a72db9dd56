"""Streams: definitions and their registry, runtime state and client tracking, the
failover chain.

May import `events`, `upstream`, `store` and the foundation modules; nothing above.
"""
