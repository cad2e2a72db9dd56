"""MPEG-TS as data (sans-io): packet alignment and, as they grow, PAT/PMT/keyframe
detection and overlap search. Bytes in, offsets out; no sockets, no loop.

Imports nothing else of the package.
"""
