"""Validation of URLs and headers shared by streams, webhooks and playlists."""

import pytest

from m3u_proxy.checks import MAX_URL_LENGTH, check_header_value, check_headers, check_url
from m3u_proxy.errors import ValidationFailed


class TestCheckUrl:
    def test_http_and_https_urls_pass(self) -> None:
        """Absolute http(s) URLs with a host are returned unchanged."""
        for url in ("http://a.tv/x.ts", "https://a.tv:8443/live/1?x=y"):
            assert check_url("url", url) == url

    @pytest.mark.parametrize(
        "value",
        [None, "", 5, "ftp://a.tv/x", "http:///x", "http://a.tv/x y", "http://a.tv:99999/", "/x"],
    )
    def test_refused(self, value: object) -> None:
        """Non-strings, other schemes, no host, whitespace and bad ports are 422s."""
        with pytest.raises(ValidationFailed) as caught:
            check_url("url", value)
        assert caught.value.field == "url"

    def test_length_bound(self) -> None:
        """A URL longer than MAX_URL_LENGTH is refused."""
        with pytest.raises(ValidationFailed):
            check_url("url", "http://a.tv/" + "x" * MAX_URL_LENGTH)


class TestCheckHeaders:
    def test_headers_pass_and_empty_forms_are_empty(self) -> None:
        """A map of strings passes; null and PHP's [] mean no headers."""
        assert check_headers("headers", {"Referer": "http://p/"}) == {"Referer": "http://p/"}
        assert check_headers("headers", None) == {}
        assert check_headers("headers", []) == {}

    @pytest.mark.parametrize(
        "value", [{"X": "a\r\nInjected: 1"}, {"Bad Name": "v"}, {"X": 5}, ["a"]]
    )
    def test_injection_and_bad_shapes_are_refused(self, value: object) -> None:
        """CR/LF in a value, a space in a name, non-strings and lists are 422s."""
        with pytest.raises(ValidationFailed):
            check_headers("headers", value)

    def test_nul_in_a_value(self) -> None:
        """A NUL byte in a header value is refused."""
        with pytest.raises(ValidationFailed):
            check_header_value("user_agent", "a\0b")
