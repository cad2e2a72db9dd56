"""Playlist import, export, refresh and persistence against in-process providers."""

import asyncio
import gzip
import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from m3u_proxy.events.bus import Event
from m3u_proxy.keys import EVENTS, REGISTRY
from m3u_proxy.playlists.m3u import parse_m3u
from m3u_proxy.playlists.plan import PlaylistBody, build_import, decode_playlist
from m3u_proxy.playlists.spec import PlaylistSource, PlaylistSpec, parse_spec
from tests.conftest import ProxyFactory, until
from tests.media import make_ts_file, needs_ffmpeg, play
from tests.providers import TS_PACKET, Provider, decode_stream

Client = TestClient[Any, Any]
CORPUS = Path(__file__).parent.parent / "corpus" / "m3u"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def corpus(name: str) -> str:
    return (CORPUS / name).read_text(encoding="utf-8")


def events_of(proxy: Client) -> list[Event]:
    """Every event the proxy emits from now on."""
    seen: list[Event] = []
    proxy.app[EVENTS].subscribe(seen.append)
    return seen


async def import_ok(proxy: Client, status: int = 201, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "test")
    resp = await proxy.post("/playlists", json=body)
    assert resp.status == status, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def export(proxy: Client, path: str, **params: str) -> str:
    resp = await proxy.get(path, params=params)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "audio/x-mpegurl"
    assert resp.charset == "utf-8"
    return await resp.text()


async def stream(proxy: Client, stream_id: str) -> dict[str, Any]:
    resp = await proxy.get(f"/streams/{stream_id}")
    assert resp.status == 200, await resp.text()
    data: dict[str, Any] = (await resp.json())["stream"]
    return data


@pytest.fixture
async def corpus_provider() -> AsyncIterator[Provider]:
    async with Provider(static_dir=CORPUS) as running:
        yield running


@pytest.fixture
async def files(tmp_path: Path) -> AsyncIterator[Provider]:
    """A provider serving tmp_path/static as /file/... and live TS under /live/."""
    static = tmp_path / "static"
    static.mkdir()
    async with Provider(static_dir=static) as running:
        yield running


def static_dir(provider: Provider) -> Path:
    assert provider.static_dir is not None
    return provider.static_dir


