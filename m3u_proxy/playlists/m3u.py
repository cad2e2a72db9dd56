"""Sans-io parsing and writing of extended M3U IPTV playlists.

These are the channel lists providers hand out (``#EXTM3U`` / ``#EXTINF`` / URL), not HLS
media playlists. `parse_m3u` turns the text of one into `M3UEntry` values, tolerating the
shapes real playlists come in, and reports every line it had to drop as a `Skipped`;
`render_m3u` writes entries back out pointing at replacement URLs. Nothing here does I/O.

The parser is a single pass over the lines. Attribute lists are read with anchored
regular expressions using possessive quantifiers, and every ``str.find`` either moves past
what it found or ends the list, so the work stays linear in the size of the input (a
50,000-entry playlist parses in about a quarter of a second).
"""

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import unquote

from attrs import field, frozen

__all__ = [
    "M3UEntry",
    "ParseResult",
    "Skipped",
    "entry_group",
    "entry_headers",
    "normalise_name",
    "parse_m3u",
    "render_m3u",
]

NO_URL = "#EXTINF without a URL"
NOT_HTTP = "URL is not http(s)"

# KODIPROP keys whose value is a "Name=value&Name=value" header string, least specific first.
_HEADER_PROPS = (
    "inputstream.adaptive.common_headers",
    "inputstream.adaptive.manifest_headers",
    "inputstream.adaptive.stream_headers",
)
_VLC_HEADERS = {
    "http-user-agent": "User-Agent",
    "http-referrer": "Referer",
    "http-referer": "Referer",
    "http-origin": "Origin",
}
# Headers a playlist must not choose: the HTTP client owns framing and routing.
_FORBIDDEN_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te"}
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"^$|[\r\n\x00]")

_HTTP_URL = re.compile(r"https?://\S", re.IGNORECASE)
# Possessive quantifiers (no backtracking) keep every match linear in the line's length.
_DURATION = re.compile(r"\s*+([+-]?+\d++(?:\.\d++)?+)")
_KEY = re.compile(r"\s*+([^\s=,\"']++)\s*+=")
_ATTR_KEY = re.compile(r"[^\s=,\"']+")
# The usual shape: a duration, then only double-quoted attributes, then the comma.
_FAST_EXTINF = re.compile(r"\s*+([+-]?+\d++(?:\.\d++)?+)((?:\s*+[^\s=,\"']++=\"[^\"]*+\")*+)\s*+,")
_FAST_PAIR = re.compile(r"([^\s=,\"']++)=\"([^\"]*+)\"")
_BARE = re.compile(r"[^\s,]*+")
_SPACE = re.compile(r"\s*+")

_ENCLOSED = re.compile(r"\[[^[\]]*\]|\([^()]*\)|\|[^|\s]{1,4}\|")
_PIPE_PREFIX = re.compile(r"^\s*[^\W\d_]{2,3}\s*\|")
_NON_ALNUM = re.compile(r"[\W_]+")
_QUALITY = frozenset(
    {"sd", "hd", "fhd", "uhd", "qhd", "hdr", "4k", "8k", "hevc", "h264", "h265"}
    | {"720p", "1080p", "1080i", "2160p", "50fps", "60fps"}
)


@frozen
class M3UEntry:
    """One playable item: an ``#EXTINF`` (optional) plus its options and URL."""

    title: str
    url: str
    duration: str = "-1"
    attrs: dict[str, str] = field(factory=dict)
    vlc_options: dict[str, str] = field(factory=dict)
    kodi_props: dict[str, str] = field(factory=dict)
    group: str | None = None
    line_no: int = 0


@frozen
class Skipped:
    """A line the parser dropped, and why."""

    line_no: int
    reason: str
    text: str


@frozen
class ParseResult:
    """Everything read from one playlist."""

    entries: list[M3UEntry]
    skipped: list[Skipped]
    header_attrs: dict[str, str]


def _end(pattern: re.Pattern[str], s: str, pos: int) -> int:
    """Where a match of ``pattern`` (one that can match empty) starting at ``pos`` ends."""
    match = pattern.match(s, pos)
    return pos if match is None else match.end()


