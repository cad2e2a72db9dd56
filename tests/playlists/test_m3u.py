"""Tests for the sans-io M3U playlist parser and writer."""

from pathlib import Path

import pytest

from m3u_proxy.playlists.m3u import (
    M3UEntry,
    ParseResult,
    Skipped,
    entry_group,
    entry_headers,
    normalise_name,
    parse_m3u,
    render_m3u,
)

CORPUS = Path(__file__).parent.parent / "corpus" / "m3u"
CORPUS_FILES = sorted(path.name for path in CORPUS.glob("*.m3u"))


def corpus(name: str) -> str:
    """The file's exact text: BOM and CRLF line ends are kept for the parser to see."""
    return (CORPUS / name).read_bytes().decode("utf-8")


def parse_one(text: str) -> M3UEntry:
    result = parse_m3u(text)
    assert result.skipped == []
    assert len(result.entries) == 1
    return result.entries[0]


def by_title(result: ParseResult) -> dict[str, M3UEntry]:
    return {entry.title: entry for entry in result.entries}


class TestParse:
    def test_plain_corpus(self) -> None:
        """A clean playlist yields every channel with its attributes, URL and URL line."""
        result = parse_m3u(corpus("plain.m3u"))
        assert result.skipped == []
        assert result.header_attrs == {"url-tvg": "http://epg.example.com/guide.xml.gz"}
        assert [entry.title for entry in result.entries] == [
            "BBC One",
            "BBC Two",
            "France 2",
            "Das Erste",
            "Rai 1",
        ]
        first = result.entries[0]
        assert first.url == "http://streams.example.com/live/bbcone/index.m3u8"
        assert first.duration == "-1"
        assert first.attrs == {
            "tvg-id": "bbcone.uk",
            "tvg-name": "BBC One",
            "tvg-logo": "http://logos.example.com/bbcone.png",
            "group-title": "UK",
        }
        assert [entry.line_no for entry in result.entries] == [3, 5, 7, 9, 11]
        assert result.entries[3].url.startswith("https://")

    def test_attributes_keep_source_order(self) -> None:
        """Attributes come back in the order they were written, not sorted."""
        entry = parse_one('#EXTINF:-1 z="1" a="2" m="3",T\nhttp://h/x')
        assert list(entry.attrs) == ["z", "a", "m"]

    def test_xtream_corpus(self) -> None:
        """Xtream-Codes output keeps x-tvg-url, empty tvg-ids and live/movie/series URLs."""
        result = parse_m3u(corpus("xtream.m3u"))
        assert result.skipped == []
        assert result.header_attrs == {
            "x-tvg-url": "http://iptv.example.net:8080/xmltv.php?username=alice&password=s3cret"
        }
        entries = by_title(result)
        assert (
            entries["UK: Sky News"].url == "http://iptv.example.net:8080/live/alice/s3cret/1234.ts"
        )
        assert entries["UK: Local TV"].attrs["tvg-id"] == ""
        assert entries["UK: Local TV"].attrs["tvg-logo"] == ""
        movie = entries["The Big Film (2019)"]
        assert movie.url.endswith("/movie/alice/s3cret/55.mkv")
        assert entry_group(movie) == "VOD | Action"
        series = entries["Long Series S01 E01"]
        assert series.url.endswith("/series/alice/s3cret/9001.mp4")

    def test_kodi_corpus_options_belong_to_their_entry(self) -> None:
        """KODIPROP and EXTVLCOPT lines attach to the entry whose URL follows them."""
        entries = by_title(parse_m3u(corpus("kodi.m3u")))
        dash = entries["Dash One"]
        assert dash.kodi_props == {
            "inputstream": "inputstream.adaptive",
            "inputstream.adaptive.manifest_type": "mpd",
            "inputstream.adaptive.stream_headers": (
                "User-Agent=Kodi%2F21.0%20(Linux)&Referer=https%3A%2F%2Fportal.example.org%2F"
            ),
        }
        assert dash.vlc_options == {}
        referred = entries["Referred HLS"]
        assert referred.kodi_props == {}
        assert referred.vlc_options == {
            "http-user-agent": ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36"),
            "http-referrer": "https://player.example.org/",
            "http-origin": "https://player.example.org",
            "network-caching": "1000",
        }
        assert entries["Common Headers"].vlc_options == {}

    def test_catchup_corpus_keeps_templates_verbatim(self) -> None:
        """Catch-up attributes keep their {utc}/{lutc} placeholders and ampersands."""
        result = parse_m3u(corpus("catchup.m3u"))
        assert result.header_attrs == {"catchup": "default", "tvg-shift": "0"}
        news = by_title(result)["News 24"]
        assert news.attrs["catchup"] == "default"
        assert news.attrs["catchup-days"] == "7"
        assert news.attrs["catchup-source"] == (
            "http://archive.example.com/news24/index.m3u8?utc={utc}&lutc={lutc}"
        )
        assert by_title(result)["Film One"].attrs["catchup-source"] == (
            "?utc={utc}&duration={duration}"
        )

    def test_messy_corpus_entries(self) -> None:
        """No #EXTM3U, a BOM, CRLF, blank and comment lines still give the good entries."""
        text = corpus("messy.m3u")
        assert text.startswith("\ufeff")
        assert "\r\n" in text
        result = parse_m3u(text)
        assert result.header_attrs == {}
        assert [(entry.title, entry.line_no) for entry in result.entries] == [
            ('CNN, "International"', 5),
            ("Film Four", 8),
            ("No Attributes", 12),
            ("Grouped By EXTGRP", 18),
            ("Bare Channel.ts", 19),
            ("No Duration", 22),
        ]
        cnn = result.entries[0]
        assert cnn.attrs == {
            "tvg-id": "cnn.us",
            "tvg-name": "CNN, International",
            "group-title": "News",
        }
        assert cnn.vlc_options == {"http-user-agent": "VLC/3.0.18 LibVLC/3.0.18"}
        film = result.entries[1]
        assert film.attrs == {
            "tvg-id": "abc",
            "tvg-name": "Single Quoted",
            "group-title": "Films=Good, Cheap",
        }
        grouped = result.entries[3]
        assert grouped.duration == "0"
        assert grouped.group == "Music"
        assert entry_group(grouped) == "Music"
        assert all("\r" not in entry.url and "\r" not in entry.title for entry in result.entries)

    def test_messy_corpus_skipped_reasons_and_lines(self) -> None:
        """Each dropped line is reported with its 1-based line number, reason and text."""
        assert parse_m3u(corpus("messy.m3u")).skipped == [
            Skipped(13, "#EXTINF without a URL", '#EXTINF:-1 tvg-id="lost",Lost Channel'),
            Skipped(15, "URL is not http(s)", "rtmp://live.example.net/app/stream"),
            Skipped(20, "URL is not http(s)", "udp://@239.0.0.1:1234"),
            Skipped(23, "#EXTINF without a URL", "#EXTINF:-1,Trailing Without URL"),
        ]

    def test_title_keeps_commas_and_quotes(self) -> None:
        """Everything after the first comma outside quotes is the title, commas included."""
        entry = parse_one(
            '#EXTINF:-1 tvg-name="A, B" group-title="News",CNN, "International"\nhttp://h/cnn'
        )
        assert entry.title == 'CNN, "International"'
        assert entry.attrs == {"tvg-name": "A, B", "group-title": "News"}

    def test_equals_and_commas_inside_quoted_values(self) -> None:
        """A quoted value may contain '=' and ',' without ending the attribute list."""
        entry = parse_one(
            '#EXTINF:-1 catchup-source="http://x/?a=1,b=2" tvg-logo="http://l/?s=a,b",Name\n'
            "http://h/s"
        )
        assert entry.attrs == {
            "catchup-source": "http://x/?a=1,b=2",
            "tvg-logo": "http://l/?s=a,b",
        }
        assert entry.title == "Name"

    def test_unquoted_and_single_quoted_values(self) -> None:
        """Unquoted values end at a space or comma; single quotes work like double quotes."""
        entry = parse_one(
            "#EXTINF:-1 tvg-id=abc tvg-name='It, \"quoted\"' tvg-chno=7,Title\nhttp://h/s"
        )
        assert entry.attrs == {"tvg-id": "abc", "tvg-name": 'It, "quoted"', "tvg-chno": "7"}
        assert entry.title == "Title"

    def test_empty_quoted_values(self) -> None:
        """Empty quoted values are kept as empty strings in either quoting style."""
        entry = parse_one('#EXTINF:-1 tvg-id=x tvg-logo=\'\' tvg-name="" a="1",T\nhttp://h/s')
        assert entry.attrs == {"tvg-id": "x", "tvg-logo": "", "tvg-name": "", "a": "1"}
        assert entry.title == "T"

    def test_fast_and_general_attribute_readers_agree(self) -> None:
        """The all-double-quoted shape and a mixed-quote shape give the same values."""
        quoted = parse_one('#EXTINF:-1 a="1" b="x y",T\nhttp://h/s')
        mixed = parse_one("#EXTINF:-1 a=1 b='x y',T\nhttp://h/s")
        assert quoted.attrs == mixed.attrs == {"a": "1", "b": "x y"}
        assert quoted.title == mixed.title == "T"

    def test_extinf_without_attributes(self) -> None:
        """'#EXTINF:-1,Name' has a duration and a title and no attributes."""
        entry = parse_one("#EXTINF:-1,Name\nhttp://h/s")
        assert (entry.duration, entry.attrs, entry.title) == ("-1", {}, "Name")

    def test_extinf_without_duration(self) -> None:
        """An #EXTINF with no duration gets "-1" and still reads attributes and title."""
        entry = parse_one('#EXTINF:tvg-id="x" group-title="G",Name\nhttp://h/s')
        assert entry.duration == "-1"
        assert entry.attrs == {"tvg-id": "x", "group-title": "G"}
        assert entry.title == "Name"
        assert parse_one("#EXTINF:,Bare\nhttp://h/s").title == "Bare"

    def test_duration_is_kept_as_written(self) -> None:
        """The duration string is not normalised."""
        assert parse_one('#EXTINF:10.5 a="b",T\nhttp://h/s').duration == "10.5"
        assert parse_one("#EXTINF:0,T\nhttp://h/s").duration == "0"
        assert parse_one("#EXTINF:10.5 a='b',T\nhttp://h/s").duration == "10.5"

    def test_attribute_glued_to_duration(self) -> None:
        """A missing space after the duration does not turn the duration into a key."""
        fast = parse_one('#EXTINF:-1tvg-id="x",T\nhttp://h/s')
        general = parse_one("#EXTINF:-1tvg-id=x tvg-name='y',T\nhttp://h/s")
        assert (fast.duration, fast.attrs) == ("-1", {"tvg-id": "x"})
        assert (general.duration, general.attrs) == ("-1", {"tvg-id": "x", "tvg-name": "y"})

    def test_empty_title_falls_back_to_tvg_name(self) -> None:
        """An #EXTINF with nothing after the comma is titled by tvg-name."""
        assert parse_one('#EXTINF:-1 tvg-name="Named",\nhttp://h/s').title == "Named"

    def test_unterminated_quote_does_not_swallow_the_title(self) -> None:
        """A value missing its closing quote ends at the next comma."""
        entry = parse_one('#EXTINF:-1 tvg-id="x" tvg-name="Broken,Title\nhttp://h/s')
        assert entry.attrs == {"tvg-id": "x", "tvg-name": "Broken"}
        assert entry.title == "Title"

    def test_url_without_extinf_is_titled_by_last_path_segment(self) -> None:
        """A bare URL becomes an entry named after its decoded last path segment."""
        result = parse_m3u("#EXTM3U\nhttp://h/live/u/p/1234.ts?token=1\nhttp://h/a/My%20Chan/\n")
        assert [entry.title for entry in result.entries] == ["1234.ts", "My Chan"]
        assert [entry.line_no for entry in result.entries] == [2, 3]
        assert result.entries[0].attrs == {}
        assert parse_one("http://only.host.example").title == "only.host.example"
        assert parse_one("http://h.example?id=7#x").title == "h.example"
        assert parse_one("http://[not-ipv6/live/5.ts").title == "5.ts"

    def test_extinf_followed_by_extinf_skips_the_first(self) -> None:
        """An #EXTINF with no URL before the next #EXTINF is reported, and its options dropped."""
        result = parse_m3u(
            "#EXTM3U\n"
            "#EXTINF:-1,First\n"
            "#EXTVLCOPT:http-user-agent=First UA\n"
            "#EXTINF:-1,Second\n"
            "http://h/second\n"
        )
        assert result.skipped == [Skipped(2, "#EXTINF without a URL", "#EXTINF:-1,First")]
        assert [entry.title for entry in result.entries] == ["Second"]
        assert result.entries[0].vlc_options == {}

    def test_extinf_at_end_without_url(self) -> None:
        """A trailing #EXTINF is reported rather than lost silently."""
        result = parse_m3u("#EXTINF:-1,A\nhttp://h/a\n#EXTINF:-1,B\n")
        assert [entry.title for entry in result.entries] == ["A"]
        assert result.skipped == [Skipped(3, "#EXTINF without a URL", "#EXTINF:-1,B")]

    @pytest.mark.parametrize(
        "url",
        [
            "rtmp://live.example.com/app/key",
            "udp://@239.1.1.1:5000",
            "rtp://239.1.1.1:5000",
            "file:///srv/video.ts",
            "relative/path/stream.ts",
            "/absolute/path.ts",
            "http://",
            "mms://old.example.com/stream",
        ],
    )
    def test_non_http_urls_are_skipped(self, url: str) -> None:
        """Anything that is not an http(s) URL is skipped with a reason and its line."""
        result = parse_m3u(f"#EXTM3U\n#EXTINF:-1,Chan\n{url}\nhttp://h/next\n")
        assert result.skipped == [Skipped(3, "URL is not http(s)", url)]
        assert [(entry.title, entry.url) for entry in result.entries] == [("next", "http://h/next")]

    def test_scheme_check_ignores_case(self) -> None:
        """HTTP:// and HTTPS:// in capitals are still web URLs."""
        result = parse_m3u("HTTP://h/a\nHttps://h/b\n")
        assert [entry.url for entry in result.entries] == ["HTTP://h/a", "Https://h/b"]

    def test_options_between_extinf_and_url_belong_to_that_entry(self) -> None:
        """Options, #EXTGRP and comments between an #EXTINF and its URL stay with it."""
        result = parse_m3u(
            "#EXTINF:-1,One\n"
            "#EXTGRP:G1\n"
            "# comment\n"
            "\n"
            "#EXTVLCOPT:http-referrer=https://one.example/\n"
            "#KODIPROP:inputstream.adaptive.manifest_type=hls\n"
            "http://h/one\n"
            "#EXTINF:-1,Two\n"
            "http://h/two\n"
        )
        one, two = result.entries
        assert one.group == "G1"
        assert one.vlc_options == {"http-referrer": "https://one.example/"}
        assert one.kodi_props == {"inputstream.adaptive.manifest_type": "hls"}
        assert (two.group, two.vlc_options, two.kodi_props) == (None, {}, {})

    def test_malformed_option_lines_are_ignored(self) -> None:
        """Option lines without '=' or a key, and empty #EXTGRP, add nothing; values are trimmed."""
        entry = parse_one(
            "#EXTINF:-1,T\n#EXTVLCOPT:no-equals\n#KODIPROP:=orphan\n#EXTGRP:   \n"
            "#EXTVLCOPT: http-origin = https://o \nhttp://h/s"
        )
        assert (entry.vlc_options, entry.kodi_props, entry.group) == (
            {"http-origin": "https://o"},
            {},
            None,
        )
        assert parse_one("#EXTINF:-1,T\n#EXTGRP:  Music  \nhttp://h/s").group == "Music"

    def test_options_before_extinf_go_to_the_next_entry(self) -> None:
        """Players also accept options written above the #EXTINF; they join the next entry."""
        entry = parse_one("#EXTVLCOPT:http-user-agent=UA\n#EXTINF:-1,T\nhttp://h/s")
        assert entry.vlc_options == {"http-user-agent": "UA"}

    @pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
    def test_line_endings(self, newline: str) -> None:
        """LF, CRLF and bare CR line ends parse the same, with the same line numbers."""
        text = newline.join(["#EXTM3U", "", '#EXTINF:-1 a="1",T', "http://h/s", ""])
        entry = parse_one(text)
        assert (entry.title, entry.url, entry.line_no) == ("T", "http://h/s", 4)

    def test_bom_is_ignored(self) -> None:
        """A UTF-8 BOM before #EXTM3U does not hide the header."""
        result = parse_m3u('\ufeff#EXTM3U url-tvg="http://e/g.xml"\nhttp://h/s\n')
        assert result.header_attrs == {"url-tvg": "http://e/g.xml"}
        assert len(result.entries) == 1

    def test_header_attributes_merge_over_repeated_headers(self) -> None:
        """A second #EXTM3U line adds attributes without overriding the first one's."""
        result = parse_m3u('#EXTM3U a="1" tvg-shift=2\n#EXTM3U a="x" b="3"\n')
        assert result.header_attrs == {"a": "1", "tvg-shift": "2", "b": "3"}

    def test_lowercase_directives(self) -> None:
        """Directive names are matched case-insensitively."""
        entry = parse_one("#extinf:-1,T\n#extgrp:G\n#extvlcopt:http-origin=https://o\nhttp://h/s")
        assert entry.group == "G"
        assert entry.vlc_options == {"http-origin": "https://o"}

    def test_empty_and_comment_only_input(self) -> None:
        """Text with no entries parses to an empty result, not an error."""
        for text in ("", "\n\n", "#EXTM3U\n# nothing here\n"):
            assert parse_m3u(text) == ParseResult([], [], {})

    def test_long_hostile_lines_parse(self) -> None:
        """Long lines of stray quotes, '=', digits and spaces are read without failing."""
        text = (
            "#EXTINF:-1 " + 'a="1 ' * 20_000 + ",T\nhttp://h/1\n"
            "#EXTINF:-1 " + "a=" * 20_000 + "\nhttp://h/2\n"
            "#EXTINF:-1 " + '"' * 20_001 + ",U\nhttp://h/3\n"
            "#EXTINF:-" + "1" * 50_000 + "\nhttp://h/4\n"
            "#EXTINF:-1" + ' a="1"' * 20_000 + "\nhttp://h/5\n"
        )
        result = parse_m3u(text)
        assert [entry.url for entry in result.entries] == [f"http://h/{i}" for i in range(1, 6)]
        assert result.entries[2].title == "U"
        assert result.entries[3].duration == "-" + "1" * 50_000
        assert result.entries[4].attrs == {"a": "1"}
        assert normalise_name("[" * 20_000 + "(" * 20_000 + "BBC One") == "bbcone"

    def test_large_generated_playlist(self) -> None:
        """A 50,000-entry playlist parses into 50,000 entries in order."""
        lines = ['#EXTM3U x-tvg-url="http://epg.example.com/all.xml"']
        for number in range(50_000):
            lines.append(
                f'#EXTINF:-1 tvg-id="ch{number}" tvg-name="Channel {number}" '
                f'tvg-logo="http://logo.example.com/{number}.png" group-title="G{number % 40}",'
                f"Channel {number}"
            )
            lines.append(f"http://iptv.example.com:8080/live/u/p/{number}.ts")
        result = parse_m3u("\n".join(lines))
        assert len(result.entries) == 50_000
        assert result.skipped == []
        last = result.entries[-1]
        assert (last.title, last.attrs["group-title"], last.line_no) == (
            "Channel 49999",
            "G39",
            100_001,
        )