class TestImport:
    async def test_content_import_registers_every_entry(self, proxy: Client) -> None:
        """Each entry becomes a stream under md5(url) whose metadata keeps its attributes."""
        data = await import_ok(proxy, name="Plain", content=corpus("plain.m3u"))
        assert data["playlist_id"] == md5("Plain")
        assert data["entries"] == data["streams_created"] == 5
        assert data["streams_updated"] == 0
        assert data["skipped"] == []
        assert data["skipped_count"] == 0
        assert data["export_url"].endswith(f"/playlists/{md5('Plain')}.m3u")
        url = "http://streams.example.com/live/bbcone/index.m3u8"
        bbc = await proxy.get(f"/streams/{md5(url)}")
        assert bbc.status == 200
        listing = await (await proxy.get("/streams")).json()
        assert listing["total"] == 5
        meta = {s["stream_id"]: s["metadata"] for s in listing["streams"]}[md5(url)]
        assert meta == {
            "tvg-id": "bbcone.uk",
            "tvg-name": "BBC One",
            "tvg-logo": "http://logos.example.com/bbcone.png",
            "group-title": "UK",
            "playlist_id": md5("Plain"),
            "title": "BBC One",
            "group": "UK",
        }

    async def test_reimport_answers_200_and_changes_nothing(self, proxy: Client) -> None:
        """Posting the same playlist again keeps its id and reports every stream unchanged."""
        first = await import_ok(proxy, name="Plain", content=corpus("plain.m3u"))
        again = await import_ok(proxy, 200, name="Plain", content=corpus("plain.m3u"))
        assert again["playlist_id"] == first["playlist_id"]
        assert again["streams_created"] == again["streams_updated"] == 0
        assert again["streams_unchanged"] == 5
        assert (await (await proxy.get("/playlists")).json())["total"] == 1

    async def test_url_import_sends_the_playlist_user_agent(
        self, proxy: Client, corpus_provider: Provider
    ) -> None:
        """An Xtream get.php-style list is fetched with the playlist's UA and headers."""
        url = corpus_provider.url("/file/xtream.m3u")
        data = await import_ok(
            proxy, url=url, user_agent="IPTVSmarters/1.0", headers={"X-Portal": "1"}
        )
        assert data["playlist_id"] == md5(url)
        assert data["url"] == url
        assert data["entries"] == 4
        seen = corpus_provider.requests_to("/file/xtream.m3u")[0]
        assert seen.headers["User-Agent"] == "IPTVSmarters/1.0"
        assert seen.headers["X-Portal"] == "1"
        movie = await stream(proxy, md5("http://iptv.example.net:8080/movie/alice/s3cret/55.mkv"))
        assert movie["stream_type"] == "VOD"
        assert movie["user_agent"] == "IPTVSmarters/1.0"
        live = await stream(proxy, md5("http://iptv.example.net:8080/live/alice/s3cret/1234.ts"))
        assert live["stream_type"] == "Live Continuous"
        assert live["metadata"]["group"] == "UK | News"

    async def test_entry_options_win_over_playlist_headers(self, proxy: Client) -> None:
        """KODIPROP/EXTVLCOPT headers define a stream; the playlist's UA/headers fill gaps."""
        await import_ok(
            proxy,
            content=corpus("kodi.m3u"),
            user_agent="PlaylistUA/1",
            headers={"referer": "http://playlist.example/", "X-Extra": "e"},
        )
        registry = proxy.app[REGISTRY]
        dash = registry.get(md5("http://cdn.example.org/dash/one/manifest.mpd"))
        assert dash.user_agent == "Kodi/21.0 (Linux)"
        assert dict(dash.headers) == {"X-Extra": "e", "Referer": "https://portal.example.org/"}
        ref = registry.get(md5("http://cdn.example.org/hls/ref/index.m3u8"))
        assert ref.user_agent.startswith("Mozilla/5.0")
        assert dict(ref.headers) == {
            "X-Extra": "e",
            "Referer": "https://player.example.org/",
            "Origin": "https://player.example.org",
        }
        common = registry.get(md5("http://cdn.example.org/hls/common/index.m3u8"))
        assert common.user_agent == "Common Agent"
        assert common.headers["X-Token"] == "abc=123"
        assert common.headers["referer"] == "http://playlist.example/"
        plain = await import_ok(proxy, name="p", content=corpus("plain.m3u"), user_agent="P/2")
        assert plain["entries"] == 5
        bbc = registry.get(md5("http://streams.example.com/live/bbcone/index.m3u8"))
        assert bbc.user_agent == "P/2"

    async def test_catchup_attributes_are_kept(self, proxy: Client) -> None:
        """catchup, catchup-days and catchup-source templates survive in the metadata."""
        await import_ok(proxy, content=corpus("catchup.m3u"))
        news = await stream(proxy, md5("http://live.example.com/news24/index.m3u8"))
        assert news["metadata"]["catchup"] == "default"
        assert news["metadata"]["catchup-days"] == "7"
        assert news["metadata"]["catchup-source"] == (
            "http://archive.example.com/news24/index.m3u8?utc={utc}&lutc={lutc}"
        )

    async def test_skipped_lines_are_reported(self, proxy: Client) -> None:
        """Lines the parser dropped come back with their line number and reason."""
        data = await import_ok(proxy, content=corpus("messy.m3u"))
        assert data["entries"] == 6
        reasons = {(s["line_no"], s["reason"]) for s in data["skipped"]}
        assert reasons == {
            (13, "#EXTINF without a URL"),
            (15, "URL is not http(s)"),
            (20, "URL is not http(s)"),
            (23, "#EXTINF without a URL"),
        }
        assert data["skipped_count"] == 4
        assert all(s["text"] for s in data["skipped"])

    async def test_skipped_list_is_bounded(self, proxy: Client) -> None:
        """Thousands of bad lines are counted, but only the first hundred are listed."""
        bad = "".join(f"rtmp://bad.example/{i}\n" for i in range(500))
        data = await import_ok(proxy, content=f"#EXTM3U\n{bad}http://ok.example/a.ts\n")
        assert data["entries"] == 1
        assert data["skipped_count"] == 500
        assert len(data["skipped"]) == 100

    async def test_failover_playlists_match_tvg_id_then_name(
        self, proxy: Client, corpus_provider: Provider
    ) -> None:
        """Provider B's entries become failover URLs of provider A's channels."""
        data = await import_ok(
            proxy,
            url=corpus_provider.url("/file/provider_a.m3u"),
            failover_playlists=[{"content": corpus("provider_b.m3u")}],
        )
        assert data["failover_matches"] == 4
        expected = {
            "http://a.example.com/live/itv1.ts": ["http://b.example.com/stream/101"],
            "http://a.example.com/live/channel4.ts": ["http://b.example.com/stream/102"],
            "http://a.example.com/live/bbcone.ts": ["http://b.example.com/stream/103"],
            "http://a.example.com/live/skynews.ts": ["http://b.example.com/stream/104"],
            "http://a.example.com/live/dave.ts": [],
        }
        for url, failover in expected.items():
            assert (await stream(proxy, md5(url)))["failover_urls"] == failover
        # Provider B's own entries are not registered as streams of their own.
        assert (await proxy.get(f"/streams/{md5('http://b.example.com/stream/105')}")).status == 404

    async def test_failover_playlist_fails_over_for_a_player(
        self, proxy_factory: ProxyFactory, files: Provider
    ) -> None:
        """A player of a channel whose provider is down gets the failover provider's bytes."""
        proxy = await proxy_factory(upstream={"stall_timeout": 0.5, "connect_timeout": 1.0})
        main = f'#EXTM3U\n#EXTINF:-1 tvg-id="c1",One\n{files.url("/status/503")}\n'
        backup = f'#EXTM3U\n#EXTINF:-1 tvg-id="c1",Uno\n{files.url("/live/b.ts?id=9")}\n'
        await import_ok(proxy, content=main, failover_playlists=[{"content": backup}])
        resp = await proxy.get(f"/stream/{md5(files.url('/status/503'))}")
        assert resp.status == 200
        async with asyncio.timeout(10):
            data = await resp.content.readexactly(TS_PACKET * 20)
        assert {source for source, _ in decode_stream(data)} == {9}
        resp.close()

    async def test_gzipped_playlist_is_decompressed(self, proxy: Client, files: Provider) -> None:
        """A playlist served as a .gz file (no Content-Encoding) imports like plain text."""
        (static_dir(files) / "list.m3u.gz").write_bytes(gzip.compress(corpus("plain.m3u").encode()))
        data = await import_ok(proxy, url=files.url("/file/list.m3u.gz"))
        assert data["entries"] == 5
        seen = files.requests_to("/file/list.m3u.gz")[0]
        assert seen.headers["Accept-Encoding"] == "identity"

    async def test_import_emits_playlist_imported(self, proxy: Client) -> None:
        """A successful import emits one playlist_imported event with the counts."""
        seen = events_of(proxy)
        await import_ok(proxy, name="Plain", content=corpus("plain.m3u"))
        imported = [e for e in seen if e["event_type"] == "playlist_imported"]
        assert len(imported) == 1
        assert imported[0]["data"]["playlist_id"] == md5("Plain")
        assert imported[0]["data"]["streams_created"] == 5


