"""The status page in a real browser (headless Chromium) while players stream through.

Each test plays real streams from the fake providers through the proxy with aiohttp
players, opens the page, and checks what an operator would see and do: the stream and
the viewer appear without a reload, "fail over now" moves the player to the backup
provider, "disconnect" ends the player's response, the token gate hides all data, and
names from provider playlists are shown as text. Screenshots go to pytest's temp dir.
"""

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from selenium import webdriver

from m3u_proxy.app import create_app
from tests.conftest import ProxyFactory, make_config
from tests.providers import TS_PACKET, Provider, decode_packet
from tests.ui.browser import Browser, available, start_chrome

Client = TestClient[Any, Any]
LIVE_WITHIN = 2.0  # seconds: the page polls once a second
RATE = 150_000  # bytes per second per player: enough to show a bitrate, light on CI
VLC = "VLC/3.0.20 LibVLC/3.0.20"


pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def chrome() -> Iterator[webdriver.Chrome]:
    if not available():
        missing = "needs Debian's chromium and chromium-driver (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(missing)  # CI must run these, never skip them quietly
        pytest.skip(missing)
    yield from start_chrome()


@pytest.fixture
async def browser(chrome: webdriver.Chrome) -> AsyncIterator[Browser]:
    page = Browser(chrome)
    await page.call(chrome.execute_cdp_cmd, "Emulation.clearDeviceMetricsOverride", {})
    await page.color_scheme("light")
    await page.console_errors()  # drop what earlier tests left in the console log
    yield page
    await page.open("about:blank")  # stop the page's polling before its proxy goes away


class Player:
    """A player reading ``/stream/{id}`` to its end, noting which source each packet came from."""

    def __init__(self, proxy: Client, stream_id: str, client_id: str, username: str) -> None:
        self.path = f"/stream/{stream_id}?client_id={client_id}&username={username}"
        self.proxy = proxy
        self.received = 0
        self.last_source = -1
        self.ended = asyncio.Event()
        self.first_bytes = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> "Player":
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(5):
            await self.first_bytes.wait()
        return self

    async def _run(self) -> None:
        async with self.proxy.get(self.path, headers={"User-Agent": VLC}) as resp:
            assert resp.status == 200
            carry = b""
            async for chunk in resp.content.iter_any():
                carry += chunk
                whole = len(carry) - len(carry) % TS_PACKET
                for at in range(0, whole, TS_PACKET):
                    self.last_source = decode_packet(carry[at : at + TS_PACKET])[0]
                carry = carry[whole:]
                self.received += len(chunk)
                self.first_bytes.set()
        self.ended.set()

    async def source_becomes(self, source_id: int) -> None:
        async with asyncio.timeout(5):
            while self.last_source != source_id:  # noqa: ASYNC110 - fed by the reading task
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@contextlib.asynccontextmanager
async def players(*started: "asyncio.Future[Player] | Any") -> AsyncIterator[list[Player]]:
    running: list[Player] = [await p for p in started]
    try:
        yield running
    finally:
        for player in running:
            await player.close()


async def register(
    proxy: Client, url: str, headers: dict[str, str] | None = None, **body: Any
) -> str:
    resp = await proxy.post("/streams", json={"url": url, **body}, headers=headers)
    assert resp.status in (200, 201), await resp.text()
    stream_id: str = (await resp.json())["stream_id"]
    return stream_id


def live(provider: Provider, name: str, source_id: int) -> str:
    """A live TS URL on ``provider`` with credentials in it, as providers hand them out."""
    url = provider.url(f"/live/{name}.ts?id={source_id}&rate={RATE}&password=hunter2")
    return url.replace("http://", "http://bob:secret@")


def page_url(proxy: Client, path: str = "/ui") -> str:
    return str(proxy.make_url(path))


async def row_text(browser: Browser, table: str, key: str, value: str) -> str:
    return await browser.text(f'#{table} tr[data-{key}="{value}"]')


async def page_errors(browser: Browser) -> list[str]:
    """Console errors (script errors, CSP refusals) but the 404 of a proxy without /providers."""
    return [m for m in await browser.console_errors() if "/providers - " not in m]


