"""Transcoding handlers (API.md "Transcoding"): registration, profiles, playback.

``POST /transcode`` checks the profile before anything is stored or started (a bad one
is a 422 naming the problem). Playback joins the transcode's shared channel
(MPEG-TS) or its HLS directory; `transcode.session` runs ffmpeg. ffmpeg's input is the
proxy's own per-viewer pump (`playback.transcode_feed`): the same chain walk, splice and failover a
player gets, written into ffmpeg's stdin instead of a socket.
"""

import asyncio
import contextlib
import re
from typing import Any

import attrs
from aiohttp import web

from m3u_proxy.errors import NotFound, UpstreamFailed, ValidationFailed
from m3u_proxy.handlers import hls, playback
from m3u_proxy.handlers.shared import new_pump, play_shared, prepared
from m3u_proxy.handlers.streams import describe
from m3u_proxy.keys import CONFIG, REGISTRY, SIGNER, TRACKER, TRANSCODES
from m3u_proxy.playback.pump import Pump
from m3u_proxy.playback.transcode_feed import chain_feed
from m3u_proxy.streams.registry import StreamDefinition, parse_definition, stream_id_for
from m3u_proxy.streams.runtime import ClientState
from m3u_proxy.transcode.profiles import BUILT_IN, ProfileError, check_variables, resolve
from m3u_proxy.transcode.session import SEGMENT_PATTERN, Feed, Job
from m3u_proxy.web.requests import check_playback_token, json_body, playback_path, player_of

PLAYLIST_WAIT = 20.0  # seconds a first HLS player waits for ffmpeg's first playlist
_SEGMENT = re.compile(SEGMENT_PATTERN)


class Unprocessable(ValidationFailed):
    """A profile that will not be run: the detail is the profile check's own sentence."""

    def __init__(self, problem: str) -> None:
        super().__init__("profile", problem)
        self.detail = problem
        self.args = (problem,)


# -- management --------------------------------------------------------------------------


def parse_transcode(body: Any) -> StreamDefinition:
    """The ``POST /streams`` body plus ``profile`` and ``profile_variables``, checked."""
    base = parse_definition(body)
    profile = body.get("profile")
    try:
        variables = check_variables(body.get("profile_variables"))
        _, _, output_format = resolve(profile, variables)
    except ProfileError as exc:
        raise Unprocessable(str(exc)) from exc
    assert isinstance(profile, str)  # resolve refuses anything else
    metadata = {**base.metadata, "transcoding": "true"}
    return attrs.evolve(
        base,
        stream_id=stream_id_for(base.url + profile),
        metadata=metadata,
        profile=profile,
        profile_variables=variables,
        profile_format=output_format,
    )


async def create_transcode(request: web.Request) -> web.Response:
    """``POST /transcode``: register (or update) a transcoded stream; nothing runs yet."""
    definition = parse_transcode(await json_body(request))
    existing = request.app[REGISTRY].get(definition.stream_id)
    if existing is not None:
        definition = attrs.evolve(definition, created_at=existing.created_at)
    created = await request.app[REGISTRY].save(definition)
    answer = describe(request, definition)
    answer["transcoding"] = True
    answer["profile"] = definition.profile
    return web.json_response(answer, status=201 if created else 200)


async def list_profiles(request: web.Request) -> web.Response:
    """``GET /transcode/profiles``: the built-in profiles."""
    return web.json_response({"profiles": {n: p.public() for n, p in BUILT_IN.items()}})


# -- the input: the proxy's own pump into ffmpeg's stdin ---------------------------------


def _feed(request: web.Request, definition: StreamDefinition) -> Feed:
    """The transcode's input (`playback.transcode_feed`): the stream's current chain."""
    registry, tracker = request.app[REGISTRY], request.app[TRACKER]

    def current() -> StreamDefinition:
        return registry.get(definition.stream_id) or definition

    def make(viewer: str) -> Pump:
        return new_pump(
            request,
            current(),
            tracker.runtime(definition.stream_id),
            viewer=viewer,
            client_range=None,
        )

    return chain_feed(make, current, tracker.runtime, tracker)


def _job(request: web.Request, definition: StreamDefinition) -> Job:
    try:
        _, tokens, output_format = resolve(definition.profile, definition.profile_variables)
    except ProfileError as exc:  # stored before a rule tightened: refuse it now
        raise Unprocessable(str(exc)) from exc
    return Job(definition.stream_id, tokens, output_format, _feed(request, definition))