class TestImportErrors:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"content": "#EXTM3U\n"}, "name"),
            ({"name": "", "content": "x"}, "name"),
            ({"name": "a"}, "url"),
            ({"name": "a", "url": "http://h/x.m3u", "content": "x"}, "url"),
            ({"name": "a", "url": None, "content": "x"}, "url"),
            ({"name": "a", "url": "http://h/x.m3u", "content": None}, "url"),
            ({"name": "a", "content": ""}, "content"),
            ({"name": "a", "url": "ftp://h/x.m3u"}, "url"),
            ({"name": "a", "content": 5}, "content"),
            ({"name": "a", "content": "x", "user_agent": "a\r\nX: y"}, "user_agent"),
            ({"name": "a", "content": "x", "headers": {"A": "b\nc"}}, "headers.A"),
            ({"name": "a", "url": "http://h/x", "refresh_interval": "hourly"}, "refresh_interval"),
            ({"name": "a", "url": "http://h/x", "refresh_interval": -5}, "refresh_interval"),
            ({"name": "a", "url": "http://h/x", "refresh_interval": False}, "refresh_interval"),
            ({"name": "a", "content": "x", "refresh_interval": 60}, "refresh_interval"),
            ({"name": "a", "content": "x", "failover_playlists": "u"}, "failover_playlists"),
            ({"name": "a", "content": "x", "failover_playlists": {}}, "failover_playlists"),
            (
                {"name": "a", "content": "x", "failover_playlists": ["file:///etc/passwd"]},
                "failover_playlists[0]",
            ),
            (
                {"name": "a", "content": "x", "failover_playlists": [{"user_agent": "u"}]},
                "failover_playlists[0].url",
            ),
            (
                {
                    "name": "a",
                    "content": "x",
                    "failover_playlists": [{"url": None, "content": "c"}],
                },
                "failover_playlists[0].url",
            ),
        ],
    )
    async def test_invalid_fields_are_422(
        self, proxy: Client, body: dict[str, Any], field: str
    ) -> None:
        """A field that fails validation is refused with 422 and named in the detail."""
        resp = await proxy.post("/playlists", json=body)
        assert resp.status == 422
        detail = (await resp.json())["detail"]
        assert detail.startswith(f"{field}: ")

    async def test_not_json_is_400(self, proxy: Client) -> None:
        """A body that is not JSON is a 400."""
        resp = await proxy.post("/playlists", data=b"#EXTM3U")
        assert resp.status == 400

    async def test_too_large_body_is_413(self, proxy_factory: ProxyFactory) -> None:
        """A content import beyond max_body_size is refused with 413."""
        proxy = await proxy_factory(server={"max_body_size": 1000})
        resp = await proxy.post("/playlists", json={"name": "big", "content": "x" * 2000})
        assert resp.status == 413

    async def test_no_playable_entry_is_422_with_reasons(self, proxy: Client) -> None:
        """A playlist without one usable entry is refused, the skip reasons summarised."""
        seen = events_of(proxy)
        resp = await proxy.post(
            "/playlists",
            json={"name": "bad", "content": "#EXTM3U\n#EXTINF:-1,A\nrtmp://x/y\n#EXTINF:-1,B\n"},
        )
        assert resp.status == 422
        detail = (await resp.json())["detail"]
        assert detail.startswith("content: ")
        assert "URL is not http(s)" in detail
        assert "#EXTINF without a URL" in detail
        assert [e["event_type"] for e in seen] == ["playlist_failed"]
        assert (await (await proxy.get("/playlists")).json())["total"] == 0

    async def test_provider_error_is_502_and_emits_playlist_failed(
        self, proxy: Client, files: Provider
    ) -> None:
        """A playlist URL answering 404 gives 502 and a playlist_failed event."""
        seen = events_of(proxy)
        url = files.url("/file/missing.m3u")
        resp = await proxy.post("/playlists", json={"name": "gone", "url": url})
        assert resp.status == 502
        assert "404" in (await resp.json())["detail"]
        failed = [e for e in seen if e["event_type"] == "playlist_failed"]
        assert len(failed) == 1
        assert failed[0]["data"]["playlist_id"] == md5(url)

    async def test_unreachable_provider_is_502(self, proxy: Client) -> None:
        """A playlist URL nobody listens on gives 502, not a 500."""
        resp = await proxy.post("/playlists", json={"name": "x", "url": "http://127.0.0.1:9/a"})
        assert resp.status == 502

    async def test_failing_failover_playlist_names_its_field(
        self, proxy: Client, files: Provider
    ) -> None:
        """A failover playlist that cannot be fetched fails the import, naming which."""
        resp = await proxy.post(
            "/playlists",
            json={
                "name": "x",
                "content": corpus("plain.m3u"),
                "failover_playlists": [files.url("/status/500")],
            },
        )
        assert resp.status == 502
        assert (await resp.json())["detail"].startswith("failover_playlists[0]: ")


