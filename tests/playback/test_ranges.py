"""Range arithmetic for VOD resumption, without a loop or a socket."""

import pytest

from m3u_proxy.playback.ranges import (
    ContentRange,
    Span,
    is_complete,
    parse_content_range,
    resume_offset,
    resume_range,
    resumes_at,
    span_of,
)


class TestParseContentRange:
    def test_a_full_header(self) -> None:
        """First, last and total byte come out as integers."""
        assert parse_content_range("bytes 100-199/1000") == ContentRange(100, 199, 1000)

    def test_unknown_total(self) -> None:
        """A ``*`` total is None."""
        assert parse_content_range("bytes 0-9/*") == ContentRange(0, 9, None)

    @pytest.mark.parametrize(
        "header", [None, "", "bytes */1000", "items 0-9/10", "bytes 0-9/10 ", "bytes=0-9/10"]
    )
    def test_malformed_or_absent(self, header: str | None) -> None:
        """Anything that is not a satisfied byte range is None."""
        assert parse_content_range(header) is None


class TestSpanOf:
    def test_partial_answer_starts_where_it_says(self) -> None:
        """A 206 sits at its Content-Range start in a file of its stated size."""
        span = span_of(206, "bytes 500-999/2000", 500)
        assert span == Span(500, 2000, 500)
        assert span.end == 1000

    def test_whole_answer(self) -> None:
        """A 200 is the whole file: it starts at 0 and its length is the size."""
        assert span_of(200, None, 4096) == Span(0, 4096, 4096)

    def test_range_header_on_a_200_is_ignored(self) -> None:
        """A Content-Range on a 200 does not move the start (only 206 means partial)."""
        assert span_of(200, "bytes 500-999/2000", 2000).start == 0

    def test_partial_answer_with_a_broken_header(self) -> None:
        """A 206 whose Content-Range cannot be read is taken as starting at 0."""
        assert span_of(206, "bytes nonsense", 10) == Span(0, 10, 10)

    def test_no_length_means_no_end(self) -> None:
        """Without Content-Length the body's end is unknown."""
        assert span_of(200, None, None).end is None


class TestResume:
    def test_range_for_the_rest_of_a_bounded_body(self) -> None:
        """The request for the rest ends at the last byte promised."""
        assert resume_range(1234, 2000) == "bytes=1234-1999"

    def test_range_for_the_rest_of_an_open_body(self) -> None:
        """Without a known end the request is open-ended."""
        assert resume_range(1234, None) == "bytes=1234-"

    def test_offset_counts_from_the_first_byte_served(self) -> None:
        """A player that started at 500 and got 100 bytes resumes at 600."""
        assert resume_offset(500, 100) == 600

    def test_a_mirror_that_continues_the_file(self) -> None:
        """A 206 at the offset of a file of the same size continues it."""
        assert resumes_at(206, Span(600, 2000, 1400), 600, 2000)

    @pytest.mark.parametrize(
        ("status", "span", "why"),
        [
            (200, Span(0, 2000, 2000), "whole file again"),
            (206, Span(0, 2000, 2000), "wrong start"),
            (206, Span(600, 3000, 2400), "another file"),
        ],
    )
    def test_answers_that_do_not_continue(self, status: int, span: Span, why: str) -> None:
        """A whole-file answer, a wrong start or another file's size is refused."""
        assert not resumes_at(status, span, 600, 2000), why

    def test_unknown_size_accepts_any_total(self) -> None:
        """When the first answer gave no size, a correct start is enough."""
        assert resumes_at(206, Span(600, 5000, 100), 600, None)


class TestComplete:
    def test_complete_at_the_promised_end(self) -> None:
        """Every promised byte sent means the body is complete."""
        assert is_complete(500, 500, 1000)
        assert not is_complete(500, 499, 1000)

    def test_never_complete_without_an_end(self) -> None:
        """A body of unknown length is never known to be complete."""
        assert not is_complete(0, 10**9, None)
