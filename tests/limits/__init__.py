"""Tests of `m3u_proxy.providers` and of the limits in playback (named apart:
``tests/providers.py`` is the fake provider); `support` holds their shared helpers."""
