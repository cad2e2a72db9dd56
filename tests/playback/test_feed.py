"""What a provider's answer tells the pump: the content type a player gets."""

import pytest

from m3u_proxy.playback.feed import content_type_for


class TestContentType:
    @pytest.mark.parametrize(
        ("url", "live", "expected"),
        [
            ("http://p.tv/live/1.ts", True, "video/mp2t"),
            ("http://p.tv/movie/a.mkv", False, "video/x-matroska"),
            ("http://p.tv/movie/a.mp4?token=x", False, "video/mp4"),
            ("http://p.tv/live/1", True, "video/mp2t"),
            ("http://p.tv/vod/42", False, "application/octet-stream"),
        ],
    )
    def test_from_the_url(self, url: str, live: bool, expected: str) -> None:
        """The extension decides; without one, live is MPEG-TS and VOD is plain bytes."""
        assert content_type_for(url, live) == expected