class TestExport:
    async def test_round_trip_keeps_attributes(self, proxy: Client) -> None:
        """The exported M3U lists the same entries, attributes and groups, pointing here."""
        source = corpus("catchup.m3u") + corpus("plain.m3u").replace("#EXTM3U", "#EXTM3U x=1")
        data = await import_ok(proxy, name="Mix", content=source)
        original = parse_m3u(source)
        exported = parse_m3u(await export(proxy, f"/playlists/{data['playlist_id']}.m3u"))
        assert exported.skipped == []
        assert exported.header_attrs == original.header_attrs
        assert len(exported.entries) == len(original.entries) == 8
        base = str(proxy.make_url("/"))[:-1]
        for before, after in zip(original.entries, exported.entries, strict=True):
            assert (after.title, after.attrs, after.duration) == (
                before.title,
                before.attrs,
                before.duration,
            )
            assert after.url == f"{base}/hls/{md5(before.url)}/playlist.m3u8"

    async def test_kodi_options_without_headers_survive_export(self, proxy: Client) -> None:
        """Non-header KODIPROP/EXTVLCOPT lines are kept; header-carrying ones are not."""
        data = await import_ok(proxy, content=corpus("kodi.m3u"))
        text = await export(proxy, f"/playlists/{data['playlist_id']}.m3u")
        assert "#KODIPROP:inputstream.adaptive.manifest_type=mpd" in text
        assert "#EXTVLCOPT:network-caching=1000" in text
        assert "http-user-agent" not in text
        assert "stream_headers" not in text
        assert "cdn.example.org" not in text

    async def test_direct_streams_use_the_stream_route(self, proxy: Client) -> None:
        """TS and VOD entries point at /stream/{id}."""
        data = await import_ok(proxy, content=corpus("xtream.m3u"))
        exported = parse_m3u(await export(proxy, f"/playlists/{data['playlist_id']}.m3u"))
        paths = [URL(entry.url).path for entry in exported.entries]
        urls = [entry.url for entry in parse_m3u(corpus("xtream.m3u")).entries]
        assert paths == [f"/stream/{md5(url)}" for url in urls]

    async def test_group_filter(self, proxy: Client) -> None:
        """?group= keeps only the entries of that group-title (repeatable, any case)."""
        data = await import_ok(proxy, content=corpus("plain.m3u"))
        path = f"/playlists/{data['playlist_id']}.m3u"
        uk = parse_m3u(await export(proxy, path, group="UK"))
        assert [e.title for e in uk.entries] == ["BBC One", "BBC Two"]
        resp = await proxy.get(path, params=[("group", "france"), ("group", "Italy")])
        two = parse_m3u(await resp.text())
        assert [e.title for e in two.entries] == ["France 2", "Rai 1"]
        none = parse_m3u(await export(proxy, path, group="Nope"))
        assert none.entries == []

    async def test_root_path_public_url_and_playback_token(
        self, proxy_factory: ProxyFactory, files: Provider
    ) -> None:
        """Exported URLs carry public_url, root_path and a playback token that plays."""
        proxy = await proxy_factory(
            server={"root_path": "/tv", "public_url": "https://iptv.example"},
            auth={"api_token": "sekret", "playback_auth": True},
        )
        content = f"#EXTM3U\n#EXTINF:-1,Live\n{files.url('/live/x.ts')}\n"
        resp = await proxy.post(
            "/tv/playlists",
            json={"name": "t", "content": content},
            headers={"X-API-Token": "sekret"},
        )
        assert resp.status == 201, await resp.text()
        data = await resp.json()
        assert data["export_url"] == f"https://iptv.example/tv/playlists/{data['playlist_id']}.m3u"
        export_path = f"/tv/playlists/{data['playlist_id']}.m3u"
        assert (await proxy.get(export_path)).status == 401
        text = await export(proxy, export_path, api_token="sekret")
        url = URL(parse_m3u(text).entries[0].url)
        sid = md5(files.url("/live/x.ts"))
        assert (url.scheme, url.host, url.path) == ("https", "iptv.example", f"/tv/stream/{sid}")
        assert url.query["token"]
        assert (await proxy.get(url.path)).status == 403
        played = await proxy.get(url.path_qs)
        assert played.status == 200
        async with asyncio.timeout(10):
            await played.content.readexactly(TS_PACKET * 10)
        played.close()
        everything = await export(proxy, "/tv/playlist.m3u", api_token="sekret")
        assert parse_m3u(everything).entries[0].url == str(url)

    async def test_all_streams_export(self, proxy: Client) -> None:
        """/playlist.m3u lists playlist channels with attributes and other streams by title."""
        await proxy.post(
            "/streams",
            json={"url": "http://x.example/manual.ts", "metadata": {"title": "Manual", "n": 1}},
        )
        await proxy.post("/streams", json={"url": "http://x.example/bare.ts"})
        await import_ok(proxy, content=corpus("plain.m3u"))
        text = await export(proxy, "/playlist.m3u")
        entries = parse_m3u(text).entries
        assert [e.title for e in entries] == [
            "BBC One",
            "BBC Two",
            "France 2",
            "Das Erste",
            "Rai 1",
            "Manual",
            md5("http://x.example/bare.ts"),
        ]
        assert entries[0].attrs["tvg-logo"] == "http://logos.example.com/bbcone.png"
        assert entries[5].attrs == {}
        assert (
            f"#EXTINF:-1,Manual\n{proxy.make_url('/stream/' + md5('http://x.example/manual.ts'))}"
            in text
        )
        uk = parse_m3u(await export(proxy, "/playlist.m3u", group="uk"))
        assert [e.title for e in uk.entries] == ["BBC One", "BBC Two"]

    async def test_unknown_playlist_is_404(self, proxy: Client) -> None:
        """Export, read, refresh and delete of an unknown playlist answer 404 JSON."""
        for method, path in (
            ("GET", "/playlists/nope.m3u"),
            ("GET", "/playlists/nope"),
            ("POST", "/playlists/nope/refresh"),
            ("DELETE", "/playlists/nope"),
        ):
            resp = await proxy.request(method, path)
            assert resp.status == 404, path
            assert "nope" in (await resp.json())["detail"]

    @needs_ffmpeg
    @pytest.mark.ffmpeg
    async def test_ffmpeg_plays_an_exported_entry(self, proxy: Client, files: Provider) -> None:
        """ffmpeg decodes an entry taken from the exported playlist."""
        await asyncio.to_thread(make_ts_file, static_dir(files) / "clip.ts", 4)
        content = (
            '#EXTM3U\n#EXTINF:-1 tvg-id="clip",Clip\n'
            f"#EXTVLCOPT:http-user-agent=ClipPlayer/1\n{files.url('/file/clip.ts')}\n"
        )
        data = await import_ok(proxy, content=content)
        entry = parse_m3u(await export(proxy, f"/playlists/{data['playlist_id']}.m3u")).entries[0]
        assert entry.attrs == {"tvg-id": "clip"}
        result = await asyncio.to_thread(play, entry.url, seconds=2)
        assert result.returncode == 0, result.stderr
        assert files.requests_to("/file/clip.ts")[0].headers["User-Agent"] == "ClipPlayer/1"