class TestEntryGroup:
    def test_group_title_wins(self) -> None:
        """group-title is the group even when #EXTGRP is also present."""
        entry = M3UEntry("T", "http://h/s", attrs={"group-title": "News"}, group="Other")
        assert entry_group(entry) == "News"

    def test_extgrp_when_group_title_missing_or_empty(self) -> None:
        """#EXTGRP is used when there is no usable group-title."""
        assert entry_group(M3UEntry("T", "http://h/s", group="Music")) == "Music"
        empty = M3UEntry("T", "http://h/s", attrs={"group-title": " "}, group="Music")
        assert entry_group(empty) == "Music"

    def test_no_group(self) -> None:
        """An entry with neither has no group."""
        assert entry_group(M3UEntry("T", "http://h/s")) is None


class TestEntryHeaders:
    def test_vlc_options(self) -> None:
        """EXTVLCOPT user agent, referrer and origin become UA, Referer and Origin."""
        entry = by_title(parse_m3u(corpus("kodi.m3u")))["Referred HLS"]
        assert entry_headers(entry) == (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36",
            {"Referer": "https://player.example.org/", "Origin": "https://player.example.org"},
        )

    def test_kodi_stream_headers_are_url_decoded(self) -> None:
        """inputstream.adaptive.stream_headers pairs are split on '&' and url-decoded."""
        entry = by_title(parse_m3u(corpus("kodi.m3u")))["Dash One"]
        assert entry_headers(entry) == (
            "Kodi/21.0 (Linux)",
            {"Referer": "https://portal.example.org/"},
        )

    def test_kodi_common_headers(self) -> None:
        """inputstream.adaptive.common_headers is read like stream_headers."""
        entry = by_title(parse_m3u(corpus("kodi.m3u")))["Common Headers"]
        assert entry_headers(entry) == ("Common Agent", {"X-Token": "abc=123"})

    def test_precedence(self) -> None:
        """stream_headers beats common_headers, and EXTVLCOPT beats both."""
        entry = M3UEntry(
            "T",
            "http://h/s",
            vlc_options={"http-referrer": "https://vlc/"},
            kodi_props={
                "inputstream.adaptive.stream_headers": "User-Agent=Stream&referer=https://s/",
                "inputstream.adaptive.common_headers": "User-Agent=Common&X-A=1&Referer=https://c/",
            },
        )
        assert entry_headers(entry) == ("Stream", {"X-A": "1", "Referer": "https://vlc/"})

    def test_no_headers(self) -> None:
        """An entry without header options asks for nothing."""
        entry = M3UEntry(
            "T", "http://h/s", vlc_options={"network-caching": "1000"}, kodi_props={"a": "b"}
        )
        assert entry_headers(entry) == (None, {})

    def test_values_with_cr_or_lf_are_dropped(self) -> None:
        """Header values that could split a request (CR, LF, encoded or not) are dropped."""
        entry = M3UEntry(
            "T",
            "http://h/s",
            vlc_options={"http-user-agent": "UA\r\nX-Evil: 1", "http-origin": "https://o"},
            kodi_props={
                "inputstream.adaptive.stream_headers": "Referer=https://r/%0D%0AX-Evil:%201&X-Ok=1"
            },
        )
        assert entry_headers(entry) == (None, {"X-Ok": "1", "Origin": "https://o"})

    def test_bad_names_and_framing_headers_are_dropped(self) -> None:
        """Names that are not HTTP tokens and Host/Content-Length/Connection are ignored."""
        entry = M3UEntry(
            "T",
            "http://h/s",
            kodi_props={
                "inputstream.adaptive.stream_headers": (
                    "Bad%20Name=1&Host=evil&Content-Length=5&Connection=close&X-Fine=2&=3&junk"
                )
            },
        )
        assert entry_headers(entry) == (None, {"X-Fine": "2"})


