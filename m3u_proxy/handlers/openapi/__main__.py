"""``python -m m3u_proxy.handlers.openapi > openapi.json`` prints the document."""

from m3u_proxy.handlers.openapi import main

main()