class TestRefresh:
    async def test_refresh_changes_a_url_while_a_client_keeps_playing(
        self, proxy: Client, files: Provider
    ) -> None:
        """A playing client keeps its bytes across a refresh; the export moves to the new URL."""
        listing = static_dir(files) / "list.m3u"
        old_url, new_url = files.url("/live/one.ts?id=1"), files.url("/live/two.ts?id=2")
        listing.write_text(f'#EXTM3U\n#EXTINF:-1 tvg-id="ch",Channel\n{old_url}\n')
        data = await import_ok(proxy, url=files.url("/file/list.m3u"))
        playlist_id = data["playlist_id"]
        player = await proxy.get(f"/stream/{md5(old_url)}")
        assert player.status == 200
        async with asyncio.timeout(10):
            before = await player.content.readexactly(TS_PACKET * 50)

        listing.write_text(f'#EXTM3U\n#EXTINF:-1 tvg-id="ch",Channel\n{new_url}\n')
        seen = events_of(proxy)
        resp = await proxy.post(f"/playlists/{playlist_id}/refresh")
        assert resp.status == 200, await resp.text()
        report = await resp.json()
        assert (report["streams_created"], report["streams_retired"]) == (1, 1)
        assert [e["event_type"] for e in seen] == ["playlist_refreshed"]

        async with asyncio.timeout(10):
            after = await player.content.readexactly(TS_PACKET * 500)
        packets = decode_stream(before + after)
        assert [counter for _, counter in packets] == list(range(550))
        assert {source for source, _ in packets} == {1}
        exported = parse_m3u(await export(proxy, f"/playlists/{playlist_id}.m3u"))
        assert [URL(e.url).path for e in exported.entries] == [f"/stream/{md5(new_url)}"]
        everything = parse_m3u(await export(proxy, "/playlist.m3u"))
        assert [URL(e.url).path for e in everything.entries] == [f"/stream/{md5(new_url)}"]
        assert (await proxy.get(f"/streams/{md5(old_url)}")).status == 200

        player.close()

        async def old_stream_gone() -> bool:
            return (await proxy.get(f"/streams/{md5(old_url)}")).status == 404

        await until(old_stream_gone)
        fresh = await proxy.get(f"/stream/{md5(new_url)}")
        async with asyncio.timeout(10):
            data_new = await fresh.content.readexactly(TS_PACKET * 10)
        assert {source for source, _ in decode_stream(data_new)} == {2}
        fresh.close()

    async def test_idle_replaced_stream_is_deleted_at_once(
        self, proxy: Client, files: Provider
    ) -> None:
        """A refresh deletes a replaced stream nobody plays, and keeps unchanged ones."""
        listing = static_dir(files) / "list.m3u"
        listing.write_text(
            "#EXTM3U\n#EXTINF:-1,A\nhttp://a.example/1\n#EXTINF:-1,B\nhttp://b.example/1\n"
        )
        data = await import_ok(proxy, url=files.url("/file/list.m3u"))
        listing.write_text(
            "#EXTM3U\n#EXTINF:-1,A\nhttp://a.example/2\n#EXTINF:-1,B\nhttp://b.example/1\n"
        )
        report = await (await proxy.post(f"/playlists/{data['playlist_id']}/refresh")).json()
        assert report["streams_created"] == report["streams_retired"] == 1
        assert report["streams_unchanged"] == 1
        assert (await proxy.get(f"/streams/{md5('http://a.example/1')}")).status == 404
        assert (await proxy.get(f"/streams/{md5('http://a.example/2')}")).status == 200
        assert (await proxy.get(f"/streams/{md5('http://b.example/1')}")).status == 200

    async def test_manually_claimed_stream_survives_a_refresh(
        self, proxy: Client, files: Provider
    ) -> None:
        """A stream re-registered by POST /streams is not deleted when the playlist drops it."""
        listing = static_dir(files) / "list.m3u"
        listing.write_text("#EXTM3U\n#EXTINF:-1,A\nhttp://a.example/1\n")
        data = await import_ok(proxy, url=files.url("/file/list.m3u"))
        await proxy.post("/streams", json={"url": "http://a.example/1", "metadata": {"mine": 1}})
        listing.write_text("#EXTM3U\n#EXTINF:-1,A\nhttp://a.example/2\n")
        assert (await proxy.post(f"/playlists/{data['playlist_id']}/refresh")).status == 200
        assert (await proxy.get(f"/streams/{md5('http://a.example/1')}")).status == 200

    async def test_failed_refresh_keeps_the_definitions(
        self, proxy: Client, files: Provider
    ) -> None:
        """A refresh whose fetch fails answers 502, emits playlist_failed, changes nothing."""
        (static_dir(files) / "list.m3u").write_text(corpus("plain.m3u"))
        data = await import_ok(proxy, url=files.url("/file/list.m3u"))
        files.fail("/file/list.m3u", 500)
        seen = events_of(proxy)
        resp = await proxy.post(f"/playlists/{data['playlist_id']}/refresh")
        assert resp.status == 502
        assert [e["event_type"] for e in seen] == ["playlist_failed"]
        assert seen[0]["data"]["phase"] == "refresh"
        assert (await (await proxy.get("/streams")).json())["total"] == 5
        info = (await (await proxy.get(f"/playlists/{data['playlist_id']}")).json())["playlist"]
        assert "500" in info["last_error"]
        assert info["entries"] == 5

    async def test_empty_refresh_keeps_the_definitions(
        self, proxy: Client, files: Provider
    ) -> None:
        """A provider briefly serving an empty list does not wipe the channels."""
        listing = static_dir(files) / "list.m3u"
        listing.write_text(corpus("plain.m3u"))
        data = await import_ok(proxy, url=files.url("/file/list.m3u"))
        listing.write_text("<html>maintenance</html>")
        resp = await proxy.post(f"/playlists/{data['playlist_id']}/refresh")
        assert resp.status == 422
        assert (await (await proxy.get("/streams")).json())["total"] == 5
        exported = parse_m3u(await export(proxy, f"/playlists/{data['playlist_id']}.m3u"))
        assert len(exported.entries) == 5

    async def test_content_playlist_cannot_be_refreshed(self, proxy: Client) -> None:
        """Refreshing a playlist imported from content is a 400 that says how to update it."""
        data = await import_ok(proxy, content=corpus("plain.m3u"))
        resp = await proxy.post(f"/playlists/{data['playlist_id']}/refresh")
        assert resp.status == 400
        assert "content" in (await resp.json())["detail"]

    async def test_periodic_refresh(self, proxy: Client, files: Provider) -> None:
        """With refresh_interval set the playlist is fetched again on its own."""
        listing = static_dir(files) / "list.m3u"
        listing.write_text("#EXTM3U\n#EXTINF:-1,A\nhttp://a.example/1\n")
        seen = events_of(proxy)
        data = await import_ok(proxy, url=files.url("/file/list.m3u"), refresh_interval=1)
        assert data["refresh_interval"] == 1
        listing.write_text("#EXTM3U\n#EXTINF:-1,A\nhttp://a.example/2\n")
        async with asyncio.timeout(5):
            await files.wait_for_request("/file/list.m3u", count=2)

        async def refreshed() -> bool:
            return any(e["event_type"] == "playlist_refreshed" for e in seen)

        await until(refreshed)
        assert (await proxy.get(f"/streams/{md5('http://a.example/2')}")).status == 200
        info = (await (await proxy.get(f"/playlists/{data['playlist_id']}")).json())["playlist"]
        assert 0 <= info["next_refresh_in"] <= 1

    async def test_periodic_refresh_failure_is_reported(
        self, proxy: Client, files: Provider
    ) -> None:
        """A scheduled refresh that fails emits playlist_failed and keeps trying."""
        (static_dir(files) / "list.m3u").write_text(corpus("plain.m3u"))
        data = await import_ok(proxy, url=files.url("/file/list.m3u"), refresh_interval=1)
        files.fail("/file/list.m3u", 503)
        seen = events_of(proxy)
        async with asyncio.timeout(5):
            await files.wait_for_request("/file/list.m3u", count=3)
        failed = [e for e in seen if e["event_type"] == "playlist_failed"]
        assert failed
        assert failed[0]["data"]["playlist_id"] == data["playlist_id"]
        assert (await (await proxy.get("/streams")).json())["total"] == 5