def in_page(browser: Browser, css: str) -> bool:
    return bool(browser.find(css))


async def confirm(browser: Browser, row_css: str, *, accept: bool) -> str:
    """Press the row's action button, read the question, then confirm or cancel it."""
    await browser.click(row_css + " button")
    await browser.wait(lambda: browser.find("#confirm[open]"), 2, "the confirmation dialog")
    question = await browser.text("#confirm-text")
    await browser.click("#confirm-ok" if accept else "#confirm-cancel")
    return question


class TestLiveView:
    async def test_playing_streams_and_viewers_appear_without_reload(
        self, browser: Browser, proxy: Client, provider: Provider, tmp_path: Path
    ) -> None:
        """Players that start while the page is open show up, with hosts but no secrets."""
        async with Provider() as backup:
            news = await register(
                proxy,
                live(provider, "news", 0),
                failover_urls=[live(backup, "news", 1)],
                metadata={"tvg-name": "News HD", "group-title": "News"},
            )
            movies = await register(
                proxy, live(provider, "movies", 7), metadata={"name": "Movies 24/7"}
            )
            await browser.open(page_url(proxy))
            await browser.wait(lambda: in_page(browser, "#data:not([hidden])"), 5, "the page")
            assert await browser.visible("#streams-empty")
            async with players(
                Player(proxy, news, "tv-livingroom", "alice").start(),
                Player(proxy, movies, "tablet", "carol").start(),
            ):
                await browser.wait(
                    lambda: (
                        in_page(browser, f'#streams tr[data-stream-id="{news}"]')
                        and in_page(browser, '#viewers tr[data-client-id="tv-livingroom"]')
                    ),
                    LIVE_WITHIN,
                    "the stream and its viewer",
                )
                stream_row = await row_text(browser, "streams", "stream-id", news)
                assert "News HD" in stream_row
                assert "Live Continuous" in stream_row
                assert provider.base_url.removeprefix("http://") in stream_row
                assert "primary" in stream_row
                assert "per viewer" in stream_row
                viewer_row = await row_text(browser, "viewers", "client-id", "tv-livingroom")
                assert "alice" in viewer_row
                assert "127.0.0.1" in viewer_row
                assert VLC in viewer_row
                assert "News HD" in viewer_row
                await browser.wait(
                    lambda: (
                        in_page(browser, '#viewers tr[data-client-id="tablet"]')
                        and "Mbit/s" in browser.driver.find_element("id", "server").text
                    ),
                    5,
                    "both viewers and a throughput",
                )
                assert (await proxy.post(f"/streams/{news}/failover")).status == 200
                await browser.wait(
                    lambda: (
                        "Failover" in browser.driver.find_element("id", "events").text
                        and "backup 1" in browser.driver.find_element("id", "streams").text
                    ),
                    LIVE_WITHIN,
                    "the failover",
                )
                event = await browser.text("#events li")
                assert "News HD" in event
                assert "manual → " + backup.base_url.removeprefix("http://") in event
                page = await browser.text("body")
                for secret in ("secret", "hunter2", "bob:", "password"):
                    assert secret not in page
                assert await page_errors(browser) == []
                shot = await browser.full_screenshot(tmp_path / "status-page.png")
                print(f"\nstatus page screenshot (two streams playing): {shot}")
                await browser.color_scheme("dark")
                shot = await browser.full_screenshot(tmp_path / "status-page-dark.png")
                print(f"status page screenshot, dark: {shot}")

    async def test_holds_still_while_text_is_selected(
        self, browser: Browser, proxy: Client, provider: Provider
    ) -> None:
        """Selected text (an address being copied) is not swept away by the next update."""
        news = await register(proxy, live(provider, "news", 0), metadata={"name": "News HD"})
        async with players(Player(proxy, news, "first", "alice").start()):
            await browser.open(page_url(proxy))
            first = '#viewers tr[data-client-id="first"]'
            await browser.wait(lambda: in_page(browser, first), 5, "the viewer")
            await browser.script(
                "getSelection().selectAllChildren(document.querySelector(arguments[0]));",
                first + " td",
            )
            async with players(Player(proxy, news, "second", "bob").start()):
                await asyncio.sleep(LIVE_WITHIN + 0.5)
                assert not in_page(browser, '#viewers tr[data-client-id="second"]')
                assert await browser.script("return String(getSelection());") == "127.0.0.1"
                assert "paused" in await browser.text("#live")
                await browser.script("getSelection().removeAllRanges();")
                await browser.wait(
                    lambda: in_page(browser, '#viewers tr[data-client-id="second"]'),
                    LIVE_WITHIN,
                    "the update after the selection",
                )

    async def test_follows_the_colour_preference(self, browser: Browser, proxy: Client) -> None:
        """Light and dark preferences give a light and a dark page."""

        async def background_brightness() -> int:
            rgb = await browser.script(
                "return getComputedStyle(document.body).backgroundColor.match(/\\d+/g);"
            )
            return sum(int(c) for c in rgb[:3])

        await browser.open(page_url(proxy))
        await browser.wait(lambda: in_page(browser, "#data:not([hidden])"), 5, "the page")
        assert await background_brightness() > 600
        await browser.color_scheme("dark")
        assert await background_brightness() < 150

    async def test_fits_a_phone(
        self, browser: Browser, proxy: Client, provider: Provider, tmp_path: Path
    ) -> None:
        """On a phone-sized screen the page needs no sideways scrolling."""
        news = await register(proxy, live(provider, "news", 0), metadata={"name": "News HD"})
        await browser.viewport(390, 844)
        async with players(Player(proxy, news, "phone", "dave").start()):
            await browser.open(page_url(proxy))
            await browser.wait(
                lambda: in_page(browser, '#viewers tr[data-client-id="phone"]'), 5, "the viewer"
            )
            overflow = await browser.script(
                "return document.documentElement.scrollWidth - window.innerWidth;"
            )
            shot = await browser.screenshot(tmp_path / "status-page-phone.png")
            print(f"\nstatus page screenshot, phone: {shot}")
            assert overflow <= 0


