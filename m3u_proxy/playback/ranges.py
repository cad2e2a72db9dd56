"""Byte-range arithmetic for VOD playback and resumption (sans-io: ints and strings).

A VOD player gets one body; when the provider drops mid-body the pump reopens the
same file (or a mirror) at the first byte not yet served and continues the same
response. These functions say where a provider's answer starts, where the promised
body ends, which ``Range`` asks for the rest, and whether an answer really continues
the file at that byte (RFC 9110 section 14).
"""

import re

import attrs

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@attrs.frozen
class ContentRange:
    """A ``Content-Range: bytes first-last/total`` header (``total`` None for ``*``)."""

    first: int
    last: int
    total: int | None


def parse_content_range(header: str | None) -> ContentRange | None:
    """The byte range an answer carries, or None if the header is absent or malformed."""
    match = _CONTENT_RANGE.fullmatch(header or "")
    if match is None:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return ContentRange(int(match.group(1)), int(match.group(2)), total)


@attrs.frozen
class Span:
    """Where a provider's body sits in the whole file."""

    start: int  # absolute offset of the body's first byte
    total: int | None  # size of the whole file, when known
    length: int | None  # body bytes this answer promises (its Content-Length)

    @property
    def end(self) -> int | None:
        """The absolute offset after the last byte promised, when known."""
        return None if self.length is None else self.start + self.length


def span_of(status: int, content_range: str | None, content_length: int | None) -> Span:
    """A 206 starts where its Content-Range says; any other answer is the whole file."""
    parsed = parse_content_range(content_range)
    if status == 206 and parsed is not None:
        return Span(parsed.first, parsed.total, content_length)
    return Span(0, content_length, content_length)


def resume_range(offset: int, body_end: int | None) -> str:
    """The ``Range`` that asks for the rest of the player's body from ``offset``."""
    end = "" if body_end is None else body_end - 1
    return f"bytes={offset}-{end}"


def resumes_at(status: int, span: Span, offset: int, total: int | None) -> bool:
    """Does an answer continue the same file (same size, when known) at ``offset``?"""
    same_total = total is None or span.total == total
    return status == 206 and span.start == offset and same_total


def rereads_from_start(status: int, span: Span, total: int | None, body_end: int | None) -> bool:
    """Is an answer the whole file again (a provider that ignores Range), so a resume
    can read and drop the bytes already served? Only for the same file (same size) when
    the player asked to its end."""
    to_end = body_end is None or body_end == total
    return status == 200 and total is not None and span.total == total and to_end


def resume_offset(first_start: int, sent: int) -> int:
    """The absolute byte after the last one the player got."""
    return first_start + sent


def is_complete(first_start: int, sent: int, body_end: int | None) -> bool:
    """The player has every byte the first answer promised."""
    return body_end is not None and first_start + sent >= body_end