def _read_value(s: str, pos: int) -> tuple[str, int]:
    """The attribute value starting at ``s[pos]`` and the position after it."""
    quote = s[pos : pos + 1]
    if quote in ('"', "'"):
        close = s.find(quote, pos + 1)
        if close != -1:
            return s[pos + 1 : close], close + 1
        # Unterminated quote: the value runs to the next comma (which then ends the list).
        end = s.find(",", pos + 1)
        end = len(s) if end == -1 else end
        return s[pos + 1 : end].strip(), end
    end = _end(_BARE, s, pos)
    return s[pos:end], end


def _scan_attrs(s: str, pos: int) -> tuple[dict[str, str], str | None]:
    """``key=value`` pairs from ``s[pos:]``, and the text after the first comma outside
    quotes (None if there is none)."""
    found: dict[str, str] = {}
    end = len(s)
    while True:
        key = _KEY.match(s, pos)
        if key is not None:
            value, pos = _read_value(s, key.end())
            found[key.group(1)] = value
            continue
        pos = _end(_SPACE, s, pos)
        if pos >= end:
            return found, None
        char = s[pos]
        if char == ",":
            return found, s[pos + 1 :]
        if char in "\"'":  # a stray quoted word: skip it whole, or just the lone quote
            close = s.find(char, pos + 1)
            pos = pos + 1 if close == -1 else close + 1
        else:
            pos = _end(_BARE, s, pos)


def _parse_extinf(body: str) -> tuple[str, dict[str, str], str | None]:
    fast = _FAST_EXTINF.match(body)
    if fast is not None:
        return fast.group(1), dict(_FAST_PAIR.findall(fast.group(2))), body[fast.end() :].strip()
    match = _DURATION.match(body)
    duration, pos = (match.group(1), match.end()) if match else ("-1", 0)
    found, title = _scan_attrs(body, pos)
    return duration, found, None if title is None else title.strip()


def _title_from_url(url: str) -> str:
    """The decoded last path segment, else the host (no urlsplit: it raises on bad hosts)."""
    rest = url.partition("://")[2].partition("?")[0].partition("#")[0]
    host, _, path = rest.partition("/")
    segment = _one_line(unquote(path.rstrip("/").rpartition("/")[2]))
    return segment.strip() or host.strip() or url


def parse_m3u(text: str) -> ParseResult:
    """Parse an extended M3U playlist; never raises on malformed input."""
    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    entries: list[M3UEntry] = []
    skipped: list[Skipped] = []
    header: dict[str, str] = {}
    # The pending #EXTINF (line number, line, duration, attributes, title) and options;
    # options seen before an #EXTINF go to it, those after go to its URL.
    info: tuple[int, str, str, dict[str, str], str | None] | None = None
    vlc: dict[str, str] = {}
    kodi: dict[str, str] = {}
    group: str | None = None
    for line_no, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if line[0] == "#":
            tag = line[:11].upper()
            if tag.startswith("#EXTINF:"):
                if info is not None:  # the options read since belonged to it
                    skipped.append(Skipped(info[0], NO_URL, info[1]))
                    vlc, kodi, group = {}, {}, None
                info = (line_no, line, *_parse_extinf(line[8:]))
            elif tag.startswith(("#EXTVLCOPT:", "#KODIPROP:")):
                key, sep, value = line.partition(":")[2].partition("=")
                if sep and key.strip():
                    (vlc if tag[1] == "E" else kodi)[key.strip()] = value.strip()
            elif tag.startswith("#EXTGRP:"):
                group = line[8:].strip() or None
            elif tag.startswith("#EXTM3U"):
                header = _scan_attrs(line, 7)[0] | header  # a repeated header adds, not replaces
            continue
        if _HTTP_URL.match(line):
            title, duration, found = (info[4], info[2], info[3]) if info else (None, "-1", {})
            title = title or found.get("tvg-name", "").strip() or _title_from_url(line)
            entries.append(M3UEntry(title, line, duration, found, vlc, kodi, group, line_no))
        else:
            skipped.append(Skipped(line_no, NOT_HTTP, line))
        info, vlc, kodi, group = None, {}, {}, None
    if info is not None:
        skipped.append(Skipped(info[0], NO_URL, info[1]))
    return ParseResult(entries, skipped, header)


def _header_pairs(value: str) -> Iterator[tuple[str, str]]:
    for part in value.split("&"):
        name, sep, raw = part.partition("=")
        if sep:
            yield unquote(name).strip(), unquote(raw)


