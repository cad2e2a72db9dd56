"""Real media made by ffmpeg for tests: HLS folders of every shape, TS and MP4 files."""

import shutil
import subprocess
from pathlib import Path

import pytest

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None or FFPROBE is None,
    reason="ffmpeg/ffprobe not installed (apt-get install ffmpeg)",
)
AES_KEY = bytes(range(16))

_CODECS = [
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-g",
    "10",
    "-c:a",
    "aac",
    "-b:a",
    "64k",
]


def ffmpeg(*args: str) -> None:
    assert FFMPEG is not None
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True, timeout=120)


# One-second VOD segments: many segments from a six-second source.
_HLS_VOD = ["-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod"]


def make_hls_folders(root: Path) -> Path:
    """ts/, fmp4/, aes/, single/ and variants/ HLS folders below ``root``."""
    hls = [*_lavfi(6, "160x120", 10), *_CODECS, *_HLS_VOD]
    for name in ("ts", "fmp4", "aes", "single", "variants"):
        (root / name).mkdir(parents=True, exist_ok=True)
    ffmpeg(*hls, str(root / "ts" / "index.m3u8"))
    ffmpeg(*hls, "-hls_segment_type", "fmp4", str(root / "fmp4" / "index.m3u8"))
    key_path = root / "aes" / "enc.key"
    key_path.write_bytes(AES_KEY)
    info = root / "keyinfo"
    # Relative key URI: the rewriter must resolve it against the playlist URL.
    info.write_text(f"enc.key\n{key_path}\n")
    ffmpeg(*hls, "-hls_key_info_file", str(info), str(root / "aes" / "index.m3u8"))
    ffmpeg(*hls, "-hls_flags", "single_file", str(root / "single" / "index.m3u8"))
    ffmpeg(
        *_lavfi(6, "160x120", 10),
        "-filter_complex",
        "[0:v]split=2[a][b];[b]scale=80:60[small]",
        "-map",
        "[a]",
        "-map",
        "1:a",
        "-map",
        "[small]",
        "-map",
        "1:a",
        *_CODECS,
        *_HLS_VOD,
        "-master_pl_name",
        "master.m3u8",
        "-var_stream_map",
        "v:0,a:0 v:1,a:1",
        "-hls_segment_filename",
        str(root / "variants" / "v%v_%03d.ts"),
        str(root / "variants" / "v%v.m3u8"),
    )
    return root


def _lavfi(seconds: int, size: str, rate: int) -> list[str]:
    """Test picture and tone of ``seconds`` as ffmpeg inputs."""
    return [
        *("-f", "lavfi", "-i", f"testsrc=duration={seconds}:size={size}:rate={rate}"),
        *("-f", "lavfi", "-i", f"sine=duration={seconds}"),
    ]


def make_ts_file(path: Path, seconds: int = 6) -> Path:
    """A real MPEG-TS (H.264 + AAC) that ffprobe recognises."""
    ffmpeg(*_lavfi(seconds, "160x120", 10), *_CODECS, "-f", "mpegts", str(path))
    return path


def make_mp4_file(path: Path, seconds: int = 10) -> Path:
    """A real MP4 with the index at the front, so a player can seek over HTTP."""
    # ~2 Mbit/s: big enough that a player seeks with a Range request instead of reading on.
    src = _lavfi(seconds, "320x240", 25)
    ffmpeg(*src, *_CODECS, "-b:v", "2M", "-movflags", "+faststart", str(path))
    return path


def play(url: str, *extra: str, seconds: float = 4) -> subprocess.CompletedProcess[str]:
    """Decode ``url`` with ffmpeg for a few seconds; errors end up in stderr."""
    assert FFMPEG is not None
    return subprocess.run(
        [FFMPEG, "-v", "error", *extra, "-i", url, "-t", str(seconds), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _hd(seconds: int, rate: int) -> list[str]:
    """A 720p moving test picture and a tone: real HD frame sizes."""
    return [
        *("-f", "lavfi", "-i", f"testsrc2=duration={seconds}:size=1280x720:rate={rate}"),
        *("-f", "lavfi", "-i", f"sine=duration={seconds}"),
    ]


def make_hd_hls(root: Path, seconds: int = 10) -> Path:
    """720p HLS in 2-second MPEG-TS segments of about 1.9 MB each (``index.m3u8``)."""
    root.mkdir(parents=True, exist_ok=True)
    codecs = [*_CODECS[:4], "-g", "25", "-qp", "18", *_CODECS[6:]]
    hls = ["-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod"]
    ffmpeg(*_hd(seconds, 25), *codecs, *hls, str(root / "index.m3u8"))
    return root / "index.m3u8"


def make_hd_mp4(path: Path, seconds: int = 40) -> Path:
    """A 720p MP4 of about 5 MB, index at the front: long enough for ``-ss 30``."""
    codecs = [*_CODECS[:4], "-g", "20", "-qp", "36", *_CODECS[6:]]
    ffmpeg(*_hd(seconds, 10), *codecs, "-movflags", "+faststart", str(path))
    return path