class TestNormaliseName:
    @pytest.mark.parametrize(
        "name",
        [
            "BBC One HD",
            "bbc one",
            "BBC  One (UK)",
            "BBC One FHD",
            "BBC One UHD 4K",
            "|UK| BBC One",
            "UK| BBC One",
            "UK | BBC One | SD",
            "BBC One [Backup]",
            "BBC-One",
            "BBC.One 1080p HEVC",
        ],
    )
    def test_decorations_are_dropped(self, name: str) -> None:
        """Quality, country and bracket decorations, punctuation and spaces do not count."""
        assert normalise_name(name) == "bbcone"

    def test_accents_and_case(self) -> None:
        """Accents and case are folded away."""
        assert normalise_name("TÉLÉ Québec") == normalise_name("tele quebec") == "telequebec"
        assert normalise_name("Straße") == "strasse"

    def test_distinct_channels_stay_distinct(self) -> None:
        """Timeshift and numbered variants are not merged with the main channel."""
        assert normalise_name("BBC One +1") != normalise_name("BBC One")
        assert normalise_name("Sky Sports 1") != normalise_name("Sky Sports 2")
        assert normalise_name("Channel 4") == "channel4"

    def test_only_decorations_still_gives_a_key(self) -> None:
        """A name made only of decoration words is not reduced to an empty key."""
        assert normalise_name("4K") == "4k"
        assert normalise_name("HD") != normalise_name("SD")

    def test_non_latin_names_survive(self) -> None:
        """Names in other scripts keep their letters."""
        # NFKD splits й into и plus a combining breve, which is stripped like any accent.
        assert normalise_name("Первый канал HD") == normalise_name("первый канал") == "первыиканал"

    def test_providers_match_by_tvg_id_then_name(self) -> None:
        """Across the two provider corpora, channels match by tvg-id or else by name."""
        a_entries = parse_m3u(corpus("provider_a.m3u")).entries
        b_entries = parse_m3u(corpus("provider_b.m3u")).entries
        b_ids = {e.attrs["tvg-id"]: e for e in b_entries if e.attrs.get("tvg-id")}
        b_names = {normalise_name(e.title): e for e in b_entries}
        matches: dict[str, str] = {}
        for entry in a_entries:
            tvg_id = entry.attrs.get("tvg-id", "")
            match = b_ids.get(tvg_id) if tvg_id else None
            match = match or b_names.get(normalise_name(entry.title))
            if match is not None:
                matches[entry.title] = match.title
        assert matches == {
            "ITV1": "ITV 1 FHD",
            "Channel 4": "Channel 4 [Backup]",
            "BBC One HD": "BBC One",
            "Sky News": "|UK| Sky News",
        }
        a_names = {normalise_name(e.title) for e in a_entries}
        assert a_names & set(b_names) == {"itv1", "channel4", "bbcone", "skynews"}


