"""aiohttp glue shared by the handlers: middlewares (request log line, errors, auth) and
request helpers (JSON bodies, client address, URL building).

May import `keys` and everything below; never a handler.
"""
