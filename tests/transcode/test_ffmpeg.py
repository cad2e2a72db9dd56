"""The ffmpeg supervisor with the real binary: bytes in, MPEG-TS out, nothing left behind."""

import asyncio
import subprocess
from pathlib import Path

import pytest

from m3u_proxy.transcode.ffmpeg import INPUT_ARGS, Ffmpeg, MediaInfo
from m3u_proxy.transcode.profiles import expand, resolve
from tests.media import FFMPEG, make_ts_file, needs_ffmpeg


def argv(profile: str) -> list[str]:
    _, tokens, _ = resolve(profile, {})
    return [*INPUT_ARGS, *expand(tokens, input_url="pipe:0", output_args=["pipe:1"], hwaccel=[])]


async def feed(process: Ffmpeg, data: bytes) -> None:
    for start in range(0, len(data), 16 * 1024):
        await process.write(data[start : start + 16 * 1024])
    process.close_input()


async def read_all(process: Ffmpeg) -> bytes:
    out = bytearray()
    while chunk := await process.read(65536):
        out += chunk
    return bytes(out)


def probe(path: Path) -> str:
    assert FFMPEG is not None
    done = subprocess.run(
        [
            str(Path(FFMPEG).with_name("ffprobe")),
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout


@needs_ffmpeg
class TestFfmpeg:
    @pytest.mark.parametrize(
        ("profile", "codecs"), [("remux", {"h264", "aac"}), ("h264_aac", {"h264", "aac"})]
    )
    async def test_a_profile_turns_provider_bytes_into_decodable_ts(
        self, tmp_path: Path, profile: str, codecs: set[str]
    ) -> None:
        """Provider bytes written to stdin come out as MPEG-TS that ffprobe decodes,
        and stderr yields the input's media info and progress."""
        source = make_ts_file(tmp_path / "in.ts", seconds=3).read_bytes()
        process = Ffmpeg(argv(profile))
        await process.start()
        _, output = await asyncio.gather(feed(process, source), read_all(process))
        assert await process.wait() == 0
        (tmp_path / "out.ts").write_bytes(output)
        assert set(probe(tmp_path / "out.ts").split()) == codecs
        assert process.info.input["video_codec"] == "h264"
        assert process.info.input["resolution"] == "160x120"
        assert "speed" in process.info.output()

    async def test_stop_leaves_no_process(self, tmp_path: Path) -> None:
        """A running ffmpeg that is stopped mid-stream is gone from /proc afterwards."""
        process = Ffmpeg(argv("h264_aac"))
        await process.start()
        assert process.pid is not None
        await process.write(make_ts_file(tmp_path / "in.ts", seconds=1).read_bytes()[:50_000])
        await process.stop(grace=1.0)
        assert not await asyncio.to_thread(Path(f"/proc/{process.pid}").exists)
        assert not process.running

    async def test_a_bad_input_leaves_its_error_line(self) -> None:
        """ffmpeg's last error line is kept for stream_failed when it cannot decode."""
        process = Ffmpeg(argv("h264_aac"))
        await process.start()
        await feed(process, b"this is not a transport stream" * 1000)
        await read_all(process)
        assert await process.wait() != 0
        assert process.info.last_error


class TestMediaInfo:
    def test_stream_lines_and_progress_blocks_are_read(self) -> None:
        """Input stream lines give media_info; a finished progress block gives output info."""
        info = MediaInfo()
        for line in (
            "  Duration: N/A, start: 1.4, bitrate: 4500 kb/s",
            "  Stream #0:0[0x100]: Video: h264 (High) ([27][0][0][0] / 0x001B), yuv420p, "
            "1280x720, 25 fps, 25 tbr",
            "  Stream #0:1[0x101](und): Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, "
            "stereo, fltp",
            "fps=24.8",
            "bitrate=3012.5kbits/s",
            "speed=1.01x",
            "progress=continue",
            "[mpegts @ 0x1] Packet corrupt",
            "stream_0_0_q=28.0",  # a progress key per output stream, not an error
        ):
            info.feed_line(line)
        assert info.input == {
            "bitrate_kbps": 4500,
            "video_codec": "h264",
            "resolution": "1280x720",
            "fps": 25.0,
            "audio_codec": "aac",
            "audio_channels": "stereo",
        }
        assert info.output() == {"fps": 24.8, "speed": 1.01, "bitrate_kbps": 3012.5}
        assert info.last_error == "[mpegts @ 0x1] Packet corrupt"
