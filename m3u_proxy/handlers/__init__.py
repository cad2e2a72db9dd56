"""HTTP handlers: parse a request, call the layers below, render JSON or stream bytes.

Handlers (and `app`/`middlewares`) are the only code that reads AppKeys. They may import
every layer below them; nothing below imports a handler.
"""
