"""Shared channels: one provider connection feeding every viewer of a live stream.

A producer reads the provider (through the failover chain) into a bounded ring of
whole TS packets; each viewer is a cursor into it, reading at its own pace.

May import `playback`, `streams`, `mpegts`, `upstream` and below; never a handler.
"""