class TestLifecycle:
    async def test_playlists_survive_a_restart(
        self, proxy_factory: ProxyFactory, tmp_path: Path
    ) -> None:
        """A restarted proxy lists the playlist and exports it identically."""
        data_dir = tmp_path / "shared"
        first = await proxy_factory(data_dir)
        data = await import_ok(first, content=corpus("kodi.m3u") + corpus("catchup.m3u"))
        path = f"/playlists/{data['playlist_id']}.m3u"
        before = await export(first, path)
        base_first = str(first.make_url(""))
        await first.close()
        second = await proxy_factory(data_dir)
        listing = await (await second.get("/playlists")).json()
        assert [p["playlist_id"] for p in listing["playlists"]] == [data["playlist_id"]]
        after = await export(second, path)
        assert after == before.replace(base_first, str(second.make_url("")))

    async def test_listing_and_details(self, proxy: Client) -> None:
        """GET /playlists and /playlists/{id} describe the import without its channels."""
        data = await import_ok(proxy, name="Messy", content=corpus("messy.m3u"))
        listing = await (await proxy.get("/playlists")).json()
        assert listing["total"] == 1
        summary = listing["playlists"][0]
        assert summary["playlist_id"] == data["playlist_id"]
        assert summary["name"] == "Messy"
        assert summary["source"] == "content"
        assert summary["entries"] == 6
        assert summary["skipped_count"] == 4
        assert summary["next_refresh_in"] is None
        assert "skipped" not in summary
        detail = (await (await proxy.get(f"/playlists/{data['playlist_id']}")).json())["playlist"]
        assert len(detail["skipped"]) == 4

    async def test_delete_removes_the_playlist_and_its_streams(
        self, proxy: Client, files: Provider
    ) -> None:
        """DELETE forgets the playlist and disconnects and deletes only its own streams."""
        live = files.url("/live/d.ts")
        content = f"#EXTM3U\n#EXTINF:-1,Live\n{live}\n" + corpus("plain.m3u")
        data = await import_ok(proxy, content=content)
        await import_ok(proxy, name="other", content=corpus("plain.m3u"))
        await import_ok(proxy, name="third", content=corpus("catchup.m3u"))
        player = await proxy.get(f"/stream/{md5(live)}")
        async with asyncio.timeout(10):
            await player.content.readexactly(TS_PACKET * 10)
        resp = await proxy.delete(f"/playlists/{data['playlist_id']}")
        assert resp.status == 200
        assert (await resp.json())["deleted_streams"] == 1
        async with asyncio.timeout(5):  # the player's response ends: read() reaches EOF
            await player.content.read()
        assert player.content.at_eof()
        player.close()
        assert (await proxy.get(f"/playlists/{data['playlist_id']}")).status == 404
        assert (await proxy.get(f"/streams/{md5(live)}")).status == 404
        # The plain.m3u streams are still listed by "other".
        assert (await (await proxy.get("/streams")).json())["total"] == 8


