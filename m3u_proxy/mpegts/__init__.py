"""MPEG-TS as data (sans-io): packet alignment (`align`), PAT/PMT (`psi`), keyframes and
random access points (`rap`) and the overlap search on reconnect (`overlap`). Bytes in,
offsets and verdicts out; nothing here alters a byte, opens a socket or needs a loop.

Imports nothing else of the package.
"""