# -- playback ------------------------------------------------------------------------------


def _hls_player(request: web.Request, definition: StreamDefinition) -> ClientState:
    """The HLS player behind a request (one client across its playlist and segments)."""
    return request.app[TRACKER].hls_client(definition, player_of(request))


def _definition(request: web.Request) -> StreamDefinition | None:
    return request.app[REGISTRY].get(request.match_info["stream_id"])


async def play_stream(request: web.Request) -> web.StreamResponse:
    """``GET|HEAD /stream/{id}``: a transcode's viewer, else the plain proxy."""
    definition = _definition(request)
    if definition is None or definition.profile is None:
        return await playback.play(request)
    check_playback_token(request, definition.stream_id)
    return await play(request, definition)


async def play_hls(request: web.Request) -> web.StreamResponse:
    """``GET|HEAD /hls/{id}/playlist.m3u8``: an HLS transcode's playlist, else the proxy's."""
    definition = _definition(request)
    if definition is None or definition.profile is None:
        return await hls.master_playlist(request)
    check_playback_token(request, definition.stream_id)
    return await hls_playlist(request, definition)


async def play(request: web.Request, definition: StreamDefinition) -> web.StreamResponse:
    """A viewer of the transcode's shared ffmpeg output."""
    if definition.profile_format == "hls":
        raise web.HTTPFound(playback_path(request, definition.stream_id, hls=True))
    if request.method == "HEAD":  # the headers a GET gets, without starting ffmpeg
        return await prepared(request, "video/mp2t")
    transcodes = request.app[TRANSCODES]
    job = _job(request, definition)
    runtime = request.app[TRACKER].runtime(definition.stream_id)
    # A shared viewer (handlers.shared) whose channel's producer is ffmpeg: joining,
    # kicks, deletion, stuck viewers and leaving work as for any shared stream.
    return await play_shared(request, definition, runtime, lambda: transcodes.producer(job))


async def _wait_playlist(request: web.Request, definition: StreamDefinition) -> bytes:
    """The HLS transcode's playlist, once ffmpeg has written its first one."""
    session = request.app[TRANSCODES].hls_session(_job(request, definition))
    async with asyncio.timeout(PLAYLIST_WAIT):
        while True:
            session.touch()  # a player waiting is a player asking
            with contextlib.suppress(FileNotFoundError):
                return await asyncio.to_thread(session.playlist().read_bytes)
            if session.done:
                raise UpstreamFailed(session.error or "the transcode ended before its playlist")
            await asyncio.sleep(0.2)


async def hls_playlist(request: web.Request, definition: StreamDefinition) -> web.Response:
    """``GET /hls/{id}/playlist.m3u8`` of an HLS transcode: ffmpeg's own playlist."""
    if definition.profile_format != "hls":
        raise web.HTTPFound(playback_path(request, definition.stream_id, hls=False))
    try:
        body = await _wait_playlist(request, definition)
    except TimeoutError as exc:
        raise UpstreamFailed("ffmpeg wrote no playlist in time") from exc
    client = _hls_player(request, definition)
    client.bytes_served += len(body)
    text = body.decode("utf-8", "replace")
    if request.app[CONFIG].auth.playback_auth:  # segment URLs carry the playlist's token
        token = request.app[SIGNER].playback_token(definition.stream_id)
        text = re.sub(rf"^({SEGMENT_PATTERN})$", rf"\1?token={token}", text, flags=re.M)
    return web.Response(
        text=text, content_type=hls.PLAYLIST_TYPE, headers={"Cache-Control": "no-cache"}
    )


async def hls_segment(request: web.Request) -> web.StreamResponse:
    """``GET /hls/{id}/seg_NNNNNN.ts``: a segment ffmpeg wrote, served by name only."""
    stream_id, name = request.match_info["stream_id"], request.match_info["name"]
    definition = request.app[REGISTRY].get(stream_id)
    session = request.app[TRANSCODES].hls.get(stream_id)
    if definition is None or session is None or not _SEGMENT.fullmatch(name):
        raise NotFound(f"no transcoded segment {name} for stream {stream_id}")
    check_playback_token(request, stream_id)
    session.touch()
    try:
        body = await asyncio.to_thread((session.directory / name).read_bytes)
    except FileNotFoundError as exc:
        raise NotFound(f"segment {name} is gone (or not written yet)") from exc
    _hls_player(request, definition).segments_served += 1
    return web.Response(body=body, content_type="video/mp2t")
