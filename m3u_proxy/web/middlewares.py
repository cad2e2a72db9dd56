"""Middlewares: the canonical request log line, error mapping and management auth.

Order (outermost first): ``request_timer`` notes the arrival for the request-duration
histogram (observed by `observe_prepared` when the headers go out), ``access_log``
gives the request its id and sees the final status of everything, ``errors`` turns
domain errors and aiohttp's HTTP exceptions into ``{"detail": ...}``, ``auth`` guards
management routes with the API token.

The request id is bound to every log line of the request (structlog contextvars) and
sent back as ``X-Request-ID``; an incoming ``X-Request-ID`` is kept when a trusted
proxy sent it and it looks like an id, so a line here matches the proxy's own log.
"""

import asyncio
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from m3u_proxy import urls
from m3u_proxy.errors import ApiError, Forbidden, Unauthorized
from m3u_proxy.keys import CONFIG, METRICS
from m3u_proxy.logs import bound_context, get_logger
from m3u_proxy.web.requests import LOG_FIELDS, client_ip, trusted_peer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = get_logger("m3u_proxy.access")
errlog = get_logger("m3u_proxy.errors")

# Routes reachable without the management token (API.md "Auth").
_OPEN_PATHS = frozenset({"/health", "/openapi.json", "/", "/ui"})  # the page holds no data
_STARTED = web.RequestKey("metrics_request_started", float)
REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID = web.RequestKey("request_id", str)
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_for(request: web.Request) -> str:
    """A trusted proxy's sane ``X-Request-ID``, else a new random id."""
    given = request.headers.get(REQUEST_ID_HEADER)
    if given is not None and _SANE_ID.fullmatch(given) and trusted_peer(request):
        return given
    return secrets.token_hex(8)


async def send_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer (streams, errors, redirects) names its id."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id


def json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"detail": detail}, status=status, headers=headers)


def route_path(request: web.Request) -> str:
    """The request path without the configured root_path prefix."""
    root = request.app[CONFIG].server.root_path
    path = request.path
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root) :] or "/"
    return path


def is_management(request: web.Request) -> bool:
    path = route_path(request)
    return path not in _OPEN_PATHS and not path.startswith(urls.PLAYER_PREFIXES)


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request[REQUEST_ID] = request_id_for(request)
    with bound_context(request_id=request_id):
        return await _logged(request, handler)


async def _logged(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The canonical line: one per request, with what was really sent and how it ended.

    A player that leaves cancels its streaming handler; the handler's own record
    (`note_for_log`: status sent, bytes, ``outcome``) then says what happened, instead
    of "499, 0 bytes" after megabytes were served (issue #11).
    """
    started = time.perf_counter()
    status = 500
    sent = 0
    outcome = "error"
    try:
        response = await handler(request)
        status = response.status
        body = response.body if isinstance(response, web.Response) else None
        sent = len(body) if isinstance(body, bytes) else response.body_length
        outcome = "ok" if status < 400 else "error"
        return response
    except web.HTTPException as exc:
        status = exc.status
        outcome = "ok" if status < 400 else "error"
        raise
    except asyncio.CancelledError:
        status = 499  # the client left before any status was sent (nginx's code)
        outcome = "client_left"
        raise
    finally:
        fields = {"status": status, "bytes": sent, "outcome": outcome}
        fields.update(request.get(LOG_FIELDS, {}))
        log.info(
            "request",
            method=request.method,
            path=request.path,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            client_ip=client_ip(request),
            **fields,
        )


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_error(exc.status, exc.detail, exc.headers or None)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        keep = {
            k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After", "Content-Range")
        }
        return json_error(exc.status, exc.reason or "request failed", keep)
    except Exception:  # noqa: BLE001 - the last line of defence: log it, never leak it
        errlog.exception("unhandled_error", method=request.method, path=request.path)
        return json_error(500, "internal server error")


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 section 2.1)."""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[CONFIG].auth.api_token
    if token and is_management(request):
        given = (
            request.headers.get("X-API-Token")
            or bearer_token(request.headers.get("Authorization", ""))
            or request.query.get("api_token")
        )
        if not given:
            raise Unauthorized(
                "this route needs an API token (X-API-Token or Authorization: Bearer header)"
            )
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise Forbidden("the API token is not valid")
    return await handler(request)


def route_kind(request: web.Request) -> str:
    """A bounded label for the request's route: never the raw path."""
    if request.match_info.route.resource is None:
        return "other"  # no route matched (404, 405)
    path = route_path(request)
    if path.startswith(urls.STREAM_PREFIX):
        return "stream"
    if path.startswith(urls.HLS_PREFIX):
        return "hls"
    return "management" if is_management(request) else "other"


@web.middleware
async def request_timer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Note when the request arrived; `observe_prepared` observes at the headers."""
    request[_STARTED] = time.perf_counter()
    return await handler(request)


async def observe_prepared(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the headers are going out now."""
    started = request.get(_STARTED)
    metrics = request.app.get(METRICS)
    if started is not None and metrics is not None:
        metrics.durations.labels(route_kind(request)).observe(time.perf_counter() - started)
