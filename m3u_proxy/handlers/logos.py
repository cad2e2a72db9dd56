"""Channel logos through the proxy: ``GET /logos/{token}.{ext}``.

With ``playlists.serve_logos`` on, exported playlists name ``/logos/<token>.<ext>``
instead of the provider's ``tvg-logo`` URL, so players never contact the provider
(or its logo CDN) directly: "hides your viewers' addresses" also holds for logos
(issue #11). The token seals the logo URL (`Signer.seal`, scope ``logos``), so this
route fetches only URLs that an exported playlist named. Logos are fetched once and
kept in a small cache shared by every player.
"""

import re
from urllib.parse import urlsplit

from aiohttp import web

from m3u_proxy import urls
from m3u_proxy.hls.cache import Fetched, SharedFetches
from m3u_proxy.keys import CONFIG, LOGO_CACHE, SIGNER, UPSTREAM
from m3u_proxy.upstream import Failure, Nobody, TooLarge, read_whole, upstream_failures
from m3u_proxy.web.requests import public_base

SCOPE, KIND = "logos", "l"
MAX_LOGO_BYTES = 2 * 1024 * 1024
CACHE_ENTRIES, CACHE_BYTES, CACHE_SECONDS = 512, 32 * 1024 * 1024, 6 * 3600.0
_EXT = re.compile(r"\.([A-Za-z0-9]{1,5})$")


def new_cache() -> SharedFetches:
    return SharedFetches(CACHE_ENTRIES, CACHE_BYTES, CACHE_SECONDS)


def logo_base(request: web.Request) -> str | None:
    """Where `proxied_logo` URLs start (public base and root path); None when the
    ``serve_logos`` option is off and logos stay the provider's."""
    if not request.app[CONFIG].playlists.serve_logos:
        return None
    return f"{public_base(request)}{request.app[CONFIG].server.root_path}"


def proxied_logo(request: web.Request, base: str, url: str) -> str:
    """The proxy URL that serves the logo at ``url`` (http(s) only; others unchanged)."""
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        return url
    match = _EXT.search(urlsplit(url).path)
    ext = match.group(1).lower() if match else "img"
    return f"{base}{urls.LOGO_PREFIX}{request.app[SIGNER].seal(SCOPE, KIND, url)}.{ext}"


async def logo(request: web.Request) -> web.StreamResponse:
    """``GET|HEAD /logos/{token}.{ext}``: the logo, fetched once and cached."""
    url = request.app[SIGNER].open(SCOPE, KIND, request.match_info["token"])
    if url is None:
        raise web.HTTPForbidden(reason="this logo URL was not issued by this proxy")
    upstream = request.app[UPSTREAM]

    async def fetch() -> Fetched:
        with upstream_failures():
            async with upstream.get(url, Nobody()) as resp:
                try:
                    body = await read_whole(resp.content, MAX_LOGO_BYTES)
                except TooLarge as exc:
                    raise Failure("too_large", resp.status, "logo over 2 MiB") from exc
                kind = resp.headers.get("Content-Type", "application/octet-stream")
                return Fetched(resp.status, {"Content-Type": kind}, body, str(resp.url))

    try:
        fetched = await request.app[LOGO_CACHE].get(url, fetch)
    except Failure as exc:
        status = 504 if exc.reason == "timeout" else 502
        return web.json_response({"detail": exc.detail or exc.reason}, status=status)
    if fetched.status >= 400:
        detail = f"provider answered {fetched.status}"
        return web.json_response({"detail": detail}, status=fetched.status)
    headers = {**fetched.headers, "Cache-Control": "max-age=86400"}
    return web.Response(status=200, body=fetched.body, headers=headers)
