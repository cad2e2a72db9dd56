"""HLS: sans-io playlist rewriting, shared downloads, and both sides of a fetch.

`rewrite` is pure string work; `cache` and `download` are the single-flight tables
(whole playlists; segments readable while they download); `fetch` makes the provider
requests of one stream (through `m3u_proxy.upstream`) and `serve` writes answers to a
player. May import `streams`, `upstream`, `config` and below; never `playback` (a
sibling) or a handler.
"""
