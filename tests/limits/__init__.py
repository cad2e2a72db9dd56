"""Tests of `m3u_proxy.providers` (named apart: ``tests/providers.py`` is the fake provider)."""
