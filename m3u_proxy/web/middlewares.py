"""Middlewares: the canonical request log line, error mapping and management auth.

Order (outermost first): ``access_log`` sees the final status of everything,
``errors`` turns domain errors and aiohttp's HTTP exceptions into ``{"detail": ...}``,
``auth`` guards management routes with the API token.
"""

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from m3u_proxy.errors import ApiError, Forbidden, Unauthorized
from m3u_proxy.keys import CONFIG
from m3u_proxy.logs import get_logger
from m3u_proxy.web.requests import LOG_FIELDS, client_ip

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = get_logger("m3u_proxy.access")
errlog = get_logger("m3u_proxy.errors")

# Routes reachable without the management token (API.md "Auth").
_OPEN_PREFIXES = ("/stream/", "/hls/", "/logos/")
_OPEN_PATHS = frozenset({"/health", "/openapi.json", "/", "/ui"})  # the page holds no data


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
    return path not in _OPEN_PATHS and not path.startswith(_OPEN_PREFIXES)


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
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