class TestBuild:
    def test_spec_ids(self) -> None:
        """The playlist id is md5 of the URL, or of the name for content."""
        by_url = parse_spec({"name": "a", "url": "http://h/x.m3u"})
        assert by_url.playlist_id == md5("http://h/x.m3u")
        assert parse_spec({"name": " b ", "content": "x"}).playlist_id == md5("b")

    def test_failover_prefers_tvg_id_over_name(self) -> None:
        """A tvg-id match wins over a name match; without tvg-id the name decides."""
        main = parse_m3u(
            '#EXTINF:-1 tvg-id="x",News\nhttp://a/1\n#EXTINF:-1 tvg-id="",Sport HD\nhttp://a/2\n'
        )
        backup = parse_m3u(
            '#EXTINF:-1 tvg-id="y",News\nhttp://b/name\n#EXTINF:-1 tvg-id="x",Other\nhttp://b/id\n'
            "#EXTINF:-1,SPORT\nhttp://b/sport\n#EXTINF:-1,Sport\nhttp://a/2\n"
        )
        plan = build_import(PlaylistSpec("n", PlaylistSource(content="x")), main, [backup], {})
        by_url = {d.url: list(d.failover_urls) for d in plan.created}
        assert by_url == {"http://a/1": ["http://b/id"], "http://a/2": ["http://b/sport"]}

    def test_duplicate_urls_share_a_stream(self) -> None:
        """Two entries with one URL are two channels of one stream."""
        main = parse_m3u("#EXTINF:-1,A\nhttp://a/1\n#EXTINF:-1,B\nhttp://a/1\n")
        plan = build_import(PlaylistSpec("n", PlaylistSource(content="x")), main, [], {})
        assert len(plan.channels) == 2
        assert len(plan.created) == 1
        assert plan.created[0].metadata["title"] == "A"

    def test_decode_latin1_and_gzip_content_encoding(self) -> None:
        """Bodies are gunzipped by header or magic and decoded with the declared charset."""
        text = "#EXTINF:-1,Télé\nhttp://a/1\n"
        assert decode_playlist(PlaylistBody(text.encode("latin-1"), None, "iso-8859-1")) == text
        assert decode_playlist(PlaylistBody(gzip.compress(text.encode()), "gzip", None)) == text
        assert decode_playlist(PlaylistBody(text.encode(), None, None)) == text


