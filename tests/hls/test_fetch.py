"""LL-HLS delivery directives as the proxy reads and forwards them (no I/O)."""

import pytest

from m3u_proxy.hls.fetch import directives, with_query, without_directives


class TestDirectives:
    def test_only_the_three_directives_are_kept_in_their_order(self) -> None:
        """_HLS_msn, _HLS_part and _HLS_skip pass; player labels stay behind."""
        query = {"client_id": "tv", "_HLS_skip": "v2", "_HLS_part": "2", "_HLS_msn": "41"}
        assert list(directives(query).items()) == [
            ("_HLS_msn", "41"),
            ("_HLS_part", "2"),
            ("_HLS_skip", "v2"),
        ]

    def test_no_directive_is_an_ordinary_reload(self) -> None:
        """A request without directives forwards nothing."""
        assert directives({"client_id": "tv"}) == {}

    @pytest.mark.parametrize(
        "query",
        [
            {"_HLS_msn": "-1"},
            {"_HLS_msn": "1.5"},
            {"_HLS_msn": "9" * 19},
            {"_HLS_part": "0"},
            {"_HLS_msn": "3", "_HLS_part": "x"},
            {"_HLS_skip": "yes"},
        ],
    )
    def test_malformed_directives_are_refused(self, query: dict[str, str]) -> None:
        """Negative, fractional, huge or orphaned numbers and unknown skip values raise."""
        with pytest.raises(ValueError, match="_HLS_"):
            directives(query)


class TestWithQuery:
    def test_appends_to_a_url_with_or_without_a_query(self) -> None:
        """Directives follow the provider URL's own query (tokens stay intact)."""
        params = {"_HLS_msn": "5", "_HLS_part": "1"}
        assert with_query("http://p/a.m3u8", params) == "http://p/a.m3u8?_HLS_msn=5&_HLS_part=1"
        assert with_query("http://p/a.m3u8?t=x", params) == (
            "http://p/a.m3u8?t=x&_HLS_msn=5&_HLS_part=1"
        )
        assert with_query("http://p/a.m3u8", {}) == "http://p/a.m3u8"

    def test_directives_come_off_again(self) -> None:
        """A redirected blocking reload's URL is remembered without the directives."""
        assert without_directives("http://p/a.m3u8?_HLS_msn=5&_HLS_part=1") == "http://p/a.m3u8"
        assert without_directives("http://p/a.m3u8?t=x&_HLS_skip=YES") == "http://p/a.m3u8?t=x"
        assert without_directives("http://p/a.m3u8?t=x") == "http://p/a.m3u8?t=x"
