"""``GET /`` and ``GET /ui``: the status page (`m3u_proxy.ui`), one HTML response.

The page carries no data, so it is open like /health; its script asks the management
API, with the token when one is set. The stylesheet and the script are inlined once,
and a strict Content-Security-Policy allows exactly those two by hash: no other script,
no inline event handler, no request to another origin, no framing.
"""

import base64
import functools
import hashlib
from importlib import resources

from aiohttp import web

_PACKAGE = "m3u_proxy.ui"


def _hash(source: str) -> str:
    digest = hashlib.sha256(source.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


@functools.cache
def rendered() -> tuple[bytes, str]:
    """The page with its style and script inlined, and the policy that allows them."""
    files = resources.files(_PACKAGE)
    css, js = (files / "page.css").read_text("utf-8"), (files / "page.js").read_text("utf-8")
    page = (files / "page.html").read_text("utf-8")
    page = page.replace("<!--style-->", f"<style>{css}</style>")
    page = page.replace("<!--script-->", f"<script>{js}</script>")
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src {_hash(js)}",
            f"style-src {_hash(css)}",
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    return page.encode(), policy


async def to_slash(request: web.Request) -> web.Response:
    """``GET {root_path}``: on to ``{root_path}/``, relative, so a prefix in front stays."""
    raise web.HTTPFound(request.path.rsplit("/", 1)[-1] + "/")


async def page(request: web.Request) -> web.Response:
    body, policy = rendered()
    return web.Response(
        body=body,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": policy,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )
