"""The process around the server: systemd notification and graceful stop, event loop
choice, allocator tuning.

Used by `cli` and `app`.
"""
