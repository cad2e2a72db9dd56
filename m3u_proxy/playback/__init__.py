"""Continuous and VOD playback: the per-viewer pump, splicing and range arithmetic.

May import `streams`, `mpegts`, `upstream` and below; never `hls` (a sibling) or a handler.
"""
