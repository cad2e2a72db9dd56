"""Transcoding: ffmpeg profiles on demand, beside the plain proxy path.

`profiles` checks argument templates (sans-io); the supervisor is the one place that
starts, watches and stops ffmpeg processes.

May import `channels`, `playback`, `streams`, `upstream` and below; never a handler.
"""
