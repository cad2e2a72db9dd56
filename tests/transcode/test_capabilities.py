"""ffmpeg version and acceleration detection for ``/info``: once, and safe without ffmpeg."""

import shutil

from m3u_proxy.transcode.capabilities import Capabilities, parse_version


class TestCapabilities:
    def test_parse_version(self) -> None:
        """The version is the third word of ``ffmpeg -version``'s first line."""
        assert parse_version("ffmpeg version 5.1.6-0+deb12u1 Copyright (c) 2000\n") == (
            "5.1.6-0+deb12u1"
        )
        assert parse_version("something else\n") is None
        assert parse_version("") is None

    async def test_real_ffmpeg_is_found_once(self) -> None:
        """With ffmpeg installed its version is reported, and asking again reuses it."""
        capabilities = Capabilities()
        first = await capabilities.get()
        assert first.ffmpeg_version
        assert shutil.which("ffmpeg") is not None
        assert await capabilities.get() is first
        await capabilities.close()

    async def test_missing_ffmpeg_is_null(self) -> None:
        """Without ffmpeg the version is None and no acceleration is claimed."""
        capabilities = Capabilities(None, look_up=False)
        detected = await capabilities.get()
        assert detected.ffmpeg_version is None
        assert detected.hardware.enabled is False
        await capabilities.close()

    async def test_binary_that_is_not_ffmpeg(self) -> None:
        """A binary that prints something else gives a null version, not an error."""
        capabilities = Capabilities(shutil.which("true"))
        assert (await capabilities.get()).ffmpeg_version is None
        await capabilities.close()