def entry_headers(entry: M3UEntry) -> tuple[str | None, dict[str, str]]:
    """(user_agent, extra headers) the entry asks for.

    Sources, later ones winning: KODIPROP ``inputstream.adaptive.common_headers``, then
    ``manifest_headers``, then ``stream_headers`` (url-encoded ``Name=value&...`` pairs),
    then EXTVLCOPT ``http-user-agent`` / ``http-referrer`` / ``http-origin``. Empty values,
    values containing CR, LF or NUL, names that are not HTTP tokens and framing headers
    (Host, Content-Length, Connection, ...) are dropped.
    """
    pairs: list[tuple[str, str]] = []
    kodi = {key.lower(): value for key, value in entry.kodi_props.items()}
    for prop in _HEADER_PROPS:
        if prop in kodi:
            pairs.extend(_header_pairs(kodi[prop]))
    for key, value in entry.vlc_options.items():
        if (name := _VLC_HEADERS.get(key.lower())) is not None:
            pairs.append((name, value))
    user_agent: str | None = None
    extra: dict[str, str] = {}
    for name, raw in pairs:
        value, lowered = raw.strip(), name.lower()
        if not _TOKEN.fullmatch(name) or lowered in _FORBIDDEN_HEADERS or _BAD_VALUE.search(value):
            continue
        if lowered == "user-agent":
            user_agent = value
            continue
        for existing in [key for key in extra if key.lower() == lowered]:
            del extra[existing]
        extra[name] = value
    return user_agent, extra


def entry_group(entry: M3UEntry) -> str | None:
    """The entry's group: its ``group-title`` attribute, else its ``#EXTGRP``."""
    return entry.attrs.get("group-title", "").strip() or entry.group


def normalise_name(name: str) -> str:
    """A key for matching one channel across providers.

    Casefolds, strips accents, drops ``[...]``, ``(...)`` and short ``|XX|`` decorations, a
    leading ``XX|`` country prefix, quality words (HD, FHD, UHD, 4K, SD, HEVC, 1080p, ...),
    punctuation and spaces: "BBC One HD", "bbc one" and "BBC  One (UK)" all give "bbcone".
    If nothing would be left, only punctuation and spaces are dropped.
    """
    # NFKD splits accents off as combining marks; not being word characters, they go
    # with the punctuation below.
    folded = unicodedata.normalize("NFKD", name.casefold())
    plain = _PIPE_PREFIX.sub(" ", _ENCLOSED.sub(" ", folded))
    words = [word for word in _NON_ALNUM.split(plain) if word and word not in _QUALITY]
    return "".join(words) or _NON_ALNUM.sub("", folded)


def _one_line(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")


def _render_attrs(attributes: Mapping[str, str]) -> str:
    parts: list[str] = []
    for key, raw in attributes.items():
        if not _ATTR_KEY.fullmatch(key):
            continue
        value = _one_line(raw)
        if '"' not in value:
            parts.append(f' {key}="{value}"')
        elif "'" not in value:
            parts.append(f" {key}='{value}'")
        else:
            parts.append(f' {key}="{value.replace(chr(34), chr(39))}"')
    return "".join(parts)


def render_m3u(
    items: Iterable[tuple[M3UEntry, str]], header_attrs: Mapping[str, str] | None = None
) -> str:
    """An M3U of the entries, each pointing at the URL paired with it.

    Duration, attributes (same order, re-quoted), title, ``#EXTGRP`` and KODIPROP /
    EXTVLCOPT lines are kept, except the ones carrying HTTP headers (KODIPROP
    ``*_headers``, EXTVLCOPT ``http-*``): the proxy sends those upstream itself.
    """
    out = ["#EXTM3U" + _render_attrs(header_attrs or {})]
    for entry, url in items:
        duration = _one_line(entry.duration).strip() or "-1"
        out.append(f"#EXTINF:{duration}{_render_attrs(entry.attrs)},{_one_line(entry.title)}")
        if entry.group:
            out.append(f"#EXTGRP:{_one_line(entry.group)}")
        out.extend(
            f"#EXTVLCOPT:{_one_line(key)}={_one_line(value)}"
            for key, value in entry.vlc_options.items()
            if not key.lower().startswith("http-")
        )
        out.extend(
            f"#KODIPROP:{_one_line(key)}={_one_line(value)}"
            for key, value in entry.kodi_props.items()
            if key.lower() not in _HEADER_PROPS
        )
        out.append(_one_line(url))
    return "\n".join(out) + "\n"
