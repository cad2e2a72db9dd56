"""HLS as data: sans-io playlist rewriting and the shared single-flight fetch cache.

May import `streams` and below; never `playback` (a sibling) or a handler.
"""