def generated(count: int) -> str:
    """A provider-shaped playlist of ``count`` channels in 50 groups."""
    lines = ["#EXTM3U"]
    for i in range(count):
        lines.append(
            f'#EXTINF:-1 tvg-id="ch{i}.tv" tvg-name="Channel {i}" '
            f'tvg-logo="http://logo.example/{i}.png" group-title="Group {i % 50}",Channel {i}'
        )
        lines.append(f"http://provider.example:8080/live/user/pass/{i}.ts")
    return "\n".join(lines) + "\n"


class TestLarge:
    async def test_50k_entry_import_does_not_block_the_loop(
        self, proxy: Client, files: Provider
    ) -> None:
        """A 50,000-entry import succeeds while /health keeps answering during it."""
        (static_dir(files) / "big.m3u").write_text(generated(50_000))
        task = asyncio.create_task(
            proxy.post("/playlists", json={"name": "big", "url": files.url("/file/big.m3u")})
        )
        answered_during = 0
        while not task.done():
            async with asyncio.timeout(1):
                health = await proxy.get("/health")
            assert health.status == 200
            answered_during += not task.done()
            await asyncio.sleep(0.05)
        resp = await task
        assert resp.status == 201, await resp.text()
        data = await resp.json()
        assert data["entries"] == data["streams_created"] == 50_000
        assert answered_during >= 3
        text = await export(proxy, f"/playlists/{data['playlist_id']}.m3u", group="Group 7")
        assert len(parse_m3u(text).entries) == 1000
        everything = await export(proxy, "/playlist.m3u")
        assert everything.count("#EXTINF") == 50_000

    async def test_large_content_body_imports(self, proxy_factory: ProxyFactory) -> None:
        """A content import of a few megabytes (within max_body_size) is accepted whole."""
        proxy = await proxy_factory(server={"max_body_size": 64 * 1_048_576})
        body = json.dumps({"name": "big", "content": generated(20_000)}).encode()
        # A file-like body: aiohttp warns about (and would block on) large raw bytes.
        resp = await proxy.post(
            "/playlists", data=io.BytesIO(body), headers={"Content-Type": "application/json"}
        )
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["entries"] == 20_000