class TestActions:
    async def test_fail_over_now_moves_the_player_to_the_backup(
        self, browser: Browser, proxy: Client, provider: Provider
    ) -> None:
        """ "Fail over now", once confirmed, moves the playing player to the backup provider."""
        async with Provider() as backup:
            news = await register(
                proxy,
                live(provider, "news", 0),
                failover_urls=[live(backup, "news", 1)],
                metadata={"name": "News HD"},
            )
            async with players(Player(proxy, news, "tv", "alice").start()) as (player,):
                await browser.open(page_url(proxy))
                row = f'#streams tr[data-stream-id="{news}"]'
                await browser.wait(lambda: in_page(browser, row), 5, "the stream")
                question = await confirm(browser, row, accept=False)
                assert "News HD" in question
                await asyncio.sleep(0.5)  # a cancelled confirmation must not act
                assert backup.requests_to("/live/") == []
                await confirm(browser, row, accept=True)
                moved = "Moved to " + backup.base_url.removeprefix("http://")
                await browser.wait(
                    lambda: moved in browser.driver.find_element("id", "toast").text,
                    5,
                    "the proxy's answer",
                )
                async with asyncio.timeout(5):
                    await backup.wait_for_request("/live/news.ts")
                await player.source_becomes(1)
                await browser.wait(
                    lambda: "backup 1" in browser.driver.find_element("css selector", row).text,
                    LIVE_WITHIN,
                    "the stream on its backup",
                )
                record = provider.requests_to("/live/news.ts")[0]
                async with asyncio.timeout(5):
                    await record.wait_socket_closed()
                await browser.wait(
                    lambda: "Failover" in browser.driver.find_element("id", "events").text,
                    LIVE_WITHIN,
                    "the failover event",
                )
                assert "manual" in await browser.text("#events")

    async def test_disconnect_ends_the_players_response(
        self, browser: Browser, proxy: Client, provider: Provider
    ) -> None:
        """ "Disconnect", once confirmed, ends that player's response and no other."""
        news = await register(proxy, live(provider, "news", 0), metadata={"name": "News HD"})
        async with players(
            Player(proxy, news, "kid-room", "kid").start(),
            Player(proxy, news, "parents", "mum").start(),
        ) as (kid, parents):
            await browser.open(page_url(proxy))
            row = '#viewers tr[data-client-id="kid-room"]'
            await browser.wait(lambda: in_page(browser, row), 5, "the viewer")
            question = await confirm(browser, row, accept=True)
            assert "kid" in question
            assert "News HD" in question
            async with asyncio.timeout(5):
                await kid.ended.wait()
            await browser.wait(lambda: not in_page(browser, row), LIVE_WITHIN, "the viewer gone")
            assert not parents.ended.is_set()
            assert in_page(browser, '#viewers tr[data-client-id="parents"]')


