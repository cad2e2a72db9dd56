"""Sans-io rewriting of HLS playlists (RFC 8216 and the Low-Latency HLS additions).

The proxy hands every playlist it relays to :func:`rewrite_playlist`, which swaps each
URI the playlist references (variant and rendition playlists, media segments, partial
segments, keys, init sections, session data, steering servers) for one chosen by the
caller, so that players fetch everything through the proxy. The playlist is never
parsed into a model and re-serialised: the text is edited in place and every byte
that is not a replaced URI (other tags, attribute order, comments, blank lines, each
line's own terminator, a leading BOM, a missing final newline) comes out unchanged.

:func:`playlist_info` extracts the few facts the proxy needs to decide how to cache
and refresh a playlist, and :func:`looks_like_playlist` sniffs a response body.

Everything here is pure string work: no sockets, no event loop, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Literal, NamedTuple
from urllib.parse import urljoin

import attrs

__all__ = ["PlaylistInfo", "UriKind", "looks_like_playlist", "playlist_info", "rewrite_playlist"]

UriKind = Literal["playlist", "segment", "part", "hint", "key", "map", "other"]

# Captures the terminators so that joining the pieces back gives the exact input:
# even indexes hold line contents, odd indexes the terminator that ended each line.
_LINE_SPLIT = re.compile(r"(\r\n|\n|\r)")

_BOM = "\ufeff"

# Shapes for which urljoin's answer is known without calling it (see _Resolver). Both
# exclude what urljoin would alter: control characters and spaces, ";params" in the
# path, and an empty query or fragment ("a.ts?" loses its "?").
_QUERY_FRAGMENT = r"(?:\?[^#\x00-\x20\x7f]+)?(?:#[^\x00-\x20\x7f]+)?\Z"
# A lower-case http(s) URL with a plain ASCII authority (no IPv6 brackets to validate).
_PLAIN_ABSOLUTE = re.compile(
    r"https?://[A-Za-z0-9._~%!$&'()*+,=:@-]+(?:/[^?#;\x00-\x20\x7f]*)?" + _QUERY_FRAGMENT
)
# A relative path with no scheme and no empty, "." or ".." segments.
_SEGMENT = r"(?!\.\.?(?:[/?#]|\Z))[^/?#;:\x00-\x20\x7f]+"
_PLAIN_RELATIVE = re.compile(_SEGMENT + "(?:/" + _SEGMENT + ")*" + _QUERY_FRAGMENT)

# Tags that carry a URI in an attribute: tag name -> (attribute name, kind).
# EXT-X-PRELOAD-HINT is a "hint" (a part the provider may still be making: fetching it
# blocks until it is ready), or a "map" for TYPE=MAP.
_URI_TAGS: dict[str, tuple[str, UriKind]] = {
    "#EXT-X-MEDIA": ("URI", "playlist"),
    "#EXT-X-I-FRAME-STREAM-INF": ("URI", "playlist"),
    "#EXT-X-RENDITION-REPORT": ("URI", "playlist"),
    "#EXT-X-PART": ("URI", "part"),
    "#EXT-X-PRELOAD-HINT": ("URI", "hint"),
    "#EXT-X-KEY": ("URI", "key"),
    "#EXT-X-SESSION-KEY": ("URI", "key"),
    "#EXT-X-MAP": ("URI", "map"),
    "#EXT-X-SESSION-DATA": ("URI", "other"),
    "#EXT-X-CONTENT-STEERING": ("SERVER-URI", "other"),
}

_MASTER_TAGS = frozenset({"#EXT-X-STREAM-INF", "#EXT-X-I-FRAME-STREAM-INF", "#EXT-X-MEDIA"})

_BYTES_BOM = b"\xef\xbb\xbf"
_SNIFF_LIMIT = 1024


@attrs.frozen
class PlaylistInfo:
    """The facts about a playlist that drive caching and refresh decisions."""

    is_master: bool
    """Has EXT-X-STREAM-INF, EXT-X-I-FRAME-STREAM-INF or EXT-X-MEDIA and no EXTINF."""
    target_duration: float | None
    """The EXT-X-TARGETDURATION value, or None when absent or unparseable."""
    ended: bool
    """EXT-X-ENDLIST is present (VOD or a finished live event)."""


class _Attribute(NamedTuple):
    name: str
    start: int  # span of the value in the line, including its quotes if quoted
    end: int
    value: str  # the value without quotes or surrounding whitespace


def _attributes(line: str, start: int) -> Iterator[_Attribute]:
    """Tokenize an attribute list (``NAME=value,NAME="quoted,value"``) from `start`."""
    pos, size = start, len(line)
    while pos < size:
        eq = line.find("=", pos)
        if eq < 0:
            return
        stray_comma = line.find(",", pos, eq)
        if stray_comma >= 0:  # a valueless token such as "FOO,": skip it
            pos = stray_comma + 1
            continue
        name = line[pos:eq].strip()
        vstart = eq + 1
        while vstart < size and line[vstart] in " \t":
            vstart += 1
        if vstart < size and line[vstart] == '"':
            close = line.find('"', vstart + 1)
            if close < 0:  # unterminated quote: the value runs to the end of the line
                vend, value, comma = size, line[vstart + 1 :], -1
            else:
                vend, value, comma = close + 1, line[vstart + 1 : close], line.find(",", close)
            value = value.strip()
        else:
            comma = line.find(",", vstart)
            raw = line[vstart : size if comma < 0 else comma]
            value = raw.rstrip()
            vend = vstart + len(value)
        yield _Attribute(name, vstart, vend, value)
        if comma < 0:
            return
        pos = comma + 1


def _tag_name(stripped: str) -> str:
    colon = stripped.find(":")
    return stripped if colon < 0 else stripped[:colon]


def _is_http(url: str) -> bool:
    return url[:8].lower().startswith(("http://", "https://"))


class _Resolver:
    """``urljoin(base_url, uri)`` restricted to http(s) results, with exact fast paths.

    urljoin costs several microseconds a call. Two shapes cover nearly every real
    playlist and provably resolve to the same string urljoin would return, so they
    skip it: an absolute http(s) URL that urljoin would hand back unchanged, and a
    plain relative path that urljoin would append to the base's directory (computed
    once, by urljoin itself). Anything else goes through urljoin.
    """

    __slots__ = ("_base_url", "_directory")

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        probe = self._join("x") or ""
        self._directory = probe[:-1] if probe.endswith("/x") else None

    def _join(self, uri: str) -> str | None:
        try:
            absolute = urljoin(self._base_url, uri)
        except ValueError:  # e.g. an unbalanced "[" in the host part
            return None
        return absolute if _is_http(absolute) else None

    def __call__(self, uri: str) -> str | None:
        """Return `uri` made absolute, or None if it is not http(s) or cannot be parsed."""
        if _PLAIN_ABSOLUTE.match(uri):
            return uri
        if self._directory is not None and _PLAIN_RELATIVE.match(uri):
            return self._directory + uri
        return self._join(uri)


def _rewrite_tag(
    line: str,
    name: str,
    resolve: _Resolver,
    make_uri: Callable[[str, UriKind], str],
) -> str:
    attr_name, kind = _URI_TAGS[name]
    attrs_start = line.find(":") + 1
    if attrs_start == 0:
        return line
    parsed = list(_attributes(line, attrs_start))
    if name == "#EXT-X-PRELOAD-HINT":
        hint_type = next((a.value for a in parsed if a.name == "TYPE"), "PART")
        kind = "map" if hint_type == "MAP" else "hint"
    pieces: list[str] = []
    cursor = 0
    for attr in parsed:
        if attr.name != attr_name or not attr.value:
            continue
        absolute = resolve(attr.value)
        if absolute is None:
            continue
        pieces.extend((line[cursor : attr.start], '"', make_uri(absolute, kind), '"'))
        cursor = attr.end
    if not pieces:
        return line
    pieces.append(line[cursor:])
    return "".join(pieces)


def rewrite_playlist(text: str, base_url: str, make_uri: Callable[[str, UriKind], str]) -> str:
    """Return `text` with every URI replaced by make_uri(absolute_upstream_url, kind).

    `base_url` is the URL the playlist was finally served from (after redirects);
    relative URIs are resolved against it with :func:`urllib.parse.urljoin`. URIs that
    are not http(s) once resolved (``data:``, ``skd:`` ...) are kept as they are and
    `make_uri` is not called for them. A replaced attribute value is always written
    quoted, so `make_uri` must not return a string containing a double quote or a
    line break. Everything other than the replaced URIs is preserved byte for byte.
    """
    parts = _LINE_SPLIT.split(text)
    bom = parts[0].startswith(_BOM)
    if bom:
        parts[0] = parts[0][len(_BOM) :]
    resolve = _Resolver(base_url)
    expect_variant = False
    for index in range(0, len(parts), 2):
        line = parts[index]
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            name = _tag_name(stripped)
            if name == "#EXT-X-STREAM-INF":
                expect_variant = True
            elif name in _URI_TAGS:
                parts[index] = _rewrite_tag(line, name, resolve, make_uri)
            continue
        kind: UriKind = "playlist" if expect_variant else "segment"
        expect_variant = False
        absolute = resolve(stripped)
        if absolute is None:
            continue
        lead = len(line) - len(line.lstrip())
        trail = len(line.rstrip())
        parts[index] = line[:lead] + make_uri(absolute, kind) + line[trail:]
    if bom:
        parts[0] = _BOM + parts[0]
    return "".join(parts)


def playlist_info(text: str) -> PlaylistInfo:
    """Report whether `text` is a master playlist, its target duration and whether it ended."""
    has_master_tag = has_extinf = ended = False
    target_duration: float | None = None
    for line in _LINE_SPLIT.split(text.removeprefix(_BOM))[::2]:
        stripped = line.strip()
        if not stripped.startswith("#EXT"):
            continue
        name = _tag_name(stripped)
        if name == "#EXTINF":
            has_extinf = True
        elif name in _MASTER_TAGS:
            has_master_tag = True
        elif name == "#EXT-X-ENDLIST":
            ended = True
        elif name == "#EXT-X-TARGETDURATION":
            target_duration = _parse_duration(stripped[len(name) + 1 :])
    return PlaylistInfo(
        is_master=has_master_tag and not has_extinf,
        target_duration=target_duration,
        ended=ended,
    )


def _parse_duration(value: str) -> float | None:
    try:
        duration = float(value.strip())
    except ValueError:
        return None
    # float() also accepts "nan" and "inf", which are no use as a refresh interval.
    return duration if 0 <= duration < float("inf") else None


def looks_like_playlist(body: bytes | bytearray) -> bool:
    """Tell whether `body` starts with ``#EXTM3U`` after an optional UTF-8 BOM and whitespace.

    Only the first kilobyte is examined, so this is cheap to call on large bodies.
    """
    head = bytes(body[:_SNIFF_LIMIT]).lstrip()
    if head.startswith(_BYTES_BOM):
        head = head[len(_BYTES_BOM) :].lstrip()
    return head.startswith(b"#EXTM3U")