class TestRender:
    def test_header_and_line_ends(self) -> None:
        """Output starts with #EXTM3U and the header attributes and uses LF only."""
        entry = M3UEntry("T", "http://h/s")
        text = render_m3u([(entry, "http://proxy/1")], {"url-tvg": "http://e/g.xml"})
        assert text == '#EXTM3U url-tvg="http://e/g.xml"\n#EXTINF:-1,T\nhttp://proxy/1\n'
        assert render_m3u([]) == "#EXTM3U\n"

    @pytest.mark.parametrize("name", CORPUS_FILES)
    def test_round_trip_keeps_everything_but_urls(self, name: str) -> None:
        """parse → render → parse keeps titles, durations, attributes, groups and headers."""
        first = parse_m3u(corpus(name))
        new_urls = [f"http://proxy.local/s/{i}" for i in range(len(first.entries))]
        text = render_m3u(zip(first.entries, new_urls, strict=True), first.header_attrs)
        assert "\r" not in text
        again = parse_m3u(text)
        assert again.skipped == []
        assert again.header_attrs == first.header_attrs
        assert [e.url for e in again.entries] == new_urls

        def kept(entry: M3UEntry) -> tuple[str, str, dict[str, str], str | None, str | None]:
            return (entry.title, entry.duration, entry.attrs, entry.group, entry_group(entry))

        assert [kept(e) for e in again.entries] == [kept(e) for e in first.entries]

    def test_header_options_are_not_written(self) -> None:
        """HTTP header options are dropped; other KODIPROP and EXTVLCOPT lines stay."""
        dash, referred, _ = parse_m3u(corpus("kodi.m3u")).entries
        text = render_m3u([(dash, "http://p/1"), (referred, "http://p/2")])
        assert text == (
            "#EXTM3U\n"
            '#EXTINF:-1 tvg-id="dash.one" group-title="DASH",Dash One\n'
            "#KODIPROP:inputstream=inputstream.adaptive\n"
            "#KODIPROP:inputstream.adaptive.manifest_type=mpd\n"
            "http://p/1\n"
            '#EXTINF:-1 tvg-id="hls.ref" group-title="HLS",Referred HLS\n'
            "#EXTVLCOPT:network-caching=1000\n"
            "http://p/2\n"
        )

    def test_values_are_requoted(self) -> None:
        """Unquoted and single-quoted values are written double-quoted, in the same order."""
        entry = parse_one("#EXTINF:-1 tvg-id=abc tvg-name='A, B',Title, with comma\nhttp://h/s")
        text = render_m3u([(entry, "http://p/1")])
        assert '#EXTINF:-1 tvg-id="abc" tvg-name="A, B",Title, with comma\n' in text

    def test_value_with_double_quote_round_trips(self) -> None:
        """A value holding a double quote is written in single quotes so it reads back."""
        entry = M3UEntry("T", "http://h/s", attrs={"tvg-name": 'The "Best"', "x": "y"})
        again = parse_one(render_m3u([(entry, "http://p/1")]))
        assert again.attrs == {"tvg-name": 'The "Best"', "x": "y"}

    def test_extgrp_is_kept(self) -> None:
        """An #EXTGRP group is written back after the #EXTINF."""
        entry = M3UEntry("T", "http://h/s", group="Music")
        assert render_m3u([(entry, "http://p/1")]) == (
            "#EXTM3U\n#EXTINF:-1,T\n#EXTGRP:Music\nhttp://p/1\n"
        )

    def test_newlines_in_values_cannot_inject_lines(self) -> None:
        """CR/LF in hand-built titles, attributes or URLs never start a new line."""
        entry = M3UEntry(
            "T\n#EXTINF:-1,Evil",
            "http://h/s",
            attrs={"tvg-name": "a\r\nhttp://evil/"},
            group="G\nhttp://evil/2",
        )
        text = render_m3u([(entry, "http://p/1\nhttp://evil/3")], {"url-tvg": "x\ny"})
        assert len(text.splitlines()) == 4
        again = parse_m3u(text)
        assert [e.title for e in again.entries] == ["T #EXTINF:-1,Evil"]