class TestToken:
    async def test_login_gate_and_session_token(
        self, browser: Browser, proxy_factory: ProxyFactory, provider: Provider, tmp_path: Path
    ) -> None:
        """With api_token set the page shows only a login until given the token, once."""
        proxy = await proxy_factory(auth={"api_token": "open-sesame"})
        token = {"X-API-Token": "open-sesame"}
        news = await register(
            proxy, live(provider, "news", 0), headers=token, metadata={"name": "News HD"}
        )
        async with players(Player(proxy, news, "tv", "alice").start()):
            await browser.open(page_url(proxy))
            await browser.wait(lambda: in_page(browser, "#login:not([hidden])"), 5, "the login")
            await asyncio.sleep(1.5)  # a poll or two: still nothing may show
            assert not await browser.visible("#data")
            page = await browser.text("body")
            assert "News HD" not in page
            assert "alice" not in page
            await browser.type("#token", "wrong")
            await browser.click("#login button")
            await browser.wait(
                lambda: in_page(browser, "#login-error:not([hidden])"), 5, "the refusal"
            )
            assert "not valid" in await browser.text("#login-error")
            shot = await browser.screenshot(tmp_path / "status-page-login.png")
            print(f"\nstatus page screenshot, login: {shot}")
            assert not await browser.visible("#data")
            await browser.type("#token", "open-sesame")
            await browser.click("#login button")
            row = '#viewers tr[data-client-id="tv"]'
            await browser.wait(lambda: in_page(browser, row), 5, "the data")
            await browser.open(page_url(proxy))  # a reload keeps the token for the tab
            await browser.wait(lambda: in_page(browser, row), 5, "the data after a reload")
            fetched = await browser.script(
                "return performance.getEntriesByType('resource').map(e => e.name);"
            )
            assert fetched
            assert not [url for url in fetched if "sesame" in url]
            await browser.click("#logout")
            assert await browser.visible("#login")
            assert not await browser.visible("#data")


