"""Shared channels: one provider connection feeding every viewer of a live stream.

A producer (any coroutine: the pump reading the provider through the failover chain,
or a transcoder's output) publishes whole TS packets into a bounded ring; each viewer
is a cursor into it, reading at its own pace (`channel`). `hub.Channels` opens and
closes channels as viewers come and go.

May import `streams`, `mpegts`, `logs` and below; never `playback` or a handler (the
pump plugs in from above as a producer).
"""
