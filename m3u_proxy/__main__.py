"""``python -m m3u_proxy``."""

from m3u_proxy.cli import run

run()