class TestSafety:
    async def test_names_are_shown_as_text_under_root_path(
        self, browser: Browser, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """Markup in a playlist's channel name is shown literally, never run (under root_path)."""
        proxy = await proxy_factory(server={"root_path": "/iptv"})
        evil = '<img src=x onerror="window.pwned=1"><b>Evil</b>'
        sid = await register(proxy, live(provider, "evil", 0), metadata={"tvg-name": evil})
        async with players(Player(proxy, sid, "tv", "<i>eve</i>").start()):
            await browser.open(page_url(proxy, "/iptv/ui"))
            row = f'#streams tr[data-stream-id="{sid}"]'
            await browser.wait(lambda: in_page(browser, row), 5, "the stream")
            await browser.wait(lambda: in_page(browser, "#events li"), LIVE_WITHIN, "the events")
            assert evil in await browser.text(row)
            assert "<i>eve</i>" in await browser.text('#viewers tr[data-client-id="tv"]')
            assert evil in await browser.text("#events")
            assert not browser.find("#data img, #data b, #data i")
            assert await browser.script("return window.pwned === undefined;")
            assert await page_errors(browser) == []


@contextlib.asynccontextmanager
async def stripping_proxy(upstream: Client, prefix: str) -> AsyncIterator[TestServer]:
    """A reverse proxy that serves ``upstream`` under ``prefix`` and strips it on the way,
    like nginx's ``location /tv/ { proxy_pass http://backend/; }``."""

    async def forward(request: web.Request) -> web.Response:
        path = request.path_qs.removeprefix(prefix)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        async with upstream.session.request(
            request.method, upstream.make_url(path), headers=headers, data=await request.read()
        ) as answer:
            body = await answer.read()
            keep = {
                k: v
                for k, v in answer.headers.items()
                if k.lower() in ("content-type", "content-security-policy", "location")
            }
            return web.Response(status=answer.status, body=body, headers=keep)

    app = web.Application()
    app.router.add_route("*", prefix + "/{tail:.*}", forward)
    server = TestServer(app)
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


class TestReverseProxy:
    async def test_works_under_a_prefix_the_proxy_strips(
        self, browser: Browser, proxy_factory: ProxyFactory, provider: Provider
    ) -> None:
        """Behind a reverse proxy that adds /tv in front, the page reads and acts through it."""
        proxy = await proxy_factory(auth={"api_token": "k"})
        news = await register(
            proxy, live(provider, "news", 0), headers={"X-API-Token": "k"}, metadata={"name": "N"}
        )
        async with (
            stripping_proxy(proxy, "/tv") as outer,
            players(Player(proxy, news, "tv", "alice").start()),
        ):
            await browser.open(str(outer.make_url("/tv/ui")))
            await browser.wait(lambda: in_page(browser, "#login:not([hidden])"), 5, "the login")
            await browser.type("#token", "k")
            await browser.click("#login button")
            row = '#viewers tr[data-client-id="tv"]'
            await browser.wait(lambda: in_page(browser, row), 5, "the viewer")
            await browser.console_errors()  # the 401s that brought up the login
            await confirm(browser, row, accept=True)
            await browser.wait(lambda: not in_page(browser, row), 5, "the viewer gone")
            assert await page_errors(browser) == []


class TestProviders:
    async def test_section_follows_the_providers_route(
        self, browser: Browser, tmp_path: Path, provider: Provider
    ) -> None:
        """Provider slots show when /providers answers; the section is hidden when it is 404."""
        app = create_app(make_config(tmp_path / "data"))
        routed = any(
            r.resource and r.resource.canonical == "/providers" for r in app.router.routes()
        )
        if not routed:
            # Before the providers feature, stand in for it with the shape API.md gives.
            async def fake(_: web.Request) -> web.Response:
                acme = {
                    "name": "acme",
                    "max_connections": 2,
                    "match": [provider.base_url],
                    "on_limit": "reject",
                    "slot_wait": 2,
                    "in_use": 1,
                    "viewers": 1,
                    "rejected_total": 3,
                    "preempted_total": 0,
                }
                return web.json_response({"providers": [acme]})

            app.router.add_get("/providers", fake)
        async with TestClient(TestServer(app)) as proxy:
            if routed:
                body = {"max_connections": 2, "match": [provider.base_url]}
                assert (await proxy.put("/providers/acme", json=body)).status == 201
            news = await register(proxy, provider.url(f"/live/p.ts?rate={RATE}"))
            async with players(Player(proxy, news, "tv", "alice").start()):
                await browser.open(page_url(proxy))
                await browser.wait(
                    lambda: in_page(browser, "#providers-section:not([hidden]) tbody tr"),
                    LIVE_WITHIN + 1,
                    "the providers",
                )
                text = await browser.text("#providers")
                assert "acme" in text
                assert "1 / 2" in text

    async def test_hidden_without_the_route(self, browser: Browser, proxy: Client) -> None:
        """A proxy without /providers (404) shows no providers section."""
        if (await proxy.get("/providers")).status != 404:
            pytest.skip("this proxy has /providers")
        await browser.open(page_url(proxy))
        await browser.wait(lambda: in_page(browser, "#data:not([hidden])"), 5, "the page")
        assert not await browser.visible("#providers-section")
