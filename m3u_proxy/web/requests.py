"""Small request helpers shared by handlers: JSON bodies, client address, URL building."""

import asyncio
import ipaddress
import json
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from m3u_proxy import urls
from m3u_proxy.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge, ValidationFailed
from m3u_proxy.keys import CONFIG, NETWORKS, REGISTRY, SIGNER, Network
from m3u_proxy.logs import bind_context
from m3u_proxy.streams.registry import StreamDefinition
from m3u_proxy.streams.tracking import Player

# What a streaming handler reports for the canonical request line. Filled in its
# ``finally`` (so also when the player left and the handler was cancelled), read by the
# access-log middleware: the status really sent, body bytes, outcome, stream and client.
LOG_FIELDS: web.RequestKey[dict[str, Any]] = web.RequestKey("log_fields", dict)


def note_for_log(request: web.Request, **fields: Any) -> None:
    """Add fields to this request's canonical log line."""
    if LOG_FIELDS in request:
        request[LOG_FIELDS].update(fields)
    else:
        request[LOG_FIELDS] = fields


def parse_networks(entries: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(entry, strict=False) for entry in entries]


def _trusted(address: str | None, networks: list[Network]) -> bool:
    if not address or not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def trusted_peer(request: web.Request) -> bool:
    """The direct peer is one of the ``trusted_proxies``."""
    return _trusted(request.remote, request.app[NETWORKS])


def client_ip(request: web.Request) -> str:
    """The viewer's address; X-Forwarded-For counts only when the peer is a trusted proxy.

    Walk the chain from the right and stop at the first hop we do not trust, so a client
    cannot spoof its address by sending its own X-Forwarded-For through a proxy.
    """
    networks = request.app[NETWORKS]
    peer = request.remote or ""
    if not _trusted(peer, networks):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    address = peer
    for hop in reversed(hops):
        address = hop
        if not _trusted(hop, networks):
            break
    return address


def stream_definition(request: web.Request) -> StreamDefinition:
    """The registered stream named by the ``{stream_id}`` of the path, else 404."""
    stream_id = request.match_info["stream_id"]
    definition = request.app[REGISTRY].get(stream_id)
    if definition is None:
        raise NotFound(f"stream {stream_id} is not registered")
    bind_context(stream_id=stream_id)
    return definition


def check_playback_token(request: web.Request, stream_id: str) -> None:
    """With ``playback_auth``, a player URL must carry the stream's signed token."""
    if request.app[CONFIG].auth.playback_auth and not request.app[SIGNER].check_playback(
        stream_id, request.query.get("token")
    ):
        raise Forbidden("this playback URL needs a valid token")


def player_of(request: web.Request) -> Player:
    """Who is playing: the asked-for ``client_id``, address, user agent and username."""
    return Player(
        client_id=request.query.get("client_id"),
        ip_address=client_ip(request),
        user_agent=request.headers.get("User-Agent", ""),
        username=request.query.get("username") or request.headers.get("X-Username"),
    )


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, up to ``limit + 1`` bytes, within ``client_timeout`` seconds.

    ``StreamReader.read(n)`` returns what has arrived so far, so it is called until the
    end of the body. The deadline bounds a slowloris client that trickles its body (or
    sends none after its headers): aiohttp itself never times a request body out.
    """
    deadline = request.app[CONFIG].clients.client_timeout or None
    raw = bytearray()
    try:
        async with asyncio.timeout(deadline):
            while len(raw) <= limit:
                chunk = await request.content.read(limit + 1 - len(raw))
                if not chunk:
                    break
                raw += chunk
    except TimeoutError as exc:
        raise web.HTTPRequestTimeout(
            reason=f"the request body did not arrive within {deadline:g} seconds"
        ) from exc
    return bytes(raw)


async def json_body(request: web.Request) -> Any:
    """The request's JSON body; 413 over ``max_body_size``, 400 when it is not JSON,
    408 when it takes longer than ``client_timeout`` to arrive."""
    limit = request.app[CONFIG].server.max_body_size
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    raw = await _read_body(request, limit)
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    try:
        # Strict UTF-8 (a BOM is tolerated): json.loads(bytes) would let encoded
        # surrogates through with "surrogatepass".
        text = raw.decode("utf-8-sig")
        body = json.loads(text)
    except UnicodeDecodeError as exc:
        raise BadRequest("request body is not UTF-8 JSON") from exc
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if "\\u" in text:
        # A "\ud800" escape decodes to a lone surrogate, which no later encode (md5 of
        # a URL, an HMAC secret, an M3U export) accepts: refuse it here, once for all
        # routes, instead of a 500 wherever it surfaces (RFC 8259 section 8.2).
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequest("request body has a lone UTF-16 surrogate escape") from exc
    return body


def query_flag(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValidationFailed(name, "must be true or false")


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An optional whole-number query parameter within [low, high]; else a 422 naming it."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:  # also a number too long to convert
        value = low - 1
    if not low <= value <= high:
        raise ValidationFailed(name, f"must be a whole number from {low} to {high}")
    return value


def required_query(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if not value:
        raise ValidationFailed(name, "query parameter is required")
    return value


def playback_path(request: web.Request, stream_id: str, hls: bool) -> str:
    """The path a player uses for a stream, with root_path and the playback token."""
    app = request.app
    root = app[CONFIG].server.root_path
    path = root + (urls.hls_playlist_path(stream_id) if hls else urls.stream_path(stream_id))
    if app[CONFIG].auth.playback_auth:
        path += f"?token={app[SIGNER].playback_token(stream_id)}"
    return path


def public_base(request: web.Request) -> str:
    """Scheme and host for absolute URLs: config, else trusted X-Forwarded-*, else Host."""
    configured = request.app[CONFIG].server.public_url
    if configured:
        # m3u-editor's M3U_PROXY_PUBLIC_URL (the same variable name as ours) ends with
        # the sub-path its nginx serves the proxy under: root_path must not be doubled.
        root = request.app[CONFIG].server.root_path
        return configured[: -len(root)] if root and configured.endswith(root) else configured
    scheme, host = request.scheme, request.host
    if _trusted(request.remote, request.app[NETWORKS]):
        scheme = request.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip()
        host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip()
    return f"{scheme}://{host}"
