"""Structured logging: structlog set-up and redaction of provider credentials.

One canonical line per request is written by the access-log middleware; everything
else logs snake_case events with key=value data. Every line logged while a request is
handled carries its ``request_id`` (and ``stream_id``, ``client_id`` once known), bound
with structlog's contextvars (`bind_context`). Output is JSON when stdout is not a
TTY (journald, Docker) and a readable console format otherwise. Provider URLs carry
credentials (``user:pass@``, ``?password=``, Xtream ``/live/<user>/<pass>/``); every
string value that looks like a URL is redacted before it is rendered.
"""

import contextlib
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import structlog
from aiohttp.http_exceptions import HttpProcessingError

REDACTED = "***"
_SECRET_QUERY_KEYS = re.compile(
    r"pass|pwd|token|secret|key|auth|sig|session|username|user", re.IGNORECASE
)
# Xtream-Codes style paths put the account in the path: /live/<user>/<pass>/<id>.ts
_XTREAM_PATH = re.compile(r"^/(live|movie|series|timeshift|hls)/([^/]+)/([^/]+)/", re.IGNORECASE)
_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")


def redact_url(url: str) -> str:
    """Return ``url`` with passwords, token-like query values and Xtream credentials hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{hostport}" if ":" in userinfo else f"{REDACTED}@{hostport}"
    path = _XTREAM_PATH.sub(lambda m: f"/{m.group(1)}/{REDACTED}/{REDACTED}/", parts.path)
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(
            f"{quote(k, safe='')}={REDACTED if _SECRET_QUERY_KEYS.search(k) else quote(v, safe='')}"
            for k, v in pairs
        )
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def upstream_host(url: str) -> str:
    """The host (and port) of a provider URL without credentials, for stats."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else host


def redact_text(text: str) -> str:
    """Redact every URL found inside free text (exception messages, reasons)."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def _redact_processor(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if isinstance(value, str) and "://" in value:
            event_dict[key] = redact_text(value)
    return event_dict


class MalformedRequests(logging.Filter):
    """aiohttp logs a full traceback for every malformed request it answers 400.

    A hostile client could flood the log that way; the 400 is already sent, so keep one
    structured line per request instead of the traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            get_logger("m3u_proxy.access").info(
                "bad_request",
                status=exc.code,
                error=str(exc.message)[:200],
                where=record.getMessage(),
            )
            return False
        return True


def configure_logging(
    level: str, fmt: str = "auto", stream: TextIO | None = None, *, cache: bool = False
) -> None:
    """Set up structlog (and stdlib logging for aiohttp's own messages) once at start-up.

    ``cache`` binds each module's logger on first use (the server configures logging
    once, so the lazy lookup on every call is wasted work); tests that reconfigure
    logging leave it off.
    """
    out = stream or sys.stdout
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    numeric = logging.getLevelName(level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_processor,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=cache,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequests) for f in server_log.filters):
        server_log.addFilter(MalformedRequests())


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def bind_context(**values: Any) -> None:
    """Add ``values`` (``stream_id``, ``client_id``) to every later line of this task.

    Each request runs in its own asyncio task with its own context, so what a handler
    binds stays with that request (and tasks it starts) and ends with it.
    """
    structlog.contextvars.bind_contextvars(**values)


def bound_context(**values: Any) -> contextlib.AbstractContextManager[None]:
    """`bind_context` for a ``with`` block; the values are removed when it ends."""
    return structlog.contextvars.bound_contextvars(**values)
